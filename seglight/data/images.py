"""Reading image files as people see them, at the precision they were stored.

Orientation. Phones store a portrait photo as landscape pixels plus an EXIF Orientation tag
(0x0112) telling viewers how to turn it, and annotation tools show the photo turned: labelme
applies the tag on load (wkentaro/labelme PR #305), CVAT too (cvat-ai/cvat PR #4529, PR #7162:
ImageOps.exif_transpose), Label Studio shows photos through the browser, which applies it by
default (CSS image-orientation: from-image, every browser since 2020; label-studio issue #6608:
the photo is shown turned), as do RectLabel and Dataloop (annotations are "relative to the
image as it is presented on the screen"); Roboflow's default "Auto-Orient" bakes it into the
pixels. Masks drawn there are in the displayed frame, so images are read with the tag applied
(what PIL.ImageOps.exif_transpose and torchvision's decode_image(apply_exif_orientation=True) do);
predicted masks then line up with the photo as viewers show it. The exceptions: Labelbox strips
the tag on upload and old labelImg / coco-annotator ignored it, so their annotations match the
stored pixels: read those with `exif_orientation=False`. Masks are never turned: a label PNG's
pixel grid *is* the annotation, written by the tool in the frame it was drawn in, with no
orientation of its own. `check_same_size` says which frame a mismatched mask matches; a mask
drawn on the stored pixels of a photo tagged 2, 3 or 4 (mirror, 180 deg) or of a square photo
has the right size and cannot be told apart.

Values. Pixels become floats in [0, 1] by the range of their stored type (the convention of
torchvision's to_dtype(scale=True), albumentations' ToFloat and skimage's img_as_float):
    8-bit (also 1-bit, palette, grey): x / 255, kept uint8 until Normalize (speed)
    16-bit integer (and wider integer files whose values fit in 16 bits): x / 65535
    float (32/64-bit TIFF): taken as is; it must lie in [0, 1], else an error (never clipped)
then Normalize: (x - mean) / std. An 8-bit value v and the same image in 16 bits (v * 257)
give the same network input. The scale follows the file, not its content, so a deployer can
reproduce it from the file alone: 12-bit data in a 16-bit file spans [0, 4095 / 65535]; set
`mean`/`std` to the data's own statistics (in these [0, 1] units) and any such range is
absorbed exactly. Grey images become 3 equal channels; alpha is dropped.

Multi-band images (TIFF / GeoTIFF with 2 or more than 3 bands, `.npy` arrays) keep every band,
with the same value rules: seglight.data.multiband. `bands` selects and orders channels of any
image after reading (0-based: [2, 1, 0] turns RGB to BGR).

Refused with one line: CMYK and other colour spaces without a faithful RGB conversion,
multi-page or animated files, more than 4 channels (PNG, JPEG, ...), integers below 0 or above
65535, floats outside [0, 1] or not finite. Decoders: PIL (it raises on truncated files);
16-bit colour PNG/TIFF, which PIL reduces to 8 bits, and TIFFs PIL cannot open (float RGB) go
through OpenCV (albumentations' own dependency), decoded from the same bytes. So do complete
RGB and grey JPEGs, once PIL has read their header: the same libjpeg-turbo pixels, faster.
"""

import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, TiffImagePlugin, UnidentifiedImageError

from seglight.data.multiband import decode_multiband, is_multiband, select_bands, to_unit_range
from seglight.errors import DataError

ORIENTATION_TAG = 0x0112
SCALING_RULE = (
    "8-bit pixels / 255, 16-bit / 65535, float as is (in [0, 1]); grey as 3 equal channels; "
    "multi-band TIFF / .npy: every band (or data.bands), by the same rule"
)
_JPEG_END = b"\xff\xd9"  # EOI, the marker every complete JPEG ends with
_EIGHT_BIT_MODES = ("1", "L", "P", "LA", "La", "PA", "RGB", "RGBA", "RGBa", "RGBX", "YCbCr")
_ORIENT = {  # EXIF orientation -> how the stored (H, W, ...) array is turned for display
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}
_TURN = {  # for messages: what a viewer does to the stored pixels, and PIL's way to do it
    2: ("mirrored left-right", "FLIP_LEFT_RIGHT"),
    3: ("turned 180°", "ROTATE_180"),
    4: ("mirrored top-bottom", "FLIP_TOP_BOTTOM"),
    5: ("mirrored and turned 90°", "TRANSPOSE"),
    6: ("turned 90° clockwise", "ROTATE_270"),
    7: ("mirrored and turned 90°", "TRANSVERSE"),
    8: ("turned 90° counter-clockwise", "ROTATE_90"),
}


@dataclass(frozen=True)
class DecodedImage:
    """An image file's pixels and how they were oriented.

    pixels: (H, W, C) uint8 (8-bit files) or float32 in [0, 1] (16-bit and float files); C = 3
        (RGB) but for multi-band files (seglight.data.multiband) or a `bands` selection.
    orientation: the file's EXIF orientation, 1-8 (1: none or no tag).
    oriented: whether `orientation` was applied to `pixels`.
    stored_size: (H, W) of the pixels as stored in the file, before any orientation.
    """

    pixels: np.ndarray
    orientation: int
    oriented: bool
    stored_size: tuple[int, int]

    @property
    def displayed_size(self) -> tuple[int, int]:
        """(H, W) of the photo as viewers show it (the tag applied)."""
        h, w = self.stored_size
        return (w, h) if self.orientation >= 5 else (h, w)


def read_image(
    path: str | Path, exif_orientation: bool = True, bands: Sequence[int] | None = None
) -> np.ndarray:
    """(H, W, 3) RGB pixels (multi-band files: (H, W, bands); `bands`: (H, W, len(bands))):
    uint8 for 8-bit files, float32 in [0, 1] for 16-bit and float files; as displayed (EXIF
    orientation applied) unless `exif_orientation` is False."""
    return decode_image(path, exif_orientation, bands).pixels


def decode_image(
    path: str | Path, exif_orientation: bool = True, bands: Sequence[int] | None = None
) -> DecodedImage:
    """Decode one image file (read once) into RGB (or multi-band) pixels and its orientation,
    then keep `bands` (0-based channel indices) if given; see the module docstring for the
    rules. Raises DataError naming the file for anything it cannot read."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read image file: {e.strerror or e}") from None
    return decode_image_bytes(data, path, exif_orientation, bands)


def decode_image_bytes(
    data: bytes, path: str | Path, exif_orientation: bool = True, bands: Sequence[int] | None = None
) -> DecodedImage:
    """decode_image of a file's bytes already read (e.g. streamed); `path` is the file's name,
    for its suffix and the errors."""
    try:
        if is_multiband(data, path):
            pixels, orientation, stored = decode_multiband(data, path)
        else:
            pixels, orientation, stored = _decode(data, path)
    except DataError:
        raise
    except UnidentifiedImageError:  # its message names the in-memory buffer, not the file
        raise DataError(f"{path}: cannot decode image: not in a format that can be read (PNG, "
                        f"JPEG, TIFF, BMP, WebP, ...); corrupt, or another kind of file?"
                        ) from None  # fmt: skip
    except Image.DecompressionBombError as e:
        raise DataError(f"{path}: {e}; raise PIL.Image.MAX_IMAGE_PIXELS if you trust it") from None
    except (OSError, SyntaxError, ValueError, TypeError, KeyError, cv2.error) as e:
        raise DataError(f"{path}: cannot decode image (corrupt or truncated?): {e}") from None
    if exif_orientation and orientation != 1:
        pixels = orient(pixels, orientation)
    pixels = select_bands(pixels, bands, path)
    return DecodedImage(pixels, orientation, exif_orientation, stored)


def _decode(data: bytes, path) -> tuple[np.ndarray, int, tuple[int, int]]:
    """(pixels as stored, EXIF orientation, stored (H, W))."""
    try:
        im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        if data[:4] not in (b"II*\0", b"MM\0*"):
            raise
        pixels, orientation = _tiff_pixels(data, path)  # e.g. float RGB, which PIL cannot open
        return pixels, orientation, pixels.shape[:2]
    with im:
        bits = _stored_bits(im)  # before getexif: for a PNG it decodes the pixels (8-bit)
        orientation = _orientation(im.getexif().get(ORIENTATION_TAG))
        return _pil_pixels(im, data, path, bits), orientation, (im.height, im.width)


def orient(array: np.ndarray, orientation: int) -> np.ndarray:
    """`array` (H, W, ...) as stored, turned as EXIF `orientation` says (PIL's exif_transpose)."""
    return np.ascontiguousarray(_ORIENT[orientation](array))


def _orientation(value) -> int:
    """EXIF orientation 1-8; anything else (absent, 0, garbage) is 1, as for PIL and browsers."""
    try:
        value = int(value)
    except (TypeError, ValueError):
        return 1
    return value if value in _ORIENT else 1


def _pil_pixels(im: Image.Image, data: bytes, path, bits: int) -> np.ndarray:
    frames = getattr(im, "n_frames", 1)
    if frames > 1 and im.format != "MPO":  # MPO: a phone JPEG with extra views; frame 0 is it
        raise DataError(
            f"{path}: has {frames} frames (pages or animation); seglight reads one image per "
            f"file: save the frame to use as its own file"
        )
    mode = im.mode
    if mode in _EIGHT_BIT_MODES:
        if bits > 8:  # PIL would keep only the high byte of 16-bit colour
            if im.format == "PNG":  # OpenCV may accept a damaged file: PIL checks its chunks
                Image.open(io.BytesIO(data)).verify()
            return _cv2_pixels(data, path)
        if im.format == "JPEG" and mode in ("RGB", "L") and data.endswith(_JPEG_END):
            pixels = _jpeg_rgb(data)
            if pixels is not None:
                return pixels
        return np.asarray(im if mode == "RGB" else im.convert("RGB"))
    if mode.startswith("I") or mode == "F":  # 16/32-bit integer or 32-bit float grey
        return _to_rgb(np.asarray(im), path)
    if mode == "CMYK":
        raise DataError(
            f"{path}: CMYK image (print colours): its RGB colours need its colour profile; "
            f"convert it to RGB (e.g. `magick IN -colorspace sRGB OUT.png`)"
        )
    raise DataError(f"{path}: image mode {mode!r} cannot be read as RGB; save it as RGB or grey")


def _jpeg_rgb(data: bytes) -> np.ndarray | None:
    """(H, W, 3) uint8 RGB of a whole JPEG as stored (no orientation: that is ours), straight
    into RGB order: OpenCV's libjpeg-turbo, the same pixels as PIL's (tests/data/test_images.py)
    without PIL's unpacking copy, ~0.3 ms less per VOC photo (benchmarks/data.py). Only for files
    that end with the end-of-image marker: on a truncated one OpenCV warns and fills the rest
    grey, where PIL raises. None if OpenCV cannot decode it (then PIL says why)."""
    flags = getattr(cv2, "IMREAD_COLOR_RGB", None)  # OpenCV >= 4.10
    if flags is None:
        return None
    return cv2.imdecode(np.frombuffer(data, np.uint8), flags | cv2.IMREAD_IGNORE_ORIENTATION)


def _stored_bits(im: Image.Image) -> int:
    """Bits per sample in the file of an image PIL opened in an 8-bit mode."""
    if im.format == "TIFF":
        bits = im.tag_v2.get(258, 8)
        return max(bits) if isinstance(bits, tuple) else int(bits)
    if im.format == "PNG" and im.tile and ";16" in str(im.tile[0].args):
        return 16
    return 8


def _cv2_pixels(data: bytes, path) -> np.ndarray:
    """Full-precision pixels via OpenCV (BGR order, no orientation applied: that is ours)."""
    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise DataError(f"{path}: cannot decode image (corrupt or truncated?)")
    return _to_rgb(array, path, bgr=True)


def _tiff_pixels(data: bytes, path) -> tuple[np.ndarray, int]:
    """A TIFF PIL cannot open: pixels through OpenCV, pages and orientation from its first
    directory (read with PIL's TIFF tag parser)."""
    pixels = _cv2_pixels(data, path)
    fp = io.BytesIO(data)
    ifd = TiffImagePlugin.ImageFileDirectory_v2(fp.read(8))
    fp.seek(ifd.next)
    with warnings.catch_warnings():  # PIL warns of each tag it cannot read, then skips it
        warnings.simplefilter("ignore")
        ifd.load(fp)
    if 0 < ifd.next < len(data):
        raise DataError(
            f"{path}: has more than one page; seglight reads one image per file: save the page "
            f"to use as its own file"
        )
    return pixels, _orientation(ifd.get(274))


def _to_rgb(array: np.ndarray, path, bgr: bool = False) -> np.ndarray:
    """(H, W[, C]) pixels of any type -> (H, W, 3) uint8, or float32 in [0, 1] (module rules)."""
    if array.ndim == 2:
        array = array[..., None]
    channels = array.shape[2]
    if channels > 4:
        raise DataError(
            f"{path}: has {channels} channels; seglight reads RGB images (1 to 4 channels, alpha "
            f"dropped): save the 3 bands to use as an RGB image"
        )
    if channels >= 3:
        array = array[..., 2::-1] if bgr else array[..., :3]  # alpha dropped
    else:
        array = array[..., :1]  # grey (+ alpha)
    out = to_unit_range(array, path)
    if out.shape[2] == 1:
        out = np.repeat(out, 3, axis=2)
    return np.ascontiguousarray(out)


def check_same_size(
    image: "DecodedImage | np.ndarray", mask: np.ndarray, image_path, mask_path
) -> None:
    """DataError when the image (a DecodedImage, or its pixels) and mask (H, W) differ in size;
    the message says when the mask matches the image's stored or displayed frame instead."""
    pixels = image.pixels if isinstance(image, DecodedImage) else image
    if pixels.shape[:2] == mask.shape[:2]:
        return
    if not isinstance(image, DecodedImage):  # the error path only: re-read the header
        image = _header(image_path, pixels)
    why = _why_sizes_differ(image, pixels.shape[:2], mask.shape[:2]) if image else ""
    raise DataError(
        f"image and mask sizes differ: {image_path} is {_wxh(pixels)}, {mask_path} is "
        f"{_wxh(mask)} (width x height){why}"
    )


def _wxh(array: np.ndarray) -> str:
    return f"{array.shape[1]}x{array.shape[0]}"


def _header(path, pixels: np.ndarray) -> DecodedImage | None:
    """Orientation and stored size of an image file read earlier into `pixels`."""
    try:
        with Image.open(path) as im:
            orientation = _orientation(im.getexif().get(ORIENTATION_TAG))
            stored = (im.height, im.width)
    except Exception:  # noqa: BLE001 - only refines a message; the size error stands anyway
        return None
    oriented = orientation >= 5 and pixels.shape[:2] == stored[::-1]
    return DecodedImage(pixels, orientation, oriented, stored)


def _why_sizes_differ(image: DecodedImage, read: tuple, mask: tuple) -> str:
    o = image.orientation
    if o >= 5 and image.oriented and mask == image.stored_size:
        turn, method = _TURN[o]
        return (
            f": the mask matches the image's pixels as stored, not the photo as displayed (its "
            f"EXIF orientation {o}: {turn}), which is how annotation tools show it and how "
            f"seglight reads it. Turn the mask the same way (PIL: "
            f"mask.transpose(Image.Transpose.{method})) or redraw it on the displayed photo; "
            f"if all masks were drawn on the stored pixels (e.g. Labelbox), set "
            f"exif_orientation: false"
        )
    if o >= 5 and not image.oriented and mask == image.displayed_size:
        return (
            f": the mask matches the photo as displayed (EXIF orientation {o}: {_TURN[o][0]}), "
            f"but images are read as stored (exif_orientation: false): set exif_orientation: "
            f"true"
        )
    if mask == read[::-1]:
        return (
            ": the mask is the image turned by 90° (the image has no EXIF rotation): was one "
            "of them rotated by another program? Turn the mask to match the image"
        )
    return ""
