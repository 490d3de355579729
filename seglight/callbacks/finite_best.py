"""FiniteBestCheckpoint: a ModelCheckpoint whose best/top-k checkpoints only ever hold finite
scores, whose last.ckpt is the last one, which saves nothing under fast_dev_run, and whose folder
follows the run's default_root_dir (it was seglight.best_checkpoint.ModelCheckpoint).
Every recipe in configs/ lists it through configs/shared/best_checkpoint.yaml.

What Lightning 2.6's own ModelCheckpoint does (lightning/pytorch/callbacks/model_checkpoint.py):
- NaN while fewer than save_top_k checkpoints are kept (the first validation with save_top_k=1,
  every one with save_top_k=-1): saved, and recorded as -inf (mode max) or +inf (mode min), so
  best.ckpt can be a diverged model with best_model_score -inf.
- +inf with mode max (-inf with mode min) beats every finite score: saved as the best.
- last.ckpt is written only when a top-k checkpoint was written at the same step, so after an
  epoch that did not improve, last.ckpt is an older epoch (see openclimatefix/pvnet#544).
- fast_dev_run skips every save but one: `on_train_end` writes last.ckpt when save_last is set,
  so a smoke test overwrites the resume point of the real run in the same folder.
- dirpath null means <logger save_dir>/<name>/<version>/checkpoints: a new folder per logger
  version, so `--ckpt_path last` and the documented outputs/<name>/checkpoints/best.ckpt would
  not find the files.
"""

import os

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint as LightningModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor

from seglight.errors import NonFiniteLossError


class FiniteBestCheckpoint(LightningModelCheckpoint):
    """Lightning's ModelCheckpoint (same arguments) with these differences: a nan/inf monitored
    value is never saved or recorded as a best/top-k checkpoint (a warning says so); with
    save_last=true, last.ckpt is written at every save trigger (each validation, by default),
    not only when the score improved; a seglight.errors.NonFiniteLossError is never followed
    by a checkpoint, even with save_on_exception=true (the BatchNorm statistics, at least,
    already hold the nan); under fast_dev_run nothing at all is written; and dirpath null
    means <trainer.default_root_dir>/checkpoints (see `resolve_dirpath`)."""

    _last_saved_step: int | None = None  # global step last.ckpt was written at, by this run

    @property
    def state_key(self) -> str:
        # The key checkpoints written before the rename hold (the class was
        # seglight.best_checkpoint.ModelCheckpoint): resuming one keeps its best score.
        key = super().state_key
        if type(self) is FiniteBestCheckpoint:
            key = key.replace("FiniteBestCheckpoint", "ModelCheckpoint", 1)
        return key

    def resolve_dirpath(self, trainer: Trainer) -> str:
        """The folder checkpoints go to: dirpath when given, else
        <trainer.default_root_dir>/checkpoints (made absolute, as a given dirpath is), so that
        --trainer.default_root_dir moves the checkpoints and reruns find last.ckpt there. Fixed
        on first use; the CLI calls it as soon as the trainer exists."""
        if self.dirpath is None:
            folder = os.path.join(trainer.default_root_dir, "checkpoints")
            self.dirpath = os.path.realpath(os.path.expanduser(folder))
        return str(self.dirpath)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.resolve_dirpath(trainer)
        super().setup(trainer, pl_module, stage)

    def _find_last_checkpoints(self, trainer: Trainer) -> set[str]:
        self.resolve_dirpath(trainer)  # `--ckpt_path last` is resolved before setup
        return super()._find_last_checkpoints(trainer)

    def _save_checkpoint(self, trainer: Trainer, filepath: str) -> None:
        if trainer.fast_dev_run:  # every save goes through here: none at all in a smoke test
            return
        super()._save_checkpoint(trainer, filepath)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.fast_dev_run:  # Lightning's writes last.ckpt here even under fast_dev_run
            return
        super().on_train_end(trainer, pl_module)

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
