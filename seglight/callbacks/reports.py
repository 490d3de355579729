"""ClassReport: the per-class table after test/validate, and the test report files."""

import csv
import json
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only

from seglight.render import confusion_image


class ClassReport(L.Callback):
    """Print IoU and accuracy per class after `test` and `validate` (not during fit); after
    `test`, also write test_report.json, test_report.csv and test_confusion.png (rows = ground
    truth, normalized per row) into the run's log dir."""

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._print(pl_module, "test")
        # log_dir broadcasts from rank 0 under DDP: every process must ask, only rank 0 writes.
        self._write(Path(trainer.log_dir or trainer.default_root_dir), trainer, pl_module)

    @rank_zero_only
    def _write(self, folder: Path, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        result = getattr(pl_module, "last_metrics", {}).get("test")
        if result is None:
            return
        folder.mkdir(parents=True, exist_ok=True)
        report = build_report(pl_module.class_names, result)
        report["checkpoint"] = str(trainer.ckpt_path) if trainer.ckpt_path else None
        report["protocol"] = getattr(pl_module, "protocol_description", "whole")
        report["task"] = getattr(pl_module, "task", "multiclass")
        if report["task"] == "binary":  # the decision threshold and the foreground's numbers
            report["threshold"] = pl_module.threshold
            for key in ("fg_IoU", "fg_dice", "fg_precision", "fg_recall", "mIoU_2class"):
                report[key] = json_number(result[key])
        (folder / "test_report.json").write_text(json.dumps(report, indent=2))
        with open(folder / "test_report.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["class", "IoU", "acc", "pixels"])
            for row in report["classes"]:
                writer.writerow([row["name"], row["IoU"], row["acc"], row["pixels"]])
        confusion_image(result["confmat"], pl_module.class_names).save(
            folder / "test_confusion.png"
        )
        print(f"test report: {folder}/test_report.json, .csv, test_confusion.png")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "validate":
            self._print(pl_module, "val")

    @rank_zero_only
    def _print(self, pl_module: L.LightningModule, stage: str) -> None:
        result = getattr(pl_module, "last_metrics", {}).get(stage)
        if result is None:
            return
        print(format_class_table(pl_module.class_names, result, title=f"{stage} per class"))


def format_class_table(class_names: list[str], result: dict[str, torch.Tensor], title: str) -> str:
    """A plain-text table: one row per class (IoU, accuracy in %), then mIoU / mAcc / pixel acc.

    Classes absent from both ground truth and prediction show "-" and are left out of mIoU.
    """

    def pct(x: torch.Tensor) -> str:
        return "-" if torch.isnan(x) else f"{100 * float(x):6.2f}"

    width = max(12, *(len(n) for n in class_names))
    lines = [title, f"{'class':<{width}}  {'IoU':>6}  {'Acc':>6}", "-" * (width + 16)]
    for name, iou, acc in zip(class_names, result["IoU"], result["acc"], strict=True):
        lines.append(f"{name:<{width}}  {pct(iou)}  {pct(acc)}")
    lines.append("-" * (width + 16))
    lines.append(f"{'mean':<{width}}  {pct(result['mIoU'])}  {pct(result['mAcc'])}")
    lines.append(f"{'pixel acc':<{width}}  {pct(result['pixel_acc'])}")
    return "\n".join(lines)


def json_number(x: torch.Tensor) -> float | None:
    """JSON has no NaN: an undefined value (absent class) is null."""
    value = float(x)
    return None if value != value else value


def build_report(class_names: list[str], result: dict[str, torch.Tensor]) -> dict:
    """The numbers of a test run, JSON-ready: means, per class IoU / acc / ground-truth pixels,
    and the raw confusion matrix (rows = ground truth, columns = prediction)."""
    confmat = result["confmat"]
    pixels = confmat.sum(1).tolist()
    return {
        "mIoU": json_number(result["mIoU"]),
        "mAcc": json_number(result["mAcc"]),
        "pixel_acc": json_number(result["pixel_acc"]),
        "classes": [
            {"name": name, "IoU": json_number(iou), "acc": json_number(acc), "pixels": int(n)}
            for name, iou, acc, n in zip(
                class_names, result["IoU"], result["acc"], pixels, strict=True
            )  # fmt: skip
        ],
        "confusion_matrix": confmat.tolist(),
    }
