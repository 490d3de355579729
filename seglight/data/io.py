"""Reading image and mask files exactly, once each, with errors that name the file.

Images: seglight.data.images (re-exported here): orientation, 16-bit and float rules; multi-band
TIFF and .npy images: seglight.data.multiband.
Masks: PIL too, because only PIL returns a palette PNG's *indices* (what VOC stores); OpenCV
always expands the palette to colours. Label values are validated from one np.bincount over
the raw mask (O(pixels), no second decode); the counts also serve the dataset audit.
"""

from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from seglight.data.images import check_same_size, decode_image, read_image  # noqa: F401
from seglight.errors import DataError

INDEX_MODES = ("P", "L", "1")  # masks whose pixel values are label ids ("1": 1-bit, 0/1)
# .npy: multi-band arrays (seglight.data.multiband); .tif/.tiff may hold any number of bands.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".npy")


def read_mask_raw(path: str | Path, modes: tuple[str, ...] = INDEX_MODES) -> tuple[np.ndarray, str]:
    """(H, W) array of the values stored in the file, and the file's PIL mode.

    Index masks ("P" palette, "L" grey or "1" 1-bit) give (H, W) uint8 ids (1-bit: 0 and 1);
    with "RGB" in `modes`, colour masks give (H, W, 3) uint8 for a palette lookup (see
    `rgb_to_index`).
    """
    try:
        with Image.open(path) as im:
            im.load()
            mode, values = im.mode, np.asarray(im)
    except FileNotFoundError:
        raise DataError(f"{path}: mask file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: cannot decode mask (corrupt or truncated?): {e}") from None
    if mode not in modes:  # outside the try: DataError is a ValueError
        raise DataError(
            f"{path}: mask has mode {mode!r}, expected one of {modes} ({_mode_hint(mode)})"
        )
    if mode == "1":  # numpy gives bool
        values = values.astype(np.uint8)
    return values, mode


def _mode_hint(mode: str) -> str:
    if mode in ("RGB", "RGBA"):
        return (
            "a colour image: if colours code the classes, set data.mask_format: rgb and "
            "data.colors (one [R, G, B] per class); if it should hold class indices, was it "
            "converted from a palette PNG?"
        )
    if mode.startswith("I"):
        return "a 16/32-bit mask: save label ids as 8-bit PNG"
    return "not a label-index mask"


class LabelMap:
    """How a dataset's stored mask values become training ids.

    Args:
        mapping: stored value -> training id (0..num_classes-1 or ignore_index). Stored values
            not in the mapping are invalid: a mask containing one is an error.
        num_classes: number of training classes.
        ignore_index: training id of unlabelled pixels.
    """

    def __init__(self, mapping: Mapping[int, int], num_classes: int, ignore_index: int = 255):
        self.lut = np.full(256, ignore_index, np.uint8)  # stored value -> training id
        self.valid = np.zeros(256, bool)  # which stored values may appear
        for raw, train_id in mapping.items():
            if not (0 <= train_id < num_classes or train_id == ignore_index):
                raise ValueError(f"training id {train_id} for value {raw} is out of range")
            self.lut[raw] = train_id
            self.valid[raw] = True
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self._invalid_u8 = (~self.valid).astype(np.uint8)  # (256,) 1 where a value is invalid

    @classmethod
    def identity(cls, num_classes: int, ignore_index: int = 255) -> "LabelMap":
        """Stored values are the training ids (0..C-1) or ignore_index."""
        mapping = {i: i for i in range(num_classes)} | {ignore_index: ignore_index}
        return cls(mapping, num_classes, ignore_index)

    def counts(self, raw: np.ndarray) -> np.ndarray:
        """(256,) pixel count per stored value."""
        return np.bincount(raw.ravel(), minlength=256)

    def invalid_values(self, counts: np.ndarray) -> list[int]:
        return np.flatnonzero((counts > 0) & ~self.valid).tolist()

    def apply(self, raw: np.ndarray, path: str | Path) -> np.ndarray:
        """Training ids (H, W) uint8 for stored values (H, W) uint8; raises on invalid values.

        uint8 masks take OpenCV's table lookup, for the check and the mapping (one pass each,
        ~10x faster than np.bincount + numpy fancy indexing: benchmarks/data.py); the
        per-value counts are only taken to name the bad values in the error."""
        if raw.dtype == np.uint8 and raw.ndim == 2:
            raw = np.ascontiguousarray(raw)
            if not cv2.LUT(raw, self._invalid_u8).any():
                return cv2.LUT(raw, self.lut)
        bad = self.invalid_values(self.counts(raw))
        if bad:
            raise DataError(
                f"{path}: mask has values {bad[:20]} that are not labels of this dataset "
                f"(expected {self.describe()})"
            )
        return self.lut[raw]

    def describe(self) -> str:
        values = np.flatnonzero(self.valid).tolist()
        return f"values {_ranges(values)}"


def _ranges(values: list[int]) -> str:
    """[0, 1, 2, 3, 255] -> '0-3, 255'."""
    out, start = [], None
    for i, v in enumerate(values):
        if start is None:
            start = v
        if i + 1 == len(values) or values[i + 1] != v + 1:
            out.append(str(start) if start == v else f"{start}-{v}")
            start = None
    return ", ".join(out)


def read_mask_values(
    path: str | Path,
    palette: list[list[int]] | None = None,
    ignore_colour: list[int] | None = None,
    ignore_index: int = 255,
) -> np.ndarray:
    """(H, W) uint8 stored values of an index mask; with a `palette`, colour-coded ("RGB") masks
    are accepted too and give class ids (see `rgb_to_index`). Not yet checked by a LabelMap."""
    raw, _ = read_mask_raw(path, INDEX_MODES + (("RGB", "RGBA") if palette else ()))
    if raw.ndim == 3:
        raw = rgb_to_index(raw, palette, path, ignore_colour, ignore_index)
    return raw


def missing_classes(
    stored: np.ndarray, label_map: LabelMap, class_names: Sequence[str], where: str
) -> tuple[str, str] | None:
    """(kind, one line with the fix) when some class has no pixel in a split's masks; None when
    every class has pixels. `stored`: (256,) pixel counts of the stored values of all its masks.

    kind "only_ignore": the masks hold only 0 and ignore_index (binary masks saved as 0/255);
    kind "absent_class": any other class without a pixel.
    """
    ids = np.bincount(label_map.lut, weights=stored, minlength=256)  # (256,) per training id
    absent = [name for c, name in enumerate(class_names) if ids[c] == 0]
    if not absent:
        return None
    ignore, lut = label_map.ignore_index, label_map.lut
    values = np.flatnonzero(stored).tolist()
    if values == [0, ignore] and lut[0] == 0 and lut[ignore] == ignore:
        return "only_ignore", (
            f"{where}: all masks hold only 0 and {ignore}; {ignore} is data.ignore_index "
            f"(unlabelled), so {', '.join(absent)} never occurs. If {ignore} marks "
            f"{class_names[1]}, set data.mask_map: {{0: 0, {ignore}: 1}}"
        )
    found = _ranges(values) if values else "none"
    return "absent_class", (
        f"{where}: no pixel of class(es) {', '.join(absent)} in any mask (stored values: "
        f"{found}); check the masks, data.mask_map (stored value -> class index), or remove "
        f"the class from data.classes"
    )


def rgb_to_index(
    rgb: np.ndarray,
    palette: list[list[int]],
    path: str | Path,
    ignore_colour: list[int] | None = None,
    ignore_index: int = 255,
) -> np.ndarray:
    """(H, W, 3) colour-coded mask -> (H, W) uint8 class ids: class i has colour palette[i],
    `ignore_colour` becomes ignore_index. Any other colour is an error naming file and colours."""
    colours = [list(c) for c in palette] + ([list(ignore_colour)] if ignore_colour else [])
    ids = list(range(len(palette))) + ([ignore_index] if ignore_colour else [])
    rgb = rgb[..., :3].astype(np.int32)
    codes = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    keys = np.array([(r << 16) | (g << 8) | b for r, g, b in colours], np.int32)
    order = np.argsort(keys)
    pos = np.searchsorted(keys[order], codes).clip(0, len(keys) - 1)
    found = keys[order][pos] == codes
    if not found.all():
        bad = np.unique(rgb[~found].reshape(-1, 3), axis=0)[:10].tolist()
        raise DataError(f"{path}: mask has colours {bad} that are not in the class palette")
    return np.asarray(ids, np.uint8)[order[pos]]
