"""Auditing a dataset: one pass over a split's files (or samples) giving image sizes, per-class
pixel and image frequencies, ignored pixels, unexpected label values, unreadable / missing files,
image-mask size mismatches, classes without a pixel, and class weights by median frequency
balancing, per-channel image mean / std (seglight.data.pixel_stats: the values for data.mean /
data.std). `seglight audit` (seglight.cli.audit) is the command line around it.

Every file is decoded once, by the data package's own readers (seglight.data.images, .io). Label
statistics come from one bincount of the *stored* mask values, mapped to training ids through the
dataset's LabelMap; a file with a problem is reported and left out of the statistics (training
could not use it either). The channel statistics come from the same decoded pixels (no file is
read twice): every image of a sample without a problem, unlabelled ones included; an image whose
channel count differs from the dataset's (its first training image's, else the first scanned
image's) is a problem of kind "channels".

Multi-label datasets (`num_labels` set, masks (H, W, L)) are read through the dataset's own
`load` (mask values already mapped to 0/1/ignore): per label, positive pixels, the share of its
labelled pixels that are positive, and the images holding it; no class weights (median frequency
balancing assumes one class per pixel).
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from seglight.data.audit_multilabel import audit_multilabel
from seglight.data.audit_parts import Scan, ordered_map, problem, size_summary
from seglight.data.dataset import FileDataset, SegmentationDataset
from seglight.data.images import check_same_size, decode_image
from seglight.data.io import LabelMap, missing_classes, read_mask_values
from seglight.data.pixel_stats import PixelSums, channel_stats, channels_entry, pixel_sums  # noqa: F401
from seglight.errors import DataError


def _kind(error: DataError, path) -> str:
    """Which kind of problem a DataError from seglight.data.io describes."""
    if not Path(path).exists():
        return "missing"
    text = str(error)
    if "mask has mode" in text or "not in the class palette" in text:
        return "bad_labels"  # decodes fine, but does not hold class indices
    return "unreadable"


def _scan_pair(dataset: FileDataset, index: int) -> Scan:
    """Read one (image, mask) pair of a FileDataset; each file separately, each decoded once."""
    image_path, mask_path = dataset.pairs[index]
    scan = Scan(image=str(image_path), labelled=mask_path is not None)
    image = None
    try:
        image = decode_image(
            image_path, getattr(dataset, "exif_orientation", True), getattr(dataset, "bands", None)
        )
        scan.size = image.pixels.shape[:2]
        scan.channels = pixel_sums(image.pixels)
    except DataError as e:
        scan.problems.append(problem(image_path, _kind(e, image_path), str(e)))
    if mask_path is None:
        return scan
    label_map = dataset.label_map
    try:  # FileDataset.read_mask before its label map, which would refuse what is counted here
        raw = read_mask_values(
            mask_path, dataset.palette, dataset.ignore_colour, dataset.ignore_index
        )
    except DataError as e:
        scan.problems.append(problem(mask_path, _kind(e, mask_path), str(e)))
        return scan
    counts = label_map.counts(raw)  # (256,) pixels per stored value
    bad = label_map.invalid_values(counts)
    if bad:
        scan.invalid = {v: int(counts[v]) for v in bad}
        shown = ", ".join(f"{v} ({counts[v]} px)" for v in bad[:20])
        detail = (
            f"{mask_path}: mask has values {shown} that are not labels of this dataset "
            f"(expected {label_map.describe()})"
        )
        scan.problems.append(problem(mask_path, "bad_labels", detail))
    if image is not None:
        try:
            check_same_size(image, raw, image_path, mask_path)
        except DataError as e:
            scan.problems.append(problem(mask_path, "size_mismatch", str(e)))
    if not scan.problems:
        # Training-id counts: stored value v adds its counts[v] pixels to id lut[v].
        scan.stored = counts
        scan.ids = np.bincount(label_map.lut, weights=counts, minlength=256).astype(np.int64)
    return scan


def _scan_sample(dataset: SegmentationDataset, index: int, num_classes: int, ignore: int) -> Scan:
    """One sample of a dataset that is not file based: its mask already holds training ids."""
    try:
        sample = dataset.load(index)
    except DataError as e:
        return Scan(problems=[problem(f"sample {index}", "unreadable", str(e))])
    scan = Scan(sample.name, sample.image.shape[:2], pixel_sums(sample.image))
    scan.labelled = sample.mask is not None
    if sample.mask is None:
        return scan
    counts = np.bincount(sample.mask.ravel(), minlength=256)
    valid = np.zeros(len(counts), bool)
    valid[:num_classes] = True
    valid[ignore] = True
    bad = np.flatnonzero((counts > 0) & ~valid).tolist()
    if bad:
        scan.invalid = {v: int(counts[v]) for v in bad}
        detail = f"{sample.name}: mask has values {bad[:20]} outside 0-{num_classes - 1}, {ignore}"
        scan.problems.append(problem(sample.name, "bad_labels", detail))
    if sample.mask.shape[:2] != sample.image.shape[:2]:
        detail = f"{sample.name}: image is {scan.size}, mask is {sample.mask.shape[:2]} (H, W)"
        scan.problems.append(problem(sample.name, "size_mismatch", detail))
    if not scan.problems:
        scan.ids = scan.stored = counts[:256].astype(np.int64)
    return scan


def median_frequency_weights(pixels: np.ndarray, present_pixels: np.ndarray) -> np.ndarray:
    """Class weights by median frequency balancing (Eigen & Fergus, ICCV 2015):

        freq_c   = pixels of class c / labelled pixels of the images in which c is present
        weight_c = median over present classes of freq / freq_c

    ("labelled pixels" leaves out ignore_index). A class present in no image has no weight: nan
    (never 0, which would silence it, nor inf). pixels, present_pixels: (C,) counts. Returns
    (C,) float64.
    """
    pixels = np.asarray(pixels, np.float64)
    present_pixels = np.asarray(present_pixels, np.float64)
    present = (pixels > 0) & (present_pixels > 0)
    weights = np.full(len(pixels), np.nan)
    if present.any():
        freq = pixels[present] / present_pixels[present]
        weights[present] = np.median(freq) / freq
    return weights


def audit_dataset(
    dataset: SegmentationDataset,
    class_names: Sequence[str],
    ignore_index: int = 255,
    split: str | None = None,
    max_images: int | None = None,
    workers: int = 1,
) -> dict:
    """Scan `dataset` (its first `max_images` samples, or all) and return a JSON-serialisable
    report (see `format_report`). A FileDataset is read from its files (stored mask values,
    through its label map); any other dataset through `load(i)`. `workers` threads read files
    (image decoding releases the GIL); other datasets are read in this thread."""
    num_classes = len(class_names)
    total = len(dataset)
    n = total if max_images is None else min(total, max_images)
    if getattr(dataset, "num_labels", None):
        return audit_multilabel(dataset, class_names, ignore_index, split, n, workers)
    if isinstance(dataset, FileDataset):
        scans = ordered_map(lambda i: _scan_pair(dataset, i), n, workers)
    else:
        scans = (_scan_sample(dataset, i, num_classes, ignore_index) for i in range(n))

    stored = np.zeros(256, np.int64)  # pixels per stored mask value
    pixels = np.zeros(num_classes, np.int64)  # pixels of class c
    images = np.zeros(num_classes, np.int64)  # images in which class c is present
    present_pixels = np.zeros(num_classes, np.int64)  # labelled pixels of those images
    ignored = labelled = clean = 0
    expected = getattr(dataset, "channels", None)  # BandFileDataset: its first training image's
    reference = "the first training image" if expected else "the first image scanned"
    channel_sums: PixelSums | None = None  # of the images of samples without a problem
    sizes: list[tuple[int, int]] = []
    problems: list[dict] = []
    unexpected: dict[int, dict] = {}
    for scan in scans:
        labelled += scan.labelled
        if scan.size is not None:
            sizes.append((int(scan.size[0]), int(scan.size[1])))
        if scan.channels is not None:
            found, expected = scan.channels.channels, expected or scan.channels.channels
            if found != expected:  # training's load() refuses it: out of every statistic
                bands = " (data.bands)" if getattr(dataset, "bands", None) else ""
                detail = (f"{scan.image}: gives {found} channels{bands}, {reference} {expected}: "
                          f"all images need the same bands")  # fmt: skip
                scan.problems.append(problem(scan.image, "channels", detail))
                scan.ids = None
            elif not scan.problems:
                channel_sums = channel_sums + scan.channels if channel_sums else scan.channels
        problems.extend(scan.problems)
        for value, count in scan.invalid.items():
            entry = unexpected.setdefault(value, {"pixels": 0, "files": 0})
            entry["pixels"] += count
            entry["files"] += 1
        if scan.ids is None:
            continue
        clean += 1
        stored += scan.stored
        per_class = scan.ids[:num_classes]
        pixels += per_class
        ignored += int(scan.ids[ignore_index])
        here = per_class > 0
        images += here
        present_pixels[here] += int(per_class.sum())

    counted = int(pixels.sum())
    weights = median_frequency_weights(pixels, present_pixels)
    classes = []
    for c, name in enumerate(class_names):
        freq = pixels[c] / present_pixels[c] if present_pixels[c] else 0.0
        classes.append(
            {
                "id": c,
                "name": name,
                "pixels": int(pixels[c]),
                "pixel_fraction": float(pixels[c] / counted) if counted else 0.0,
                "images": int(images[c]),
                "frequency": float(freq),
                "weight": None if np.isnan(weights[c]) else float(weights[c]),
            }
        )
    absent = [row["name"] for row in classes if row["images"] == 0]
    warnings = []
    if clean and labelled and absent:  # no class may be lost silently
        label_map = getattr(dataset, "label_map", None) or LabelMap.identity(
            num_classes, ignore_index
        )
        partial = f" (first {n} of {total} images)" if n < total else ""
        where = f"split {split}{partial}" if split else f"the dataset{partial}"
        kind, detail = missing_classes(stored, label_map, class_names, where)
        if kind == "absent_class" and partial:  # the rest of the split may hold them
            warnings.append(detail)
        else:
            problems.append({"file": None, "kind": kind, "detail": detail})
    if labelled == 0 and n:
        warnings.append("no masks in this split: no label statistics")
    return {
        "split": split,
        "dataset": type(dataset).__name__,
        "num_images": n,
        "total_images": total,
        "num_labelled": labelled,
        "num_in_statistics": clean,
        "num_classes": num_classes,
        "ignore_index": ignore_index,
        "image_sizes": size_summary(sizes),
        "channels": channels_entry(channel_sums),
        "mask_pixels": counted + ignored,
        "ignored_pixels": ignored,
        "ignored_fraction": float(ignored / (counted + ignored)) if counted + ignored else 0.0,
        "classes": classes,
        # No suggestion while a class has no pixel: 0 would silence it, and it has no frequency.
        "class_weights": None if absent else [round(float(w), 6) for w in weights],
        "absent_classes": absent,
        "unexpected_values": {str(v): unexpected[v] for v in sorted(unexpected)},
        "num_problems": len(problems),
        "problems": problems,
        "warnings": warnings,
    }
