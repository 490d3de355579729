"""What a nan/inf training loss does (`model.nonfinite_loss`): stop with a one-line report, skip
the batch, or nothing.

    python -m seglight fit --config configs/quickstart.yaml --model.nonfinite_loss=skip

SegmentationModule.training_step calls `begin` before the forward and `check` after it, and
`before_optimizer_step` from its hook of that name; the rest is here. Under DDP all processes
decide together: they must all stop or all skip, else the others would wait forever in the next
gradient all-reduce.
"""

import math
import warnings
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch

from seglight.errors import ConfigError, NonFiniteLossError

NonFiniteLoss = Literal["stop", "skip", "off"]


class NonFiniteGuard:
    """The check of one module (see SegmentationModule's nonfinite_loss, nonfinite_batch_dir).

    "stop" raises seglight.errors.NonFiniteLossError naming the loss terms, epoch, global step
    and the batch's files; "skip" drops the batch (no optimizer step, BatchNorm statistics
    restored), warns with the same details and counts it in `train/skipped_nonfinite`; "off"
    checks nothing (saves the one host sync per step the check costs)."""

    def __init__(self, mode: NonFiniteLoss = "stop", batch_dir: str | None = None) -> None:
        if mode not in ("stop", "skip", "off"):
            raise ConfigError(
                f"model.nonfinite_loss: expected 'stop', 'skip' or 'off', got {mode!r}"
            )
        self.mode = mode
        self.batch_dir = batch_dir
        self.skipped = 0  # batches skipped in this run (mode "skip")
        self._window_has_update = True  # skip mode: a finite batch in this accumulation window

    def begin(self, module: L.LightningModule, batch_idx: int) -> list[torch.Tensor]:
        """Before the forward: in skip mode, a copy of the buffers to undo a skipped batch's
        BatchNorm update with (buffers only, not weights: ~10k floats for a resnet18 Unet)."""
        if self.mode != "skip":
            return []
        if batch_idx % module.trainer.accumulate_grad_batches == 0:
            self._window_has_update = False  # a new gradient-accumulation window starts
        return [b.detach().clone() for b in module.buffers()]

    def check(
        self,
        module: L.LightningModule,
        out: dict[str, torch.Tensor],
        batch: dict[str, Any],
        batch_idx: int,
        saved_buffers: list[torch.Tensor],
    ) -> torch.Tensor | None:
        """None when the step goes on as usual; in skip mode, the loss to return instead of a
        non-finite one; in stop mode, raises NonFiniteLossError."""
        if self.mode == "off":
            return None
        size = batch["image"].shape[0]
        bad_ranks = self._nonfinite_ranks(module, out["loss"])
        if not bad_ranks:
            if self.mode == "skip":
                self._window_has_update = True
                self._log_skipped(module, size)
            return None
        message = self._report(module, out, batch, batch_idx, bad_ranks)
        if self.mode == "stop":
            raise NonFiniteLossError(message)
        with torch.no_grad():
            for buffer, saved in zip(module.buffers(), saved_buffers, strict=True):
                buffer.copy_(saved)
        self.skipped += 1
        warnings.warn(f"skipping the batch: {message}", RuntimeWarning, stacklevel=1)
        self._log_skipped(module, size)
        return _zero_gradient_loss(module)

    def before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Skip mode: a window of only skipped batches holds zero gradients; None instead makes
        # the optimizer leave every parameter alone (no weight decay, no momentum, no step
        # count), as after a training_step returning None. A window with some finite batches
        # steps on their gradients (each still divided by accumulate_grad_batches).
        if self.mode == "skip" and not self._window_has_update:
            optimizer.zero_grad(set_to_none=True)

    @staticmethod
    def _nonfinite_ranks(module: L.LightningModule, loss: torch.Tensor) -> list[int]:
        """The ranks whose loss is nan/inf at this step, the same list on every process.
        Cost: one host sync per step and, under DDP, one all-reduce of world_size ints."""
        trainer = module.trainer
        flags = torch.zeros(trainer.world_size, dtype=torch.int32, device=loss.device)
        flags[module.global_rank] = (~torch.isfinite(loss.detach())).int()
        flags = trainer.strategy.reduce(flags, reduce_op="sum")  # identity on one process
        return flags.nonzero().flatten().tolist()

    def _report(
        self,
        module: L.LightningModule,
        out: dict[str, torch.Tensor],
        batch: dict[str, Any],
        batch_idx: int,
        ranks: list[int],
    ) -> str:
        """One line: the loss and its non-finite terms, where, the batch's files, and the file
        the batch was saved to. Runs only when a loss was non-finite."""
        where = f"epoch {module.current_epoch}, global step {module.global_step}, batch {batch_idx}"
        world, rank = module.trainer.world_size, module.global_rank
        if rank not in ranks:  # this process's loss is finite; another's is not
            return f"non-finite training loss on process rank(s) {ranks} of {world} at {where}"
        losses = {k: float(v.detach()) for k, v in out.items() if k != "logits"}
        terms = [f"{k}={v}" for k, v in losses.items() if k != "loss" and not math.isfinite(v)]
        names = [str(n) for n in batch.get("name", [])]
        finite_images = torch.isfinite(batch["image"]).flatten(1).all(1).tolist()  # (B,)
        bad_images = [n for n, ok in zip(names, finite_images, strict=False) if not ok]
        text = f"non-finite training loss {losses['loss']} at {where}"
        if terms:
            text += f" (non-finite terms: {', '.join(terms)})"
        if world > 1:
            text += f" on process rank {rank} of {world}"
        text += f"; batch files: {', '.join(names) if names else '(no batch[name])'}"
        if bad_images:
            text += f" (non-finite input image: {', '.join(bad_images)})"
        if self.batch_dir is not None:
            text += f"; batch saved to {self._save_batch(module, batch, batch_idx, losses)}"
        return text

    def _save_batch(
        self, module: L.LightningModule, batch: dict[str, Any], batch_idx: int, losses: dict
    ) -> Path:
        """torch.save the batch (tensors on the CPU) and where it happened; returns the path."""
        folder = Path(self.batch_dir).expanduser()
        folder.mkdir(parents=True, exist_ok=True)
        epoch, step, rank = module.current_epoch, module.global_step, module.global_rank
        path = folder / f"nonfinite_epoch{epoch}_step{step}_rank{rank}.pt"
        record = {k: v.detach().cpu() if torch.is_tensor(v) else v for k, v in batch.items()}
        record.update(epoch=epoch, step=step, batch_idx=batch_idx, rank=rank, losses=losses)
        torch.save(record, path)
        return path

    def _log_skipped(self, module: L.LightningModule, batch_size: int) -> None:
        """Batches skipped so far in this run, logged once per epoch (the same on every rank)."""
        module.log("train/skipped_nonfinite", float(self.skipped), on_step=False, on_epoch=True,
                   reduce_fx="max", sync_dist=True, batch_size=batch_size)  # fmt: skip


def _zero_gradient_loss(module: L.LightningModule) -> torch.Tensor:
    """0, with a zero gradient for every trainable parameter: under DDP every process then runs
    the same gradient all-reduce (Lightning refuses a None loss with several processes), and
    fp16 AMP's GradScaler has gradients to check."""
    params = [p for p in module.parameters() if p.requires_grad]
    return sum(p.sum() for p in params) * 0.0  # python's sum: parameters of mixed dtypes
