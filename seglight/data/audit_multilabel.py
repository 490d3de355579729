"""The audit of a multi-label dataset (`num_labels` set, masks (H, W, L)), read through the
dataset's own `load` (mask values already mapped to 0/1/ignore): per label, positive pixels, the
share of its labelled pixels that are positive, and the images holding it; no class weights
(median frequency balancing assumes one class per pixel)."""

from pathlib import Path

import numpy as np

from seglight.data.audit_parts import Scan, ordered_map, problem, size_summary
from seglight.data.dataset import FileDataset, SegmentationDataset
from seglight.data.folder_multilabel import missing_labels
from seglight.data.io import LabelMap
from seglight.data.pixel_stats import channels_entry, pixel_sums
from seglight.errors import DataError


def _scan_labels(dataset: SegmentationDataset, index: int, ignore: int) -> Scan:
    """One sample of a multi-label dataset through its `load`: ids (L, 256), label l's pixel
    count of each training id (0, 1, ignore) in row l."""
    pairs = getattr(dataset, "pairs", None)
    name = str(pairs[index][0]) if pairs else f"sample {index}"
    try:
        sample = dataset.load(index)
    except DataError as e:
        text = str(e)
        kind = next((kind for key, kind in _KINDS if key in text), "unreadable")
        named = text.split(": ", 1)[0]  # most messages start with the file they are about
        return Scan(image=name, problems=[problem(named if Path(named).exists() else name,
                                                    kind, text)])  # fmt: skip
    scan = Scan(name, sample.image.shape[:2], pixel_sums(sample.image), sample.mask is not None)
    if sample.mask is None:
        return scan
    mask, n = sample.mask, dataset.num_labels  # (H, W, L)
    bad = sorted(set(np.unique(mask).tolist()) - {0, 1, ignore})
    if bad or mask.shape[:2] != scan.size or mask.shape[2:] != (n,):
        detail = f"{name}: mask {mask.shape} with values {bad[:8]} beyond 0, 1, {ignore}"
        scan.problems.append(problem(name, "bad_labels", detail))
        return scan
    flat = mask.astype(np.int64) + 256 * np.arange(n)  # label l's id v counts at l * 256 + v
    scan.ids = np.bincount(flat.ravel(), minlength=256 * n).reshape(n, 256)
    return scan


# What a DataError from a multi-label load is about, by its text (first match).
_KINDS = (("not found", "missing"), ("sizes differ", "size_mismatch"), ("channels", "channels"),
          ("cannot", "unreadable"), ("mask", "bad_labels"))  # fmt: skip


def audit_multilabel(dataset, class_names, ignore, split, n, workers) -> dict:
    """audit_dataset's report for a multi-label dataset: a row per label (pixels = positive
    pixels, pixel_fraction = positives / the label's labelled pixels); no class weights."""
    num_labels, total = len(class_names), len(dataset)
    threads = workers if isinstance(dataset, FileDataset) else 1
    ids = np.zeros((num_labels, 256), np.int64)
    images = np.zeros(num_labels, np.int64)  # images with a positive pixel of label l
    sizes, problems, channel_sums, labelled, clean = [], [], None, 0, 0
    for scan in ordered_map(lambda i: _scan_labels(dataset, i, ignore), n, threads):
        labelled += scan.labelled
        sizes += [(int(scan.size[0]), int(scan.size[1]))] if scan.size is not None else []
        problems.extend(scan.problems)
        if scan.ids is not None:
            clean += 1
            ids += scan.ids
            images += scan.ids[:, 1] > 0
        if scan.channels is not None and not scan.problems:
            channel_sums = channel_sums + scan.channels if channel_sums else scan.channels
    positives, labelled_px = ids[:, 1], ids[:, 0] + ids[:, 1]
    classes = [{"id": k, "name": name, "pixels": int(positives[k]),
                "pixel_fraction": float(positives[k] / labelled_px[k]) if labelled_px[k] else 0.0,
                "images": int(images[k]), "frequency": None, "weight": None}
               for k, name in enumerate(class_names)]  # fmt: skip
    warnings = []
    label_map = getattr(dataset, "label_map", None) or LabelMap.identity(2, ignore)
    partial = f" (first {n} of {total} images)" if n < total else ""
    where = f"split {split}{partial}" if split else f"the dataset{partial}"
    found = missing_labels(ids, label_map, class_names, where) if clean else None
    if found and found[0] == "absent_class" and partial:  # the rest of the split may hold them
        warnings.append(found[1])
    elif found:
        problems.append({"file": None, "kind": found[0], "detail": found[1]})
    if labelled == 0 and n:
        warnings.append("no masks in this split: no label statistics")
    entries, ignored = int(ids.sum()), int(ids[:, ignore].sum())
    return {
        "split": split, "dataset": type(dataset).__name__, "task": "multilabel",
        "num_images": n, "total_images": total, "num_labelled": labelled,
        "num_in_statistics": clean, "num_classes": num_labels, "ignore_index": ignore,
        "image_sizes": size_summary(sizes), "channels": channels_entry(channel_sums),
        "mask_pixels": entries, "ignored_pixels": ignored,  # pixel-label entries
        "ignored_fraction": ignored / entries if entries else 0.0, "classes": classes,
        "class_weights": None,  # median frequency balancing assumes one class per pixel
        "absent_classes": [row["name"] for row in classes if row["pixels"] == 0],
        "unexpected_values": {}, "num_problems": len(problems), "problems": problems,
        "warnings": warnings,
    }  # fmt: skip
