"""Learning-rate schedules that take their length from the Trainer.

torch's PolynomialLR / CosineAnnealingLR / OneCycleLR need the run length written in the config a
second time (and jsonargparse fills their defaults in, so a missing length cannot be detected).
These take `total_steps: null` to mean "the Trainer's estimated_stepping_batches", which
SegmentationModule.configure_optimizers fills in, so changing max_epochs changes the schedule.
"""

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


class _TrainerLengthLR(LambdaLR):
    """LambdaLR whose factor depends on a total step count that may be set after construction."""

    def __init__(
        self, optimizer: Optimizer, total_steps: int | None = None, warmup_steps: int = 0
    ) -> None:
        if total_steps is not None and total_steps <= 0:
            raise ValueError(f"total_steps must be positive, got {total_steps}")
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        super().__init__(optimizer, self._factor)

    def _factor(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.total_steps is None:  # before the Trainer filled the length in: no decay yet
            return 1.0
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self._decay(progress)

    def _decay(self, progress: float) -> float:
        raise NotImplementedError


class PolyLR(_TrainerLengthLR):
    """lr = base_lr * (1 - progress) ** power after a linear warm-up (DeepLab's "poly" schedule).

    Args:
        optimizer: the optimizer (passed in by LightningCLI).
        power: exponent of the decay; 0.9 in DeepLab and mmsegmentation.
        total_steps: steps of the whole run; null = the Trainer's estimated_stepping_batches.
        warmup_steps: steps of linear warm-up from ~0 to base_lr.
        min_lr_ratio: floor of the decay as a fraction of base_lr.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        power: float = 0.9,
        total_steps: int | None = None,
        warmup_steps: int = 0,
        min_lr_ratio: float = 0.0,
    ) -> None:
        self.power = power
        self.min_lr_ratio = min_lr_ratio
        super().__init__(optimizer, total_steps, warmup_steps)

    def _decay(self, progress: float) -> float:
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * (1 - progress) ** self.power


class WarmupCosineLR(_TrainerLengthLR):
    """Linear warm-up, then cosine decay from base_lr to min_lr_ratio * base_lr.

    Args:
        optimizer: the optimizer (passed in by LightningCLI).
        total_steps: steps of the whole run; null = the Trainer's estimated_stepping_batches.
        warmup_steps: steps of linear warm-up from ~0 to base_lr.
        min_lr_ratio: final learning rate as a fraction of base_lr.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int | None = None,
        warmup_steps: int = 0,
        min_lr_ratio: float = 0.0,
    ) -> None:
        self.min_lr_ratio = min_lr_ratio
        super().__init__(optimizer, total_steps, warmup_steps)

    def _decay(self, progress: float) -> float:
        cosine = 0.5 * (1 + math.cos(math.pi * progress))
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * cosine
