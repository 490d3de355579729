"""WandbClassMetrics: per-class IoU/acc table and confusion matrix into W&B after each validation
and after test, read from `pl_module.last_metrics[stage]` (computed once by the module)."""

from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger
from lightning.pytorch.utilities import rank_zero_only

from seglight.callbacks.reports import json_number, report_columns
from seglight.render import confusion_image

# W&B's table limit (wandb.Table.MAX_ROWS); a larger confusion matrix is logged as a picture.
MAX_TABLE_ROWS = 10000


def wandb_loggers(trainer: L.Trainer) -> list[LightningWandbLogger]:
    return [lg for lg in trainer.loggers if isinstance(lg, LightningWandbLogger)]


class WandbClassMetrics(L.Callback):
    """With a W&B logger: `<stage>/per_class` (class, IoU, acc, pixels; multilabel: label, IoU,
    F1, precision, recall, pixels) and `<stage>/confusion`
    (W&B's confusion-matrix chart from the pixel counts; a PNG when it has more than 10000
    non-zero cells) after each validation during fit and after test. Does nothing otherwise."""

    # *_end, not *_epoch_end: callbacks' epoch-end hooks run before the module's, which is
    # where last_metrics is computed.
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._log(trainer, pl_module, "val")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log(trainer, pl_module, "test")

    @rank_zero_only
    def _log(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        loggers = wandb_loggers(trainer)
        result = getattr(pl_module, "last_metrics", {}).get(stage)
        if not loggers or result is None:
            return
        logged = class_metrics_media(
            pl_module.class_names, result, stage, report_columns(pl_module)
        )
        for logger in loggers:
            logger.log_metrics(logged, step=trainer.global_step)


def class_metrics_media(
    class_names: list[str],
    result: dict[str, torch.Tensor],
    stage: str,
    columns: tuple[str, ...] = ("IoU", "acc"),
) -> dict[str, Any]:
    """{"<stage>/per_class": wandb.Table, "<stage>/confusion": chart or wandb.Image} from the
    module's last metrics: `columns` (C,) per class (multilabel: IoU, F1, precision, recall per
    label, and no confusion matrix), confmat (C, C) counts, rows = ground truth."""
    import wandb

    pixels = result["pixels"] if "pixels" in result else result["confmat"].sum(1)
    rows = [
        [name, *(json_number(result[c][i]) for c in columns), int(pixels[i])]
        for i, name in enumerate(class_names)
    ]
    table = wandb.Table(columns=["class", *columns, "pixels"], data=rows)
    if "confmat" not in result:
        return {f"{stage}/per_class": table}
    confmat = result["confmat"].long()
    # Only non-zero cells: the chart treats missing ones as 0, and W&B tables have a row limit.
    nonzero = confmat.nonzero().tolist()
    if len(nonzero) <= MAX_TABLE_ROWS:
        cells = [[class_names[i], class_names[j], int(confmat[i, j])] for i, j in nonzero]
        confusion = wandb.plot_table(
            "wandb/confusion_matrix/v1",
            wandb.Table(columns=["Actual", "Predicted", "nPredictions"], data=cells),
            {"Actual": "Actual", "Predicted": "Predicted", "nPredictions": "nPredictions"},
            {"title": f"{stage} confusion (pixels)"},
        )
    else:
        confusion = wandb.Image(confusion_image(confmat, class_names))
    return {f"{stage}/per_class": table, f"{stage}/confusion": confusion}
