"""A researcher's subclass, selected in tests with
`--model seglight_testing.subclass_example.BoundaryWeighted`."""

import torch

from seglight import SegmentationModule


class BoundaryWeighted(SegmentationModule):
    """Adds a logit-magnitude penalty to the configured loss through the `compute_loss` hook.

    Args:
        penalty: weight of the mean squared logit added to the loss.
        **kwargs: SegmentationModule's arguments.
    """

    def __init__(self, penalty: float = 0.01, **kwargs) -> None:
        super().__init__(**kwargs)
        self.penalty = penalty
        self.calls = 0

    def compute_loss(self, logits: torch.Tensor, masks: torch.Tensor) -> dict[str, torch.Tensor]:
        self.calls += 1
        losses = super().compute_loss(logits, masks)
        logit_l2 = logits.pow(2).mean()
        return {**losses, "loss": losses["loss"] + self.penalty * logit_l2, "logit_l2": logit_l2}
