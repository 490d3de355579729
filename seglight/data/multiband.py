"""Images with any number of bands: multi-band TIFF / GeoTIFF and NumPy `.npy` files.

Which files. `.npy` files, and TIFFs with several samples per pixel that are grey bands
(photometric min-is-black/white, GDAL's default: 2 or more samples) or RGB plus extra samples
(4 or more): every stored sample is a band, one tagged alpha too (writers tag the 4th band of an
R, G, B, NIR image as alpha: tifffile's default, GDAL's with PHOTOMETRIC=RGB), so no band is
dropped silently. Every other file (PNG, JPEG, BMP, WebP, single-band and RGB TIFFs, CMYK)
keeps the RGB rules of seglight.data.images: grey as 3 equal channels, alpha dropped.

Layouts. TIFF: samples interleaved (Y, X, S) or planar (S, Y, X), as the file says (tifffile
decodes it); reduced-resolution pages (GeoTIFF overviews) and mask pages are skipped, a second
full-resolution page is refused; the TIFF Orientation tag is applied like any other TIFF's.
Compressions other than none, Deflate and LZMA (LZW, PackBits, JPEG, ZSTD, ...) are decoded
by the `imagecodecs` package (a dependency; an environment without it gets a one-line error).
`.npy`: (H, W) is one band; for (A, B, C) the band axis is the first or the last, whichever is
strictly shorter than both other axes: (4, 32, 32) is (C, H, W), (32, 32, 4) is (H, W, C). When
neither is ((32, 32, 32), (4, 16, 4), (16, 3, 16)) the file is refused: images must be larger than
their band count on both sides. Other ranks are refused.

Values: by the stored type, the rule of RGB images: uint8 kept (Normalize divides by 255),
other integers (8/12/16-bit data, int32 within 0..65535) / 65535, floats as is in [0, 1]; NaN,
infinite or out-of-range values are refused, never clipped. 12-bit data in 16-bit storage
spans [0, 4095 / 65535]: per-band data.mean / data.std in these [0, 1] units
(seglight.data.audit.channel_stats measures them on the training images) normalize any such
range exactly.

Bands. `bands` (0-based, e.g. [3, 2, 1, 7]) selects and orders the channels after reading:
of the stored bands of a file above, of R, G, B of any other image. An index beyond a file's
band count is a one-line error naming the file; the number of indices is the data's channels.
"""

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from seglight.errors import DataError

NPY_MAGIC = b"\x93NUMPY"
TIFF_MAGIC = (b"II*\0", b"MM\0*")
_ONE_PAGE = (
    "write one page holding every band, e.g. tifffile.imwrite(path, array_hwc, "
    "photometric='minisblack', planarconfig='contig')"
)


def is_multiband(data: bytes, path) -> bool:
    """Whether the file's bytes are read here (see the module docstring) rather than as RGB."""
    if data[:6] == NPY_MAGIC:
        return True
    return data[:4] in TIFF_MAGIC and _tiff_channels(io.BytesIO(data)) != 0


def decode_multiband(data: bytes, path) -> tuple[np.ndarray, int, tuple[int, int]]:
    """(pixels (H, W, C) as stored: uint8, or float32 in [0, 1]; orientation, not applied;
    stored (H, W))."""
    if data[:6] == NPY_MAGIC:
        array, orientation = _npy_array(data, path), 1
    else:
        array, orientation = _tiff_array(data, path)
    pixels = to_unit_range(array, path)
    return pixels, orientation, pixels.shape[:2]


def select_bands(pixels: np.ndarray, bands: Sequence[int] | None, path) -> np.ndarray:
    """pixels[..., bands] (H, W, len(bands)), or `pixels` when `bands` is None."""
    if bands is None:
        return pixels
    check_bands(bands, pixels.shape[2], path)
    return np.ascontiguousarray(pixels[..., list(bands)])


def check_bands(bands: Sequence[int], count: int, path) -> None:
    bad = [b for b in bands if not 0 <= b < count]
    if bad:
        raise DataError(
            f"{path}: data.bands {list(bands)} asks for band {bad[0]}, but the image has {count} "
            f"band{'s' * (count != 1)} (indices 0-{count - 1})"
        )


def image_channels(path: str | Path, bands: Sequence[int] | None = None) -> int:
    """Channels that reading `path` with `bands` gives, from the file's header only: its band
    count for the files read here, 3 (RGB) for any other image. Checks `bands` against it."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
        if head[:6] == NPY_MAGIC:
            count = _npy_layout(np.load(path, mmap_mode="r", allow_pickle=False).shape, path)[1]
        elif head[:4] in TIFF_MAGIC:
            count = _tiff_channels(Path(path)) or 3
        else:
            count = 3
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read image file: {e.strerror or e}") from None
    except ValueError as e:  # a .npy header numpy cannot read (DataError is ours: passed on)
        if isinstance(e, DataError):
            raise
        raise DataError(f"{path}: cannot read .npy image: {e}") from None
    if bands is None:
        return count
    check_bands(bands, count, path)
    return len(bands)


def _tiff_channels(source) -> int:
    """Bands of a TIFF read here, else 0 (read as RGB, or an unreadable header)."""
    try:
        samples, photometric = _tiff_header(source)
    except Exception:  # noqa: BLE001 - unreadable header: reading the image says why
        return 0
    grey_bands = samples > 1 and photometric in (0, 1)  # min-is-white, min-is-black
    return samples if grey_bands or (samples > 3 and photometric == 2) else 0  # 2: RGB


def _tiff_header(source) -> tuple[int, int]:
    """(samples per pixel, photometric) of a TIFF's first page."""
    import tifffile

    with tifffile.TiffFile(source) as tif:
        page = tif.pages.first
        return int(page.samplesperpixel), int(page.photometric)


def _tiff_array(data: bytes, path) -> tuple[np.ndarray, int]:
    """(pixels (H, W, S) as stored, before orientation; the Orientation tag, 1-8)."""
    import tifffile

    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        pages = [p for p in tif.pages if not (p.is_reduced or p.is_mask)]
        if len(pages) > 1:
            raise DataError(
                f"{path}: has {len(pages)} full-resolution pages; seglight reads one image per "
                f"file: {_ONE_PAGE}"
            )
        page = tif.pages.first
        try:
            array = page.asarray()
        except (ValueError, KeyError, ImportError) as e:  # ImportError: e.g. ZSTD's module
            if not isinstance(e, ImportError) and "imagecodecs" not in str(e):
                raise
            raise DataError(
                f"{path}: compressed with {page.compression.name}, which tifffile decodes with "
                f"the imagecodecs package: pip install imagecodecs"
            ) from None
        orientation = page.tags.valueof(274, 1)
    axes = page.axes
    if axes == "SYX":
        array = np.moveaxis(array, 0, -1)
    elif axes not in ("YXS", "YX"):
        raise DataError(f"{path}: TIFF image with axes {axes!r}; seglight reads (Y, X, bands)")
    if array.ndim == 2:
        array = array[..., None]
    return array, int(orientation) if orientation in range(1, 9) else 1


def _npy_array(data: bytes, path) -> np.ndarray:
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as e:
        raise DataError(f"{path}: cannot read .npy image: {e}") from None
    layout, _ = _npy_layout(array.shape, path)
    if layout == "chw":
        array = np.moveaxis(array, 0, -1)
    return array if array.ndim == 3 else array[..., None]


def _npy_layout(shape: tuple[int, ...], path) -> tuple[str, int]:
    """("hw" | "hwc" | "chw", band count) of a .npy image's shape (module docstring rule)."""
    if len(shape) == 2:
        return "hw", 1
    if len(shape) == 3:
        a, b, c = shape
        if c < min(a, b):
            return "hwc", c
        if a < min(b, c):
            return "chw", a
        raise DataError(
            f"{path}: .npy image of shape {tuple(shape)} is ambiguous: seglight takes the band "
            f"axis to be the first or last axis, whichever is strictly shorter than the other "
            f"two; save it as (H, W, C) with C smaller than H and W"
        )
    raise DataError(
        f"{path}: .npy image of shape {tuple(shape)}; expected (H, W), (H, W, C) or (C, H, W)"
    )


def to_unit_range(array: np.ndarray, path) -> np.ndarray:
    """(H, W, C) pixels of any type -> uint8 (kept), or float32 in [0, 1] (module rules)."""
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if array.dtype == np.bool_:
        return np.ascontiguousarray(array.astype(np.uint8) * 255)
    if array.dtype.kind in "ui":
        lo, hi = int(array.min()), int(array.max())
        if lo < 0 or hi > 65535:
            raise DataError(
                f"{path}: integer pixel values span {lo}..{hi}, beyond 16 bits; seglight scales "
                f"integer images by their 8- or 16-bit range: save as 16-bit, or as float in "
                f"[0, 1]"
            )
        return np.ascontiguousarray(array.astype(np.float32) / np.float32(65535))
    if array.dtype.kind == "f":
        out = np.ascontiguousarray(array.astype(np.float32))
        if not np.isfinite(out).all():
            raise DataError(f"{path}: float image has NaN or infinite values; fill them first")
        lo, hi = float(out.min()), float(out.max())
        if lo < 0 or hi > 1:
            raise DataError(
                f"{path}: float pixel values span {lo:g}..{hi:g}; seglight reads float images "
                f"as already scaled to [0, 1]: rescale them (and set mean/std to match), or "
                f"save as 16-bit integers"
            )
        return out
    raise DataError(f"{path}: pixel type {array.dtype} cannot be read as an image")
