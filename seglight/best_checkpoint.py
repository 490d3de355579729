"""ModelCheckpoint whose best/top-k checkpoints only ever hold finite scores, and whose last.ckpt
is the last one. Used by every config in configs/:

    callbacks:
      - class_path: seglight.best_checkpoint.ModelCheckpoint
        init_args: {dirpath: ..., filename: best, monitor: val/mIoU, mode: max, save_last: true}

What Lightning 2.6's own ModelCheckpoint does (lightning/pytorch/callbacks/model_checkpoint.py):
- NaN while fewer than save_top_k checkpoints are kept (the first validation with save_top_k=1,
  every one with save_top_k=-1): saved, and recorded as -inf (mode max) or +inf (mode min), so
  best.ckpt can be a diverged model with best_model_score -inf.
- +inf with mode max (-inf with mode min) beats every finite score: saved as the best.
- last.ckpt is written only when a top-k checkpoint was written at the same step, so after an
  epoch that did not improve, last.ckpt is an older epoch (see openclimatefix/pvnet#544).
"""

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint as LightningModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor

from seglight.errors import NonFiniteLossError


class ModelCheckpoint(LightningModelCheckpoint):
    """Lightning's ModelCheckpoint (same arguments) with three differences: a nan/inf monitored
    value is never saved or recorded as a best/top-k checkpoint (a warning says so); with
    save_last=true, last.ckpt is written at every save trigger (each validation, by default),
    not only when the score improved; and a seglight.errors.NonFiniteLossError is never
    followed by a checkpoint, even with save_on_exception=true (the BatchNorm statistics, at
    least, already hold the nan)."""

    _last_saved_step: int | None = None  # global step last.ckpt was written at, by this run

    def check_monitor_top_k(self, trainer: Trainer, current: Tensor | None = None) -> bool:
        if current is not None:
            # All ranks decide together: an unsynced metric may be nan on one rank only, and
            # the parent's decision is a collective that all ranks must enter or none.
            finite = bool(torch.isfinite(torch.as_tensor(current)).all())
            if not trainer.strategy.reduce_boolean_decision(finite, all=True):
                rank_zero_warn(
                    f"{self.monitor} = {float(current)} at epoch {trainer.current_epoch}, global "
                    f"step {trainer.global_step}: not finite, so not considered for the best "
                    f"checkpoint (best so far: {self.best_model_path or 'none'})"
                )
                return False
        return super().check_monitor_top_k(trainer, current)

    def _save_topk_checkpoint(
        self, trainer: Trainer, monitor_candidates: dict[str, Tensor]
    ) -> None:
        super()._save_topk_checkpoint(trainer, monitor_candidates)
        # Lightning writes last.ckpt after this only if a top-k checkpoint was just written;
        # write it here otherwise ("link" keeps Lightning's meaning: a link to the last one).
        if self.save_last is True and self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, monitor_candidates)

    def _save_last_checkpoint(
        self, trainer: Trainer, monitor_candidates: dict[str, Tensor]
    ) -> None:
        if self.save_last is True and self._last_saved_step == trainer.global_step:
            return  # written above at this very step; Lightning's caller asks a second time
        super()._save_last_checkpoint(trainer, monitor_candidates)
        if self.save_last:
            self._last_saved_step = trainer.global_step

    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None:
        if isinstance(exception, NonFiniteLossError):
            if self.save_on_exception:
                rank_zero_info("seglight: no checkpoint saved on a non-finite loss")
            return
        super().on_exception(trainer, pl_module, exception)
