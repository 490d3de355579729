"""Prediction writers: MaskWriter (palette PNGs, dataset ids, overlays) and PredictionFailures
(the input files a `predict` run skipped)."""

import sys
from pathlib import Path, PurePosixPath
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from PIL import Image

from seglight.errors import ConfigError
from seglight.render import denormalize, flat_palette, overlay


class MaskWriter(BasePredictionWriter):
    """Write each predicted mask as a palette PNG: pixel values are class indices, the palette
    gives each class its dataset colour (so the file opens as a colour image). Multi-label
    predictions: one 0/1 PNG per label, `<output_dir>/<label>/<output>.png` (1 = the pixel
    carries the label, in its colour): the layout `FolderDataModule` reads masks from.

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
        palette = flat_palette(getattr(trainer.datamodule, "palette", None))
        # (B, H, W), multilabel (B, L, H, W); B = 0 if no image was read
        masks = prediction.to(torch.uint8).cpu().numpy()
        labels = list(pl_module.class_names) if masks.ndim == 4 else None
        lut = self._native_lut(trainer)
        if labels and lut is not None:
            raise ConfigError("MaskWriter.native_ids: multi-label predictions have no dataset "
                              "ids; set native_ids: false")  # fmt: skip
        sizes = batch.get("size")
        images = self._rgb(trainer, batch["image"]) if self.overlay else None  # (B, H, W, 3)
        outputs, names = batch.get("output"), batch.get("name")
        for i, mask in enumerate(masks):
            h, w = mask.shape[-2:] if sizes is None else (int(v) for v in sizes[i])
            mask = mask[..., :h, :w]
            if outputs:  # already without extension; one it kept is part of the name
                stem = _output_stem(outputs[i], strip_extension=False)
            else:
                stem = _output_stem(names[i]) if names else f"{batch_idx:06d}_{i:03d}"
            if images is not None:
                self._write_overlay(folder, stem, images[i, :h, :w], mask, palette)
            if labels:
                self._write_labels(folder, stem, mask, labels, palette)
                continue
            path = folder / f"{stem}.png"
            path.parent.mkdir(parents=True, exist_ok=True)  # mirrored sub-folders
            if lut is not None:
                Image.fromarray(lut[mask], mode="L").save(path)
                continue
            image = Image.fromarray(np.ascontiguousarray(mask), mode="P")
            image.putpalette(palette)
            image.save(path)

    @staticmethod
    def _write_labels(folder: Path, stem: str, mask: np.ndarray, labels: list[str], palette):
        """Multi-label (L, h, w) 0/1: <folder>/<label>/<stem>.png per label, the layout the folder
        data module reads (pixel 1 = carries the label, shown in the label's colour)."""
        for i, (label, values) in enumerate(zip(labels, mask, strict=True)):
            path = folder / _output_stem(label, strip_extension=False) / f"{stem}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            image = Image.fromarray(np.ascontiguousarray(values), mode="P")
            image.putpalette([0, 0, 0, *palette[3 * i : 3 * i + 3]] + [255] * (768 - 6))
            image.save(path)

    @staticmethod
    def _rgb(trainer: L.Trainer, images: torch.Tensor) -> np.ndarray:
        """Normalized (B, 3, H, W) batch back to (B, H, W, 3) uint8 with the data's mean/std."""
        dm = trainer.datamodule
        c = images.shape[1]
        mean, std = getattr(dm, "mean", (0.0,) * c), getattr(dm, "std", (1.0,) * c)
        return denormalize(images, mean, std, getattr(dm, "rgb_bands", None))

    def _write_overlay(self, folder: Path, stem: str, image, mask, palette) -> None:
        colours = np.asarray(palette, np.uint8).reshape(256, 3)[:255]  # (255, 3): ignore left out
        path = folder / "overlays" / f"{stem}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(overlay(image, mask, colours, self.overlay_alpha)).save(path, quality=90)

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
