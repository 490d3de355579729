"""Lightning's learning-rate and batch-size finders, reachable from the command line.

    python -m seglight fit --config configs/quickstart.yaml \
        --trainer.callbacks+=seglight.callbacks.FindLR --trainer.callbacks.stop=true
    python -m seglight fit --config configs/quickstart.yaml \
        --trainer.callbacks+=seglight.callbacks.FindBatchSize

Lightning's own LearningRateFinder needs the model to hold its learning rate in an `lr` attribute
and, when it applies its suggestion, sets only the optimizer's current `lr`: a scheduler (PolyLR,
cosine) then resets it from its own `base_lrs` at the next step. seglight's optimizer is injected
by the CLI, so FindLR applies the suggestion to the optimizer *and* the scheduler, and writes the
curve it measured beside the logs.
"""

import csv
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import BatchSizeFinder, LearningRateFinder
from lightning.pytorch.utilities import rank_zero_info

from seglight.compat import _TunerExitException


class FindLR(LearningRateFinder):
    """Run Lightning's learning-rate range test at the start of `fit`, then train with the
    suggested rate (or stop, with `stop: true`). The curve goes to `<log dir>/lr_find.csv`.

    Args:
        min_lr: smallest learning rate of the range test.
        max_lr: largest learning rate of the range test.
        num_training_steps: optimizer steps of the range test (each with the next larger rate).
        mode: "exponential" or "linear" spacing of the rates.
        early_stop_threshold: stop the test once the loss exceeds this multiple of the best
            loss seen; null = never.
        apply: train with the suggested rate (the scheduler's base rate too); false = only
            report it.
        stop: end the run after the test, without training (print the suggestion and exit).
    """

    def __init__(
        self,
        min_lr: float = 1e-7,
        max_lr: float = 1.0,
        num_training_steps: int = 100,
        mode: str = "exponential",
        early_stop_threshold: float | None = 4.0,
        apply: bool = True,
        stop: bool = False,
    ) -> None:
        # update_attr=False: Lightning would otherwise demand a `model.lr` attribute.
        super().__init__(min_lr, max_lr, num_training_steps, mode, early_stop_threshold, False)
        self.apply = apply
        self.stop = stop
        self.suggestion: float | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.lr_find(trainer, pl_module)  # restores the model and optimizer state when done
        if self.optimal_lr is None:  # fast_dev_run: Lightning skips the test
            return
        self.suggestion = self.optimal_lr.suggestion()
        # log_dir broadcasts under DDP: every process asks, rank 0 writes.
        folder = Path(trainer.log_dir or trainer.default_root_dir)
        if trainer.is_global_zero:
            self._write_curve(folder)
        if self.suggestion is None:
            rank_zero_info("seglight: lr finder: too few steps for a suggestion; lr unchanged")
        elif self.stop:
            rank_zero_info(f"seglight: lr finder suggests lr={self.suggestion:.3g}")
        elif self.apply:
            for optimizer in trainer.optimizers:
                _set_base_lr(trainer, optimizer, self.suggestion)
            rank_zero_info(f"seglight: lr finder: training with lr={self.suggestion:.3g}")
        else:
            rank_zero_info(f"seglight: lr finder suggests lr={self.suggestion:.3g} (not applied)")
        if self.stop:
            raise _TunerExitException()  # Lightning ends fit quietly on this one

    def _write_curve(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "lr_find.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["lr", "loss", "suggested"])
            for lr, loss in zip(
                self.optimal_lr.results["lr"], self.optimal_lr.results["loss"], strict=True
            ):
                writer.writerow([lr, loss, int(lr == self.suggestion)])


def _set_base_lr(trainer: L.Trainer, optimizer, lr: float) -> None:
    """Make `lr` the optimizer's base rate: schedulers recompute the current rate from
    `base_lrs` at every step, so the current rate keeps its ratio to the base (e.g. warmup)."""
    schedulers = [
        c.scheduler for c in trainer.lr_scheduler_configs if c.scheduler.optimizer is optimizer
    ]
    for i, group in enumerate(optimizer.param_groups):
        old_base = group.get("initial_lr", group["lr"])
        ratio = group["lr"] / old_base if old_base else 1.0
        group["lr"] = lr * ratio
        if "initial_lr" in group:
            group["initial_lr"] = lr
        for scheduler in schedulers:
            if hasattr(scheduler, "base_lrs"):
                scheduler.base_lrs[i] = lr
            if hasattr(scheduler, "_last_lr"):
                scheduler._last_lr[i] = lr * ratio


class FindBatchSize(BatchSizeFinder):
    """Lightning's batch-size finder on the data module's `batch_size`: from `init_val`, doubling
    ("power") or bisecting ("binsearch") until memory runs out or `max_trials`, then training with
    the largest size that fit. On a CPU nothing runs out: it stops at `max_trials` or the size
    of the training set. With `stop: true` it prints the size and ends the run.

    Args:
        mode: "power" or "binsearch".
        steps_per_trial: training steps tried at each size.
        init_val: first batch size tried.
        max_trials: most increases tried.
        stop: end the run after the search, without training.
    """

    def __init__(
        self,
        mode: str = "power",
        steps_per_trial: int = 3,
        init_val: int = 2,
        max_trials: int = 25,
        stop: bool = False,
    ) -> None:
        super().__init__(mode, steps_per_trial, init_val, max_trials, "batch_size")
        self.stop = stop

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.scale_batch_size(trainer, pl_module)
        rank_zero_info(f"seglight: batch-size finder: largest batch size {self.optimal_batch_size}")
        if self.stop:
            raise _TunerExitException()
