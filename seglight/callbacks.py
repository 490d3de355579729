"""Callbacks: the per-class table after test/validate, and predicted masks written as PNGs."""

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_only
from PIL import Image

from seglight.errors import ConfigError


class ClassReport(L.Callback):
    """Print IoU and accuracy per class after `test` and `validate` (not during fit)."""

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._print(pl_module, "test")

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


class MaskWriter(BasePredictionWriter):
    """Write each predicted mask as a palette PNG: pixel values are class indices, the palette
    gives each class its dataset colour (so the file opens as a colour image).

    Files are named after batch["name"] and cropped to batch["size"], the image's own size.

    Args:
        output_dir: folder for the PNGs; null = "predictions" inside the run's log dir.
        native_ids: write the dataset's own label ids instead (e.g. Cityscapes labelIds, what
            the official evaluation script reads) as 8-bit grey PNGs; needs a data module
            with a `native_ids` table (training id -> dataset id).
    """

    def __init__(self, output_dir: str | None = None, native_ids: bool = False) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = output_dir
        self.native_ids = native_ids

    def _folder(self, trainer: L.Trainer) -> Path:
        base = self.output_dir or str(
            Path(trainer.log_dir or trainer.default_root_dir) / "predictions"
        )
        return Path(base)

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
        masks = prediction.to(torch.uint8).cpu().numpy()  # (B, H, W)
        lut = self._native_lut(trainer)
        sizes = batch.get("size")
        for i, mask in enumerate(masks):
            if sizes is not None:
                h, w = (int(v) for v in sizes[i])
                mask = mask[:h, :w]
            name = batch["name"][i] if "name" in batch else f"{batch_idx:06d}_{i:03d}"
            if lut is not None:
                Image.fromarray(lut[mask], mode="L").save(folder / f"{Path(name).stem}.png")
                continue
            image = Image.fromarray(np.ascontiguousarray(mask), mode="P")
            image.putpalette(palette)
            image.save(folder / f"{Path(name).stem}.png")

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


def _flat_palette(palette: list[list[int]] | None) -> list[int]:
    """768 ints for PIL: class colours first, white for ignore (255), black elsewhere."""
    flat = [0] * 768
    for i, rgb in enumerate(palette or []):
        flat[3 * i : 3 * i + 3] = list(rgb)
    flat[765:768] = [255, 255, 255]
    return flat
