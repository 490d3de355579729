"""Dataset audit: scan a split once and report what training would trip over, before it does.

python -m seglight audit --config configs/voc.yaml --split train      # table + audit_train.json

Reports image count, image sizes, per-class pixel and image frequency, ignored pixels, unexpected
label values, unreadable / missing files, image-mask size mismatches, classes without a pixel
(and masks holding only 0 and ignore_index: 0/255 binary masks read as "ignore"), and class
weights by median frequency balancing (seglight.data.audit), and the images' per-channel mean /
std (after data.bands, in [0, 1] units), printed as data.mean / data.std lines to paste into the
config and compared with the config's own. Exits 1 when it found problems, 0 when none. It
builds the data module of the same config files and flags `fit` takes, and nothing else: no
model, no trainer, no download.
"""

import json
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from jsonargparse import ActionConfigFile

from seglight.cli.lightning import ALWAYS_ON
from seglight.cli.parser import DEFAULT_DATA, SeglightArgumentParser
from seglight.data.audit import audit_dataset, median_frequency_weights  # noqa: F401
from seglight.data.base import SegmentationDataModule, default_num_workers
from seglight.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from seglight.errors import ConfigError

SPLITS = ("train", "val", "test", "predict")
# Sections of fit's configs and command lines that the audit accepts and ignores (it builds only
# the data); `--trainer.max_epochs=3`, `--model.optimizer.lr 3e-4`: items of these sections.
IGNORED_SECTIONS = ("seed_everything", "trainer", "model", "ckpt_path", "weights_only")
IGNORED_SECTIONS += ("optimizer", "lr_scheduler", *ALWAYS_ON)  # ALWAYS_ON: callbacks' keys
MAX_SHOWN = 20  # problems listed in the printed table (the JSON has all of them)
# The config's mean/std "match" the measured ones when inputs normalized with them would have, in
# every channel, a mean within TOLERANCE of 0 and a std within TOLERANCE of 1.
TOLERANCE = 0.1


def _values(values) -> str:
    """[a, b, ...] to 4 significant digits, without exponents: YAML and jsonargparse read it."""
    return (
        "["
        + ", ".join(np.format_float_positional(v, 4, False, False, trim="-") for v in values)
        + "]"
    )


def _rounded(values) -> str:
    return "[" + ", ".join(f"{v:.2f}" for v in values) + "]"


def compare_normalization(channels: dict, mean, std) -> dict:
    """The config's data.mean / data.std against the measured `channels` entry: what inputs
    normalized with the config's values would have (per-channel mean and std) and whether that is
    within TOLERANCE of (0, 1)."""
    mean, std = [float(m) for m in mean], [float(s) for s in std]
    entry = {
        "mean": mean,
        "std": std,
        "imagenet": (tuple(mean), tuple(std)) == (IMAGENET_MEAN, IMAGENET_STD),
    }
    if channels["count"] is None or len(mean) != channels["count"] or len(std) != channels["count"]:
        return entry | {"matches": False, "normalized_mean": None, "normalized_std": None}
    m, s = np.array(channels["mean"]), np.array(channels["std"])
    shifted, scaled = (m - np.array(mean)) / np.array(std), s / np.array(std)
    close = bool(np.all(np.abs(shifted) <= TOLERANCE) and np.all(np.abs(scaled - 1) <= TOLERANCE))
    return entry | {
        "matches": close,
        "normalized_mean": shifted.tolist(),
        "normalized_std": scaled.tolist(),
    }


def _channel_lines(channels: dict) -> list[str]:
    if channels["count"] is None:
        return ["channel mean/std: no image measured"]
    lines = [
        f"channel mean/std of {channels['images']} images ({channels['count']} channels, "
        f"[0, 1] units); for the config's data section:",
        f"  data.mean: {_values(channels['mean'])}",
        f"  data.std: {_values(channels['std'])}",
    ]
    constant = [c for c, v in enumerate(channels["std"]) if v < 1e-6]
    if constant:
        lines.append(f"warning: channel(s) {constant} constant (std 0): data.std must be > 0")
    config = channels.get("config")
    if config is None:
        return lines
    whose = " (ImageNet's)" if config["imagenet"] else ""
    if config["normalized_mean"] is None:
        lines.append(
            f"the config's data.mean/std{whose} have {len(config['mean'])} values, the images "
            f"{channels['count']} channels: paste these"
        )
    elif config["matches"]:
        lines.append(
            f"the config's data.mean/std{whose} match these (inputs normalized with them: mean "
            f"and std within {TOLERANCE} of 0 and 1)"
        )
    else:
        lines.append(
            f"the config's data.mean/std{whose} differ from these (inputs normalized with them: "
            f"mean {_rounded(config['normalized_mean'])}, std {_rounded(config['normalized_std'])}"
            f" instead of 0 and 1): consider pasting them"
        )
    return lines


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
    multilabel = report.get("task") == "multilabel"
    if multilabel:
        lines.append("multilabel: pixels % = positive share of each label's labelled pixels")
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
        f"of {report['mask_pixels']} mask {'pixel-label entries' if multilabel else 'pixels'}"
    )
    if multilabel:
        lines.append("weights: no suggestion for multilabel (median frequency balancing assumes "
                     "one class per pixel)")  # fmt: skip
    elif report["class_weights"] is None:
        absent = ", ".join(report["absent_classes"])
        lines.append(f"weights: no suggestion while classes have no pixel ({absent})")
    else:
        lines.append("weights: median frequency balancing; as loss.class_weights:")
        lines.append(f"  [{', '.join(f'{w:.4g}' for w in report['class_weights'])}]")
    lines.append("")
    lines.extend(_channel_lines(report["channels"]) + [""])
    sizes = report["image_sizes"]
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
    # Accepted, so fit's configs and flags parse, and ignored: a dict takes `--trainer.x=1` as
    # its item "x"; scalars stay scalars (seed_everything: 0, ckpt_path: null).
    for name in IGNORED_SECTIONS:
        parser.add_argument(
            f"--{name}", type=dict | bool | int | str | None, default=None, help="Ignored."
        )
    return parser


def run_audit(argv: Sequence[str]) -> int:
    """`seglight audit ...`: 0 when the split has no problems, 1 when it has. Config errors raise
    ConfigError (the CLI prints one line and exits 2); --help exits 0."""
    parser = build_parser()
    cfg = parser.parse_args(list(argv))
    if cfg.max_images is not None and cfg.max_images < 1:
        raise ConfigError(f"max_images: must be >= 1, got {cfg.max_images}")
    if cfg.workers is not None and cfg.workers < 1:
        raise ConfigError(f"workers: must be >= 1, got {cfg.workers}")
    data: SegmentationDataModule = parser.instantiate_classes(cfg).data  # the rest are dicts
    # The eval pipeline (no augmentation) is what the dataset is built with; the audit reads the
    # raw files / samples, not the transformed tensors.
    dataset = data.prepared_dataset(cfg.split, data.pipelines["eval"])
    workers = cfg.workers or max(1, default_num_workers())
    report = audit_dataset(
        dataset, data.class_names, data.ignore_index, cfg.split, cfg.max_images, workers
    )
    report["data_module"] = f"{type(data).__module__}.{type(data).__qualname__}"
    report["channels"]["config"] = compare_normalization(report["channels"], data.mean, data.std)
    output = Path(cfg.output) if cfg.output else Path.cwd() / f"audit_{cfg.split}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(format_report(report))
    print(f"\nreport written to {output}")
    sys.stdout.flush()
    return 1 if report["problems"] else 0
