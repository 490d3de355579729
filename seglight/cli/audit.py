"""Dataset audit: scan a split once and report what training would trip over, before it does.

python -m seglight audit --config configs/voc.yaml --split train      # table + audit_train.json

Reports image count, image sizes, per-class pixel and image frequency, ignored pixels, unexpected
label values, unreadable / missing files, image-mask size mismatches, classes without a pixel
(and masks holding only 0 and ignore_index: 0/255 binary masks read as "ignore"), and class
weights by median frequency balancing. Exits 1 when it found problems, 0 when none. It builds
the data module of the same config files `fit` takes, and nothing else: no model, no trainer,
no download.

Every file is decoded once. Label statistics come from one bincount of the *stored* mask values,
mapped to training ids through the dataset's LabelMap; a file with a problem is reported and left
out of the statistics (training could not use it either).
"""

import json
import sys
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from jsonargparse import ActionConfigFile

from seglight.cli.parser import DEFAULT_DATA, SeglightArgumentParser
from seglight.data.base import SegmentationDataModule, default_num_workers
from seglight.data.dataset import FileDataset, SegmentationDataset
from seglight.data.images import check_same_size, decode_image
from seglight.data.io import LabelMap, missing_classes, read_mask_values
from seglight.errors import ConfigError, DataError

SPLITS = ("train", "val", "test", "predict")
# Sections of fit's config files that the audit accepts and ignores (it builds only the data).
IGNORED_SECTIONS = ("seed_everything", "trainer", "model", "ckpt_path", "weights_only")
MAX_SHOWN = 20  # problems listed in the printed table (the JSON has all of them)


@dataclass
class _Scan:
    """What one sample contributed: image size (H, W), whether it has a mask, stored-value and
    training-id pixel counts (256,) when it loaded cleanly, stored values that are not labels,
    problems."""

    size: tuple[int, int] | None = None
    labelled: bool = False
    stored: np.ndarray | None = None
    ids: np.ndarray | None = None
    invalid: dict[int, int] = field(default_factory=dict)
    problems: list[dict] = field(default_factory=list)


def _problem(path, kind: str, detail: str) -> dict:
    return {"file": str(path), "kind": kind, "detail": detail}


def _kind(error: DataError, path) -> str:
    """Which kind of problem a DataError from seglight.data.io describes."""
    if not Path(path).exists():
        return "missing"
    text = str(error)
    if "mask has mode" in text or "not in the class palette" in text:
        return "bad_labels"  # decodes fine, but does not hold class indices
    return "unreadable"


def _scan_pair(dataset: FileDataset, index: int) -> _Scan:
    """Read one (image, mask) pair of a FileDataset; each file separately, each decoded once."""
    image_path, mask_path = dataset.pairs[index]
    scan = _Scan(labelled=mask_path is not None)
    image = None
    try:
        image = decode_image(image_path, getattr(dataset, "exif_orientation", True))
        scan.size = image.pixels.shape[:2]
    except DataError as e:
        scan.problems.append(_problem(image_path, _kind(e, image_path), str(e)))
    if mask_path is None:
        return scan
    label_map = dataset.label_map
    try:  # as FileDataset.read_mask, but keeping the stored values' counts
        raw = read_mask_values(
            mask_path, dataset.palette, dataset.ignore_colour, dataset.ignore_index
        )
    except DataError as e:
        scan.problems.append(_problem(mask_path, _kind(e, mask_path), str(e)))
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
        scan.problems.append(_problem(mask_path, "bad_labels", detail))
    if image is not None:
        try:
            check_same_size(image, raw, image_path, mask_path)
        except DataError as e:
            scan.problems.append(_problem(mask_path, "size_mismatch", str(e)))
    if not scan.problems:
        # Training-id counts: stored value v adds its counts[v] pixels to id lut[v].
        scan.stored = counts
        scan.ids = np.bincount(label_map.lut, weights=counts, minlength=256).astype(np.int64)
    return scan


def _scan_sample(dataset: SegmentationDataset, index: int, num_classes: int, ignore: int) -> _Scan:
    """One sample of a dataset that is not file based: its mask already holds training ids."""
    try:
        sample = dataset.load(index)
    except DataError as e:
        return _Scan(problems=[_problem(f"sample {index}", "unreadable", str(e))])
    scan = _Scan(size=sample.image.shape[:2], labelled=sample.mask is not None)
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
        scan.problems.append(_problem(sample.name, "bad_labels", detail))
    if sample.mask.shape[:2] != sample.image.shape[:2]:
        detail = f"{sample.name}: image is {scan.size}, mask is {sample.mask.shape[:2]} (H, W)"
        scan.problems.append(_problem(sample.name, "size_mismatch", detail))
    if not scan.problems:
        scan.ids = scan.stored = counts[:256].astype(np.int64)
    return scan


def _number(x: float) -> int | float:
    return int(x) if float(x).is_integer() else float(x)


def _sizes(sizes: list[tuple[int, int]], most_common: int = 10) -> dict:
    if not sizes:
        return {"height": None, "width": None, "most_common": []}
    hw = np.array(sizes)
    stats = {}
    for axis, name in ((0, "height"), (1, "width")):
        col = hw[:, axis]
        stats[name] = {
            "min": int(col.min()),
            "max": int(col.max()),
            "median": _number(np.median(col)),
        }
    common = Counter(map(tuple, hw.tolist())).most_common(most_common)
    stats["most_common"] = [{"height": h, "width": w, "count": n} for (h, w), n in common]
    return stats


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
    if isinstance(dataset, FileDataset):
        scans = _map(lambda i: _scan_pair(dataset, i), n, workers)
    else:
        scans = (_scan_sample(dataset, i, num_classes, ignore_index) for i in range(n))

    stored = np.zeros(256, np.int64)  # pixels per stored mask value
    pixels = np.zeros(num_classes, np.int64)  # pixels of class c
    images = np.zeros(num_classes, np.int64)  # images in which class c is present
    present_pixels = np.zeros(num_classes, np.int64)  # labelled pixels of those images
    ignored = labelled = clean = 0
    sizes: list[tuple[int, int]] = []
    problems: list[dict] = []
    unexpected: dict[int, dict] = {}
    for scan in scans:
        labelled += scan.labelled
        if scan.size is not None:
            sizes.append((int(scan.size[0]), int(scan.size[1])))
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
        "image_sizes": _sizes(sizes),
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


def _map(fn, n: int, workers: int):
    """fn(0), ..., fn(n-1) in order, on `workers` threads."""
    if workers <= 1 or n <= 1:
        yield from map(fn, range(n))
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(fn, range(n))


def format_report(report: dict) -> str:
    """The report as a plain-text table: classes, then image sizes, then problems."""
    scanned = f"{report['num_images']} images"
    if report["num_images"] < report["total_images"]:
        scanned = f"first {report['num_images']} of {report['total_images']} images"
    lines = [
        f"audit of split {report['split']!r} ({report['dataset']}): {scanned}, "
        f"{report['num_labelled']} labelled, {report['num_in_statistics']} in the statistics, "
        f"{report['num_problems']} problem(s)",
        "",
    ]
    width = max([len("class")] + [len(row["name"]) for row in report["classes"]])
    lines.append(f"{'id':>3}  {'class':<{width}}  {'pixels %':>8}  {'images':>7}  {'weight':>7}")
    for row in report["classes"]:
        weight = "-" if row["weight"] is None else f"{row['weight']:.3f}"
        lines.append(
            f"{row['id']:>3}  {row['name']:<{width}}  {100 * row['pixel_fraction']:>7.2f}%  "
            f"{row['images']:>7}  {weight:>7}"
        )
    lines.append(
        f"ignored pixels ({report['ignore_index']}): {100 * report['ignored_fraction']:.2f}% "
        f"of {report['mask_pixels']} mask pixels"
    )
    if report["class_weights"] is None:
        absent = ", ".join(report["absent_classes"])
        lines.append(f"weights: no suggestion while classes have no pixel ({absent})")
    else:
        lines.append("weights: median frequency balancing; as loss.class_weights:")
        lines.append(f"  [{', '.join(f'{w:.4g}' for w in report['class_weights'])}]")
    sizes = report["image_sizes"]
    lines.append("")
    if sizes["height"] is None:
        lines.append("image sizes: no readable image")
    else:
        h, w = sizes["height"], sizes["width"]
        lines.append(
            f"image sizes (H x W): height {h['min']}-{h['max']} (median {h['median']}), "
            f"width {w['min']}-{w['max']} (median {w['median']})"
        )
        common = ", ".join(
            f"{s['height']}x{s['width']} ({s['count']})" for s in sizes["most_common"]
        )
        lines.append(f"  most common: {common}")
    if report["unexpected_values"]:
        values = ", ".join(
            f"{v}: {e['pixels']} px in {e['files']} file(s)"
            for v, e in report["unexpected_values"].items()
        )
        lines.append(f"unexpected mask values: {values}")
    for warning in report["warnings"]:
        lines.append(f"warning: {warning}")
    problems = report["problems"]
    lines.append("")
    if not problems:
        lines.append("no problems found")
    else:
        kinds = Counter(p["kind"] for p in problems)
        summary = ", ".join(f"{k} {n}" for k, n in sorted(kinds.items()))
        lines.append(f"problems: {len(problems)} ({summary})")
        for p in problems[:MAX_SHOWN]:
            lines.append(f"  {p['kind']:<13} {p['detail']}")
        if len(problems) > MAX_SHOWN:
            lines.append(f"  ... and {len(problems) - MAX_SHOWN} more (all in the JSON report)")
    return "\n".join(lines)


# --- the `seglight audit` subcommand ------------------------------------------------------------


def build_parser():
    """The audit's parser: fit's config files are accepted; only `data` is used."""
    parser = SeglightArgumentParser(
        prog="seglight audit",
        description=(
            "Scan one split of the configured dataset: image sizes, class frequencies, "
            "unexpected label values, unreadable or mismatched files, suggested class weights. "
            "Prints a table, writes JSON, exits 1 when it found problems. Takes the config files "
            "of `fit`; only the data section is used (trainer/model flags are ignored)."
        ),
    )
    parser.add_argument(
        "-c", "--config", action=ActionConfigFile, help="Path to a configuration file (YAML)."
    )
    parser.add_subclass_arguments(
        SegmentationDataModule, "data", required=False, fail_untyped=False
    )
    parser.set_defaults({"data": {"class_path": DEFAULT_DATA}})
    parser.add_argument("--split", choices=SPLITS, default="train", help="Split to scan.")
    parser.add_argument(
        "--output",
        type=str | None,
        default=None,
        help="JSON report path (default: audit_<split>.json).",
    )
    parser.add_argument(
        "--max_images", type=int | None, default=None, help="Scan only the first N samples."
    )
    parser.add_argument(
        "--workers", type=int | None, default=None, help="Threads reading files; default: cores."
    )
    # Accepted (so fit's configs parse) and ignored.
    ignored = {
        "seed_everything": int | bool | None,
        "trainer": dict | str | None,
        "model": dict | str | None,
        "ckpt_path": str | None,
        "weights_only": bool | None,
    }
    for name, kind in ignored.items():
        parser.add_argument(f"--{name}", type=kind, default=None, help="Ignored by audit.")
    return parser


def _drop_ignored_flags(argv: Sequence[str]) -> list[str]:
    """Drop `--trainer.x=1`, `--model.optimizer.lr 3e-4` etc., so a fit command line works with
    `fit` replaced by `audit`. Their config-file sections are parsed (and ignored) instead."""
    out, skip_value = [], False
    for arg in argv:
        if skip_value:
            skip_value = False
            continue
        name = arg[2:].split("=", 1)[0] if arg.startswith("--") else ""
        if name.split(".", 1)[0] in IGNORED_SECTIONS + ("optimizer", "lr_scheduler"):
            skip_value = "=" not in arg
            continue
        out.append(arg)
    return out


def run_audit(argv: Sequence[str]) -> int:
    """`seglight audit ...`: 0 when the split has no problems, 1 when it has. Config errors raise
    ConfigError (the CLI prints one line and exits 2); --help exits 0."""
    parser = build_parser()
    cfg = parser.parse_args(_drop_ignored_flags(argv))
    if cfg.max_images is not None and cfg.max_images < 1:
        raise ConfigError(f"max_images: must be >= 1, got {cfg.max_images}")
    if cfg.workers is not None and cfg.workers < 1:
        raise ConfigError(f"workers: must be >= 1, got {cfg.workers}")
    data: SegmentationDataModule = parser.instantiate_classes(cfg).data
    # The eval pipeline (no augmentation) is what the dataset is built with; the audit reads the
    # raw files / samples, not the transformed tensors.
    dataset = data.prepared_dataset(cfg.split, data.pipelines["eval"])
    workers = cfg.workers or max(1, default_num_workers())
    report = audit_dataset(
        dataset, data.class_names, data.ignore_index, cfg.split, cfg.max_images, workers
    )
    report["data_module"] = f"{type(data).__module__}.{type(data).__qualname__}"
    output = Path(cfg.output) if cfg.output else Path.cwd() / f"audit_{cfg.split}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(format_report(report))
    print(f"\nreport written to {output}")
    sys.stdout.flush()
    return 1 if report["problems"] else 0
