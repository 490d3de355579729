"""A model whose input turns nan at one chosen step, selected in tests with
`--model seglight_testing.nonfinite_example.PoisonedInput` (tests/ is on the path of pytest
and its subprocesses)."""

import json
from pathlib import Path
from typing import Any

from seglight import SegmentationModule


class PoisonedInput(SegmentationModule):
    """Sets one image of one training batch to nan before the forward, so the nan reaches the
    loss through the network (BatchNorm statistics included), as a corrupt file would.

    Args:
        poison_epoch: epoch of the poisoned batch.
        poison_batch: batch index (within the epoch) of the poisoned batch.
        poison_rank: process whose batch is poisoned (under DDP the others stay finite).
        poison_sample: index within the batch of the image set to nan.
        poison_record: JSON file where the poisoned batch's names and step are written.
        **kwargs: SegmentationModule's arguments.
    """

    def __init__(
        self,
        poison_epoch: int = 1,
        poison_batch: int = 0,
        poison_rank: int = 0,
        poison_sample: int = 0,
        poison_record: str = "poisoned.json",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.poison = (poison_epoch, poison_batch, poison_rank)
        self.poison_sample = poison_sample
        self.poison_record = poison_record

    def training_step(self, batch: dict[str, Any], batch_idx: int):
        if (self.current_epoch, batch_idx, self.global_rank) == self.poison:
            batch["image"][self.poison_sample] = float("nan")
            record = {"names": list(batch["name"]), "nan_name": batch["name"][self.poison_sample],
                      "epoch": self.current_epoch, "step": self.global_step}  # fmt: skip
            Path(self.poison_record).write_text(json.dumps(record))
        return super().training_step(batch, batch_idx)
