"""ClassReport: the per-class table after test/validate, and the test report files."""

import csv
import json
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only

from seglight.callbacks.image_report import draw_worst, write_image_scores
from seglight.figures import confusion_figure, iou_bars
from seglight.html_report import build_html
from seglight.image_scores import ImageScores

HEADERS = {"IoU": "IoU", "acc": "Acc", "F1": "F1", "precision": "Prec", "recall": "Recall"}
# The macro mean of a per-class column as the metric computed it (else the column's nanmean).
MEANS = {"IoU": "mIoU", "acc": "mAcc", "F1": "mF1"}


def report_columns(pl_module: L.LightningModule) -> tuple[str, ...]:
    """The per-class numbers of the module's task (seglight.tasks): IoU and acc for multiclass
    and binary, IoU, F1, precision and recall per label for multilabel."""
    return tuple(getattr(getattr(pl_module, "spec", None), "per_class", ("IoU", "acc")))


class ClassReport(L.Callback):
    """Print the per-class (multilabel: per-label) table after `test` and `validate` (not during
    fit); after `test`, also write into the run's log dir test_report.json, test_report.csv,
    test_iou.png (IoU bars), for one class per pixel test_confusion.png (rows = ground truth,
    normalized per row, both axes named, values printed), test_images.csv (each image's
    headline score, lowest first), test_worst.png (the lowest-scoring images: image | truth |
    prediction | error) and test_report.html, all of it in one self-contained page."""

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._print(pl_module, "test")
        scores = getattr(pl_module, "image_scores", None)
        scores = scores.gathered() if scores is not None else None  # every process takes part
        # log_dir broadcasts from rank 0 under DDP: every process must ask, only rank 0 writes.
        self._write(Path(trainer.log_dir or trainer.default_root_dir), trainer, pl_module, scores)

    @rank_zero_only
    def _write(self, folder: Path, trainer: L.Trainer, pl_module: L.LightningModule,
               scores: ImageScores | None = None) -> None:  # fmt: skip
        result = getattr(pl_module, "last_metrics", {}).get("test")
        if result is None:
            return
        folder.mkdir(parents=True, exist_ok=True)
        spec = getattr(pl_module, "spec", None)
        summary = ("mIoU", "mAcc", "pixel_acc", *(() if spec is None else spec.logged))
        if spec is not None:
            summary = (spec.headline, *summary)
        columns = report_columns(pl_module)
        report = build_report(pl_module.class_names, result, columns, summary)
        report["checkpoint"] = str(trainer.ckpt_path) if trainer.ckpt_path else None
        report["protocol"] = getattr(pl_module, "protocol_description", "whole")
        report["task"] = getattr(pl_module, "task", "multiclass")
        if report["task"] != "multiclass":  # the decision threshold of the sigmoid tasks
            report["threshold"] = pl_module.threshold
        if scores is not None and len(scores):
            metric = spec.headline if spec is not None else "mIoU"
            report["images"] = write_image_scores(folder, scores, metric)
        (folder / "test_report.json").write_text(json.dumps(report, indent=2))
        with open(folder / "test_report.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["class", *columns, "pixels"])
            for row in report["classes"]:
                writer.writerow([row["name"], *(row[c] for c in columns), row["pixels"]])
        names = pl_module.class_names
        what = "label" if report["task"] == "multilabel" else "class"
        pictures = {f"IoU per {what}": iou_bars(names, result["IoU"], f"test IoU per {what}")}
        pictures["IoU per " + what].save(folder / "test_iou.png")
        files = "test_report.json, .csv, .html, test_iou.png"
        if "confmat" in result:  # independent labels have per-label counts instead
            title = "test confusion matrix (rows sum to 100%)"
            pictures["confusion matrix"] = confusion_figure(result["confmat"], names, title)
            pictures["confusion matrix"].save(folder / "test_confusion.png")
            files += ", test_confusion.png"
        worst = draw_worst(scores, trainer.datamodule, names) if report.get("images") else None
        if worst is not None:
            pictures["lowest-scoring images"] = worst
            worst.save(folder / "test_worst.png")
            files += ", test_images.csv, test_worst.png"
        html = build_html(report, columns, pictures)
        (folder / "test_report.html").write_text(html, encoding="utf-8")
        print(f"test report: {folder}: {files}")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "validate":
            self._print(pl_module, "val")

    @rank_zero_only
    def _print(self, pl_module: L.LightningModule, stage: str) -> None:
        result = getattr(pl_module, "last_metrics", {}).get(stage)
        if result is None:
            return
        columns = report_columns(pl_module)
        what = "label" if getattr(pl_module, "task", "") == "multilabel" else "class"
        title = f"{stage} per {what}"
        print(format_class_table(pl_module.class_names, result, title=title, columns=columns))


def format_class_table(
    class_names: list[str],
    result: dict[str, torch.Tensor],
    title: str,
    columns: tuple[str, ...] = ("IoU", "acc"),
) -> str:
    """A plain-text table: one row per class with `columns` in %, then their means and the
    pixel accuracy (multilabel: also the micro IoU and F1 over all labels).

    Classes absent from both ground truth and prediction show "-" and are left out of the means.
    """

    def pct(x: torch.Tensor) -> str:
        return "-" if torch.isnan(x) else f"{100 * float(x):6.2f}"

    width = max(12, *(len(n) for n in class_names))
    header = "  ".join(f"{HEADERS.get(c, c):>6}" for c in columns)
    rule = "-" * (width + 8 * len(columns))
    lines = [title, f"{'class':<{width}}  {header}", rule]
    for i, name in enumerate(class_names):
        lines.append(f"{name:<{width}}  " + "  ".join(pct(result[c][i]) for c in columns))
    lines.append(rule)
    means = [result[MEANS[c]] if MEANS.get(c) in result else result[c].nanmean() for c in columns]
    lines.append(f"{'mean':<{width}}  " + "  ".join(pct(m) for m in means))
    for label, key in (("micro IoU", "IoU_micro"), ("micro F1", "F1_micro")):
        if key in result:
            lines.append(f"{label:<{width}}  {pct(result[key])}")
    lines.append(f"{'pixel acc':<{width}}  {pct(result['pixel_acc'])}")
    return "\n".join(lines)


def json_number(x: torch.Tensor) -> float | None:
    """JSON has no NaN: an undefined value (absent class) is null."""
    value = float(x)
    return None if value != value else value


def build_report(
    class_names: list[str],
    result: dict[str, torch.Tensor],
    columns: tuple[str, ...] = ("IoU", "acc"),
    summary: tuple[str, ...] = ("mIoU", "mAcc", "pixel_acc"),
) -> dict:
    """The numbers of a test run, JSON-ready: the `summary` values (those the result has), per
    class `columns` and ground-truth pixels ("pixels"; multilabel: the label's positive
    pixels, with its counts tp/fp/fn/tn), and the raw confusion matrix (one class per pixel:
    rows = ground truth, columns = prediction)."""
    pixels = result["pixels"] if "pixels" in result else result["confmat"].sum(1)
    counts = result.get("counts")  # (L, 4) [tp, fp, fn, tn] for multilabel
    report: dict = {k: json_number(result[k]) for k in dict.fromkeys(summary) if k in result}
    report["classes"] = []
    for i, name in enumerate(class_names):
        row = {"name": name, **{c: json_number(result[c][i]) for c in columns}}
        row["pixels"] = int(pixels[i])
        if counts is not None:
            row |= dict(zip(("tp", "fp", "fn", "tn"), (int(v) for v in counts[i]), strict=True))
        report["classes"].append(row)
    if "confmat" in result:
        report["confusion_matrix"] = result["confmat"].tolist()
    return report
