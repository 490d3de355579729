"""ValidationImages: the same few validation images, their ground truth and the model's prediction,
drawn every N validation epochs and at the end of fit.

    trainer:
      callbacks:
        - class_path: seglight.callbacks.ValidationImages
          init_args: {every_n_epochs: 2, num_images: 8}

Writes <log dir>/images/val_epoch<E>.png (E = 0-based epoch): one row per image — image, ground
truth overlay, prediction overlay — and a legend of the classes shown. Also logged to W&B (as
images with interactive masks) or TensorBoard when such a logger is active.
"""

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from PIL import Image

from seglight.errors import ConfigError
from seglight.render import IGNORE, class_colours, denormalize, draw_grid


class ValidationImages(L.Callback):
    """Draw a fixed set of validation images with ground truth and prediction overlays.

    Args:
        every_n_epochs: draw after every N-th validation of fit (and always at its end).
        num_images: number of validation images K, evenly spaced over the validation set
            (all of them when it has fewer); the same images every time.
        alpha: opacity of the class colours over the image.
        max_size: longest side of a tile in pixels; larger images are scaled down.
    """

    def __init__(
        self, every_n_epochs: int = 1, num_images: int = 8, alpha: float = 0.5, max_size: int = 256
    ) -> None:
        if every_n_epochs < 1:
            raise ConfigError(
                f"ValidationImages.every_n_epochs: must be >= 1, got {every_n_epochs}"
            )
        if num_images < 1:
            raise ConfigError(f"ValidationImages.num_images: must be >= 1, got {num_images}")
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"ValidationImages.alpha: must be in [0, 1], got {alpha}")
        self.every_n_epochs = every_n_epochs
        self.num_images = num_images
        self.alpha = alpha
        self.max_size = max_size
        self._validations = 0  # validations run during this fit (sanity check excluded)
        self._drawn_step = -1  # global step of the last drawing

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._validations, self._drawn_step = 0, -1

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        self._validations += 1
        if self._validations % self.every_n_epochs == 0:
            self.draw(trainer, pl_module, trainer.current_epoch)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._validations and self._drawn_step != trainer.global_step:
            # Fit has ended: current_epoch has already moved past the last epoch trained.
            self.draw(trainer, pl_module, max(0, trainer.current_epoch - 1))

    def draw(self, trainer: L.Trainer, pl_module: L.LightningModule, epoch: int) -> Path:
        """Write (rank 0) and log the grid of the current model as val_epoch<epoch>.png;
        returns the PNG's path."""
        # log_dir broadcasts from rank 0 under DDP: every process asks, only rank 0 draws
        # (the forward passes below are the plain module's, with no collective).
        folder = Path(trainer.log_dir or trainer.default_root_dir) / "images"
        path = folder / f"val_epoch{epoch}.png"
        self._drawn_step = trainer.global_step
        if not trainer.is_global_zero:
            return path
        dm = trainer.datamodule
        dataset = _val_dataset(trainer)
        names = list(getattr(pl_module, "class_names", None) or getattr(dm, "class_names", []))
        palette = class_colours(getattr(dm, "palette", None), len(names))  # (C, 3)
        channels = getattr(dm, "in_channels", 3)
        mean, std = getattr(dm, "mean", (0.0,) * channels), getattr(dm, "std", (1.0,) * channels)
        rows = []
        for index in pick_indices(len(dataset), self.num_images):
            sample = dataset[index]
            pred = _predict(pl_module, sample["image"])  # (H, W) int64; multilabel (L, H, W)
            image = denormalize(sample["image"], mean, std, getattr(dm, "rgb_bands", None))
            rows.append(self._scaled(image, sample["mask"].numpy(), pred, sample.get("name")))
        grid = draw_grid(rows, palette, names, self.alpha)
        folder.mkdir(parents=True, exist_ok=True)
        grid.save(path)
        self._log(trainer, rows, grid, names, epoch)
        return path

    def _scaled(self, image: np.ndarray, mask: np.ndarray, pred: np.ndarray, name: Any) -> dict:
        """Image, mask and prediction at the tile's size (longest side <= max_size)."""
        h, w = mask.shape[-2:]  # masks (H, W), or (L, H, W) for multi-label data
        scale = min(1.0, self.max_size / max(h, w))
        if scale < 1.0:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            image = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
            mask, pred = _resized(mask, size), _resized(pred, size)
        return {"image": image, "mask": mask.astype(np.int64), "pred": pred.astype(np.int64),
                "name": str(name) if name is not None else ""}  # fmt: skip

    def _log(self, trainer, rows: list[dict], grid: Image.Image, names: list[str], epoch) -> None:
        step = trainer.global_step
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                import wandb

                images = [
                    wandb.Image(row["image"], caption=row["name"], masks=_wandb_masks(row, names))
                    for row in rows
                ]
                logger.log_metrics({"val/predictions": images, "epoch": epoch}, step=step)
            elif isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image(
                    "val/predictions", np.asarray(grid), step, dataformats="HWC"
                )


def _resized(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of (H, W) or (L, H, W) (each label alone) to size (w, h)."""
    if mask.ndim == 3:
        return np.stack([_resized(m, size) for m in mask])
    return np.asarray(Image.fromarray(mask.astype(np.uint8)).resize(size, Image.NEAREST))


def _wandb_masks(row: dict, names: list[str]) -> dict:
    """W&B's interactive masks (each an (H, W) id map): one per kind, or for multi-label data
    one per kind and label (1 = the label, 0 = not, ignore = ignore)."""
    if row["mask"].ndim == 2:
        labels = {i: n for i, n in enumerate(names)} | {IGNORE: "ignore"}
        return {
            "ground_truth": {"mask_data": row["mask"], "class_labels": labels},
            "prediction": {"mask_data": row["pred"], "class_labels": labels},
        }
    return {
        f"{kind}/{name}": {
            "mask_data": row[key][i],
            "class_labels": {0: f"not {name}", 1: name, IGNORE: "ignore"},
        }
        for key, kind in (("mask", "ground_truth"), ("pred", "prediction"))
        for i, name in enumerate(names)
    }


def pick_indices(length: int, count: int) -> list[int]:
    """`count` evenly spaced indices of range(length), first and last included; all of them
    when there are fewer. Deterministic: the same images at every epoch and run."""
    if length <= count:
        return list(range(length))
    return np.linspace(0, length - 1, count).round().astype(int).tolist()


def _val_dataset(trainer: L.Trainer):
    loaders = trainer.val_dataloaders
    loader = loaders[0] if isinstance(loaders, list | tuple) else loaders
    if loader is None:
        raise ConfigError("ValidationImages: the data module has no validation set")
    return loader.dataset


@torch.no_grad()
def _predict(pl_module: L.LightningModule, image: torch.Tensor) -> np.ndarray:
    """Class ids (H, W) (multilabel: (L, H, W) 0/1) for one normalized image (C, H, W), in
    eval mode; training mode is restored after (the callback may run in the middle of fit)."""
    was_training = pl_module.training
    pl_module.eval()
    try:
        batch = image[None].to(pl_module.device, pl_module.dtype)  # (1, 3, H, W)
        logits = pl_module.evaluation_logits(batch)  # (1, C, H, W)
        return pl_module.predict_masks(logits)[0].cpu().numpy()  # (H, W) or (L, H, W)
    finally:
        pl_module.train(was_training)
