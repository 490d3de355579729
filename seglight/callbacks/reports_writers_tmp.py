"""Callbacks: the per-class table after test/validate, and predicted masks written as PNGs."""

import csv
import json
import sys
from pathlib import Path, PurePosixPath
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_only
from PIL import Image, ImageDraw

from seglight.data.voc import voc_palette
from seglight.errors import ConfigError


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


def _number(x: torch.Tensor) -> float | None:
    """JSON has no NaN: an undefined value (absent class) is null."""
    value = float(x)
    return None if value != value else value


def build_report(class_names: list[str], result: dict[str, torch.Tensor]) -> dict:
    """The numbers of a test run, JSON-ready: means, per class IoU / acc / ground-truth pixels,
    and the raw confusion matrix (rows = ground truth, columns = prediction)."""
    confmat = result["confmat"]
    pixels = confmat.sum(1).tolist()
    return {
        "mIoU": _number(result["mIoU"]),
        "mAcc": _number(result["mAcc"]),
        "pixel_acc": _number(result["pixel_acc"]),
        "classes": [
            {"name": name, "IoU": _number(iou), "acc": _number(acc), "pixels": int(n)}
            for name, iou, acc, n in zip(
                class_names, result["IoU"], result["acc"], pixels, strict=True
            )  # fmt: skip
        ],
        "confusion_matrix": confmat.tolist(),
    }


def confusion_image(confmat: torch.Tensor, class_names: list[str]) -> Image.Image:
    """The confusion matrix as a picture: cell (i, j) = share of class i's pixels predicted as
    j (rows sum to 1), white = 0 to dark blue = 1; class names on the left when they fit."""
    c = confmat.shape[0]
    rows = confmat.double() / confmat.sum(1, keepdim=True).clamp(min=1)  # (C, C) in [0, 1]
    cell = max(4, min(40, 640 // c))
    margin = 8 + 7 * max(len(n) for n in class_names) if c <= 40 else 0
    white, blue = np.array([255, 255, 255]), np.array([8, 48, 107])
    colours = (white + (blue - white) * rows.numpy()[..., None]).astype(np.uint8)  # (C, C, 3)
    grid = np.kron(colours, np.ones((cell, cell, 1), np.uint8))  # (C*cell, C*cell, 3)
    image = Image.new("RGB", (margin + grid.shape[1], grid.shape[0]), "white")
    image.paste(Image.fromarray(grid), (margin, 0))
    if margin:
        draw = ImageDraw.Draw(image)
        for i, name in enumerate(class_names):
            draw.text((2, i * cell + max(0, cell // 2 - 6)), name, fill="black")
    return image


class MaskWriter(BasePredictionWriter):
    """Write each predicted mask as a palette PNG: pixel values are class indices, the palette
    gives each class its dataset colour (so the file opens as a colour image).

    Each mask is cropped to batch["size"], the image's own size, and written to
    `<output_dir>/<output>.png`, where <output> is batch["output"][i] when the batch has it
    (`--data.predict_dir` folders: the input tree mirrored, a/b/x.jpg -> a/b/x.png; inputs of
    one folder that differ only by extension keep it: photo.jpg -> photo.jpg.png and photo.png
    -> photo.png.png, see seglight.data.predict.output_names), else batch["name"][i] without its
    extension (its sub-folders mirrored too). Overlays go to `<output_dir>/overlays/<output>.jpg`.

    Args:
        output_dir: folder for the PNGs; null = <trainer.default_root_dir>/predictions.
        native_ids: write the dataset's own label ids instead (e.g. Cityscapes labelIds, what
            the official evaluation script reads) as 8-bit grey PNGs; needs a data module
            with a `native_ids` table (training id -> dataset id).
        overlay: also write `overlays/<name>.jpg`: the class colours blended over the image.
        overlay_alpha: opacity of the class colours in the overlay.
    """

    def __init__(
        self,
        output_dir: str | None = None,
        native_ids: bool = False,
        overlay: bool = False,
        overlay_alpha: float = 0.5,
    ) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = output_dir
        self.native_ids = native_ids
        self.overlay = overlay
        if not 0 <= overlay_alpha <= 1:
            raise ConfigError(f"MaskWriter.overlay_alpha: must be in [0, 1], got {overlay_alpha}")
        self.overlay_alpha = overlay_alpha

    def _folder(self, trainer: L.Trainer) -> Path:
        # Beside the run's checkpoints, not in a new logger version folder per `predict`.
        return Path(self.output_dir or Path(trainer.default_root_dir) / "predictions")

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: torch.Tensor,
        batch_indices: Any,
        batch: dict[str, Any],
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        folder = self._folder(trainer)
        folder.mkdir(parents=True, exist_ok=True)
        palette = _flat_palette(getattr(trainer.datamodule, "palette", None))
        masks = prediction.to(torch.uint8).cpu().numpy()  # (B, H, W); B = 0 if no image was read
        lut = self._native_lut(trainer)
        sizes = batch.get("size")
        images = self._rgb(trainer, batch["image"]) if self.overlay else None  # (B, H, W, 3)
        outputs, names = batch.get("output"), batch.get("name")
        for i, mask in enumerate(masks):
            h, w = mask.shape if sizes is None else (int(v) for v in sizes[i])
            mask = mask[:h, :w]
            if outputs:  # already without extension; one it kept is part of the name
                stem = _output_stem(outputs[i], strip_extension=False)
            else:
                stem = _output_stem(names[i]) if names else f"{batch_idx:06d}_{i:03d}"
            if images is not None:
                self._write_overlay(folder, stem, images[i, :h, :w], mask, palette)
            path = folder / f"{stem}.png"
            path.parent.mkdir(parents=True, exist_ok=True)  # mirrored sub-folders
            if lut is not None:
                Image.fromarray(lut[mask], mode="L").save(path)
                continue
            image = Image.fromarray(np.ascontiguousarray(mask), mode="P")
            image.putpalette(palette)
            image.save(path)

    @staticmethod
    def _rgb(trainer: L.Trainer, images: torch.Tensor) -> np.ndarray:
        """Normalized (B, 3, H, W) batch back to (B, H, W, 3) uint8 with the data's mean/std."""
        dm = trainer.datamodule
        mean = torch.tensor(getattr(dm, "mean", (0.0, 0.0, 0.0))).view(1, 3, 1, 1)
        std = torch.tensor(getattr(dm, "std", (1.0, 1.0, 1.0))).view(1, 3, 1, 1)
        rgb = (images.detach().float().cpu() * std + mean).clamp(0, 1) * 255
        return rgb.round().to(torch.uint8).permute(0, 2, 3, 1).numpy()

    def _write_overlay(self, folder: Path, stem: str, image, mask, palette) -> None:
        colours = np.asarray(palette, np.float32).reshape(256, 3)[mask]  # (H, W, 3)
        labelled = (mask != 255)[..., None]
        a = self.overlay_alpha
        blended = np.where(labelled, (1 - a) * image + a * colours, image)
        path = folder / "overlays" / f"{stem}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(blended.astype(np.uint8)).save(path, quality=90)

    def _native_lut(self, trainer: L.Trainer) -> np.ndarray | None:
        """(256,) uint8: training id -> dataset id (ignore stays 255), or None."""
        if not self.native_ids:
            return None
        table = getattr(trainer.datamodule, "native_ids", None)
        if table is None:
            raise ConfigError(
                f"MaskWriter.native_ids: {type(trainer.datamodule).__name__} has no native id "
                "table; set native_ids: false"
            )
        lut = np.full(256, 255, np.uint8)
        lut[: len(table)] = table
        return lut


def _output_stem(name: str, strip_extension: bool = True) -> str:
    """A sample's name as a relative output path: its folders kept, its extension dropped
    ("a/b/x.jpg" -> "a/b/x") unless `strip_extension` is false, and "..", "." and a leading "/"
    removed, so that nothing is written outside the output folder."""
    parts = [p for p in PurePosixPath(str(name)).parts if p not in ("/", ".", "..")]
    if not parts:
        return "unnamed"
    path = PurePosixPath(*parts)
    return str(path.with_suffix("")) if strip_extension and path.suffix else str(path)


class PredictionFailures(L.Callback):
    """The input files a `predict` run skipped because they could not be read or transformed
    (batch["failed"], see seglight.data.predict), printed to stderr after the run, one line per
    file with the reason. Under DDP the lists of all processes are gathered: complete on every
    process and printed once, by rank 0. `seglight predict` adds this callback and then exits
    with status 1 when a file failed; `failures` holds the (path, reason) pairs, sorted."""

    def __init__(self) -> None:
        self.failures: list[tuple[str, str]] = []

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.failures = []

    def on_predict_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if isinstance(batch, dict):
            self.failures.extend((str(p), str(r)) for p, r in batch.get("failed", ()))

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.failures = sorted(_gather_lists(self.failures))
        if self.failures and trainer.is_global_zero:
            sys.stderr.write(self.report(_predict_size(trainer)) + "\n")

    def report(self, total: int | None = None) -> str:
        """A header line, then "  <file>: <reason>" per failure."""
        of = f" of {total}" if total else ""
        lines = [f"seglight: predict: {len(self.failures)}{of} images could not be read and were "
                 "skipped (no mask written for them):"]  # fmt: skip
        lines += [f"  {path}: {reason}" for path, reason in self.failures]
        return "\n".join(lines)


def _gather_lists(items: list) -> list:
    """The concatenation of `items` over all processes (under DDP), in rank order."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return list(items)
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, list(items))
    return [item for part in parts for item in part]


def _predict_size(trainer: L.Trainer) -> int | None:
    """Number of samples in the predict loader(s) (all processes), or None when unknown."""
    loaders = trainer.predict_dataloaders
    loaders = loaders if isinstance(loaders, list | tuple) else [loaders]
    try:
        return sum(len(loader.dataset) for loader in loaders)
    except (AttributeError, TypeError):
        return None


def _flat_palette(palette: list[list[int]] | None) -> list[int]:
    """768 ints for PIL: class colours first (the VOC colour map when the dataset has none),
    white for ignore (255)."""
    flat = [0] * 768
    for i, rgb in enumerate(palette or voc_palette(255)):
        flat[3 * i : 3 * i + 3] = list(rgb)
    flat[765:768] = [255, 255, 255]
    return flat
