"""Multi-label masks of a folder dataset (data.task: multilabel), in either layout, auto-detected:

a. one binary mask per label: <mask_dir>/<label>/<stem><mask_suffix>.png (.bmp, .tif, .tiff),
   one sub-folder per name in data.classes, every image with a mask in every folder;
b. one multi-channel file per image: <mask_dir>/<stem><mask_suffix>.tif|.tiff|.npy holding
   (H, W, L) or (L, H, W), L = len(data.classes); when both fit (L equals H or W) the image's
   size decides, else channels-last.

Stored values go through data.mask_map (a LabelMap onto 0/1): 0 = absent, 1 = present,
ignore_index = unlabelled (0/255 files: mask_map {0: 0, 255: 1}). Any other value, a missing
file, folder or a size that differs from the image's is one line naming the file.
"""

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from seglight.data.base import default_num_workers
from seglight.data.dataset import Sample
from seglight.data.folder_labels import BandFileDataset
from seglight.data.images import check_same_size
from seglight.data.io import LabelMap, read_mask_raw
from seglight.errors import DataError, did_you_mean

LABEL_EXTENSIONS = (".png", ".bmp", ".tif", ".tiff")  # layout a: one 8-bit grey file per label
STACK_EXTENSIONS = (".tif", ".tiff", ".npy")  # layout b: one (H, W, L) / (L, H, W) file
MaskFiles = Path | tuple[Path, ...]  # layout b: the image's file; layout a: one per label


def multilabel_pairs(
    images: dict[str, Path], image_dir: Path, mask_dir: Path, labels: Sequence[str], suffix: str
) -> dict[str, tuple[Path, MaskFiles]]:
    """stem -> (image, mask files) for either layout (module docstring), found from what
    `mask_dir` holds: sub-folders (a) or multi-channel files (b); both, or neither, is an error."""
    same = image_dir.resolve() == mask_dir.resolve()
    subdirs = sorted(p for p in mask_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    # Beside the images (same folder), only files ending with the suffix are masks.
    loose = [p for p in sorted(mask_dir.iterdir()) if p.is_file()
             and p.suffix.lower() in LABEL_EXTENSIONS + STACK_EXTENSIONS
             and not (same and not p.stem.endswith(suffix))]  # fmt: skip
    layouts = (f"one folder per label ({mask_dir}/<label>/<name>{suffix}.png) or one "
               f"multi-channel file per image ({mask_dir}/<name>{suffix}.tif or .npy)")  # fmt: skip
    if subdirs and loose:
        raise DataError(
            f"{mask_dir}: holds both sub-folders {[p.name for p in subdirs[:3]]} and mask files "
            f"{[p.name for p in loose[:3]]}; data.task: multilabel reads {layouts}, not both"
        )
    if subdirs:
        return _per_label_pairs(images, image_dir, mask_dir, subdirs, labels, suffix)
    flat = [p for p in loose if p.suffix.lower() not in STACK_EXTENSIONS]
    if flat or not loose:
        found = f"{len(flat)} single-channel files, e.g. {flat[0].name}" if flat else "no masks"
        raise DataError(
            f"{mask_dir}: {found}; data.task: multilabel reads {layouts} (one index mask per "
            f"image is data.task: multiclass)"
        )
    stacks = _by_stem(mask_dir, STACK_EXTENSIONS, suffix, loose)
    expected = f"{mask_dir}/<name>{suffix}.tif (or .tiff, .npy)"
    return _matched(images, image_dir, stacks, expected)


def _per_label_pairs(images, image_dir, mask_dir, subdirs, labels, suffix):
    """Layout a: every label a folder, every folder a label, every image a file in each."""
    names = [p.name for p in subdirs]
    extra = [n for n in names if n not in labels]
    missing = [n for n in labels if n not in names]
    if extra:
        raise DataError(
            f"{mask_dir / extra[0]}: a mask sub-folder that is not a label of data.classes "
            f"{list(labels)}{did_you_mean(extra[0], missing)}: rename it, add the label or move "
            f"the folder out"
        )
    if missing:
        raise DataError(
            f"{mask_dir / missing[0]}: label folder not found (data.classes: {list(labels)}): "
            f"multilabel masks are {mask_dir}/<label>/<name>{suffix}.png, one folder per label"
        )
    per_label = [_by_stem(mask_dir / name, LABEL_EXTENSIONS, suffix) for name in labels]
    absent = [mask_dir / name / f"{stem}{suffix}.png" for stem in sorted(images)
              for name, found in zip(labels, per_label, strict=True)
              if stem not in found]  # fmt: skip
    if absent:
        raise DataError(
            f"{len(absent)} label masks missing, e.g. {[str(p) for p in absent[:3]]}: every "
            f"image {image_dir}/<name>.jpg needs {mask_dir}/<label>/<name>{suffix}.png (or "
            f".tif, .bmp) in every label folder"
        )
    pairs = {s: (images[s], tuple(found[s] for found in per_label)) for s in images}
    lonely = [p for found in per_label for s, p in found.items() if s not in images]
    _no_image(lonely, image_dir)
    return pairs


def _matched(images, image_dir, masks, expected) -> dict[str, tuple[Path, Path]]:
    absent = sorted(set(images) - set(masks))
    if absent:
        raise DataError(
            f"{len(absent)} images have no mask, e.g. {[str(images[s]) for s in absent[:3]]}: "
            f"expected {expected}"
        )
    _no_image([masks[s] for s in sorted(set(masks) - set(images))], image_dir)
    return {s: (images[s], masks[s]) for s in images}


def _no_image(lonely: list[Path], image_dir: Path) -> None:
    if lonely:
        shown = [str(p) for p in lonely[:3]]
        raise DataError(f"{len(lonely)} masks have no image in {image_dir}, e.g. {shown}: "
                        f"remove them or add the images")  # fmt: skip


def _by_stem(folder: Path, extensions, suffix: str, files=None) -> dict[str, Path]:
    """name -> file of the mask files in `folder` named <name><suffix>.<ext>; a mask file
    without the suffix, or two files of one name, is an error."""
    found: dict[str, Path] = {}
    for path in files if files is not None else sorted(folder.iterdir()):
        if path.suffix.lower() not in extensions:
            continue
        stem = path.stem
        if suffix and not (stem.endswith(suffix) and len(stem) > len(suffix)):
            raise DataError(f"{path}: a mask whose name does not end with data.mask_suffix "
                            f"{suffix!r}: rename it or move it out")  # fmt: skip
        stem = stem[: len(stem) - len(suffix)]
        if stem in found:
            raise DataError(f"{folder}: two masks named {stem!r}: {found[stem].name} and "
                            f"{path.name}")  # fmt: skip
        found[stem] = path
    return found


def stored_labels(
    masks: MaskFiles, num_labels: int, image_hw: Callable[[], tuple[int, int]]
) -> list[tuple[Path, np.ndarray]]:
    """The stored values of an image's masks, not yet mapped: layout a, (file, (H, W) uint8)
    per label; layout b, [(file, (H, W, L) uint8)]. `image_hw()` is called only when a file's
    shape fits both (H, W, L) and (L, H, W)."""
    if isinstance(masks, tuple):
        return [(path, read_mask_raw(path)[0]) for path in masks]
    array = _read_stack(masks)
    shape, n = array.shape, num_labels
    if array.ndim != 3 or n not in (shape[0], shape[2]):
        raise DataError(
            f"{masks}: multi-channel mask of shape {shape}; data.task: multilabel needs "
            f"(H, W, {n}) or ({n}, H, W): one 0/1 channel per class of data.classes"
        )
    if shape[0] == n and (shape[2] != n or shape[1:] == image_hw() != shape[:2]):  # else HWL
        array = np.moveaxis(array, 0, -1)
    return [(masks, _as_values(array, masks))]


def _read_stack(path: Path) -> np.ndarray:
    try:
        if path.suffix.lower() == ".npy":
            return np.load(path, allow_pickle=False)
        import tifffile

        return tifffile.imread(path)
    except FileNotFoundError:
        raise DataError(f"{path}: mask file not found") from None
    except Exception as e:  # noqa: BLE001 - any decoder failure: one line naming the file
        raise DataError(f"{path}: cannot read multi-channel mask: {e}") from None


def _as_values(array: np.ndarray, path: Path) -> np.ndarray:
    """uint8 of a bool array, or of integer values 0-255 in any numeric dtype; else an error."""
    if array.dtype == np.bool_ or array.dtype == np.uint8:
        return array.astype(np.uint8, copy=False)
    if array.dtype.kind not in "uif":
        raise DataError(f"{path}: mask of type {array.dtype}; store 0/1 as uint8 or bool")
    whole = np.isfinite(array).all() and (array == np.round(array)).all()
    if not whole or array.min() < 0 or array.max() > 255:
        shown = np.unique(array)[:8].tolist()
        raise DataError(f"{path}: mask values {shown}... are not 0/1 labels (nor 0-255 "
                        f"integers for data.mask_map); store 0/1 as uint8 or bool")  # fmt: skip
    return array.astype(np.uint8)


class MultilabelFileDataset(BandFileDataset):
    """A BandFileDataset whose masks are a folder per label or a multi-channel file per image
    (module docstring); `load` gives Sample(image (H, W, C), mask (H, W, L) uint8 0/1/ignore)."""

    def __init__(self, *args, num_labels: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.num_labels = num_labels

    def load(self, index: int) -> Sample:
        image_path, masks = self.pairs[index]
        decoded = self.read_image(image_path)
        if masks is None:
            return Sample(decoded.pixels, None, Path(image_path).stem)
        parts = []
        for path, raw in stored_labels(masks, self.num_labels, lambda: decoded.pixels.shape[:2]):
            check_same_size(decoded, raw, image_path, path)
            parts.append(self.label_map.apply(raw, path))  # raises on a value not 0/1/ignore
        mask = np.stack(parts, axis=-1) if isinstance(masks, tuple) else parts[0]
        return Sample(decoded.pixels, mask, Path(image_path).stem)


def label_counts(dataset: MultilabelFileDataset, workers: int | None = None) -> np.ndarray:
    """(L, 256) int64 pixel count of each training id (0, 1, ignore_index) per label over the
    dataset's masks (no image decoded unless a stack's axis needs its size), on threads."""
    n = dataset.num_labels

    def count(pair) -> np.ndarray:
        image_path, masks = pair
        total = np.zeros((n, 256), np.int64)
        if masks is None:
            return total

        def image_hw() -> tuple[int, int]:  # only for a stack whose axis is ambiguous
            return dataset.read_image(image_path).pixels.shape[:2]

        for label, (path, raw) in enumerate(stored_labels(masks, n, image_hw)):
            ids = dataset.label_map.apply(raw, path)  # raises on a value not 0/1/ignore
            if ids.ndim == 2:  # layout a: one label's file
                total[label] = np.bincount(ids.ravel(), minlength=256)
            else:  # layout b, (H, W, L): label l's counts at l * 256 + id
                flat = ids.astype(np.int64) + 256 * np.arange(n)
                total += np.bincount(flat.ravel(), minlength=256 * n).reshape(n, 256)
        return total

    total = np.zeros((n, 256), np.int64)
    with ThreadPoolExecutor(max_workers=workers or max(1, default_num_workers())) as pool:
        for counts in pool.map(count, dataset.pairs):
            total += counts
    return total


def missing_labels(
    ids: np.ndarray, label_map: LabelMap, names: Sequence[str], where: str
) -> tuple[str, str] | None:
    """(kind, one line with the fix) when a label has no positive pixel; None when each has.
    `ids`: (L, 256) pixel counts per label of training ids. kind "only_ignore": such a label holds
    only 0 and ignore_index (0/255 files read with the identity map); else "absent_class"."""
    ignore = label_map.ignore_index
    absent = [k for k in range(len(names)) if ids[k, 1] == 0]
    if not absent:
        return None

    def held(k: int) -> str:
        values = [v for v in (0, ignore) if ids[k, v]]
        return {(0,): "all 0", (ignore,): f"all {ignore} (unlabelled)"}.get(
            tuple(values), f"only 0 and {ignore}" if values else "no mask pixel"
        )

    found = ", ".join(f"{names[k]}: {held(k)}" for k in absent)
    line = f"{where}: no positive pixel of label(s) {found}"
    if any(ids[k, 0] and ids[k, ignore] for k in absent) and label_map.lut[ignore] == ignore:
        return "only_ignore", (
            f"{line}; {ignore} is data.ignore_index (unlabelled). If {ignore} marks the label, "
            f"set data.mask_map: {{0: 0, {ignore}: 1}}"
        )
    return "absent_class", (
        f"{line}; check the masks, data.mask_map (stored value -> 0/1), or remove the label "
        f"from data.classes"
    )
