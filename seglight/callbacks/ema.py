"""EMA: an exponential moving average of the weights, by Lightning's own EMAWeightAveraging.

    python -m seglight fit --config configs/quickstart.yaml --config configs/callbacks/ema.yaml

What Lightning 2.6's WeightAveraging does (lightning/pytorch/callbacks/weight_averaging.py), and
so which weights are used where:
- the average is a torch AveragedModel (a copy of the LightningModule, parameters and buffers,
  BatchNorm statistics included), updated after every optimizer step from step `start_step` on;
- validation during fit runs on the averaged weights (swapped in and out around each epoch);
- every checkpoint written during fit (best.ckpt, last.ckpt, pre-emption) holds the averaged
  weights in `state_dict`, the raw ones in `current_model_state`; so `test`/`predict`/`export`
  and load_from_checkpoint read the average; resuming restores both;
- when fit ends, the averaged weights are copied into the model.

What this subclass adds: `decay` and `start_step` checked (one line for a bad value); before
`start_step` the average follows the weights (Lightning's stays at the initial weights, so a
validation or a checkpoint then would use the untrained network); no warning when a checkpoint
is loaded for validate/test/predict (its state_dict already is the average).
"""

import itertools
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import EMAWeightAveraging

from seglight.errors import ConfigError


class EMA(EMAWeightAveraging):
    """Exponential moving average of the weights (Lightning's EMAWeightAveraging): validation,
    checkpoints and what `test`/`export` load use the averaged weights.

    Args:
        decay: weight of the old average at each update: avg = decay * avg + (1 - decay) * w.
            0.999 averages over roughly the last 1000 steps. In (0, 1).
        start_step: first optimizer step (zero-based) that updates the average; it starts as a
            copy of the weights then. Before it, the "average" is the weights themselves.
        device: where the averaged copy lives (e.g. "cpu" to spare GPU memory); null: the
            model's device.
    """

    def __init__(self, decay: float = 0.999, start_step: int = 0, device: str | None = None):
        if not 0.0 < decay < 1.0:
            raise ConfigError(f"EMA.decay: must be in (0, 1), e.g. 0.999; got {decay}")
        if start_step < 0:
            raise ConfigError(f"EMA.start_step: must be >= 0; got {start_step}")
        super().__init__(device=device, decay=decay, update_starting_at_step=start_step)
        self.decay, self.start_step = decay, start_step

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
        batch_idx: int,
    ) -> None:  # fmt: skip
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        average = self._average_model
        if average is not None and int(average.n_averaged) == 0:  # before start_step
            mine = itertools.chain(average.module.parameters(), average.module.buffers())
            theirs = itertools.chain(pl_module.parameters(), pl_module.buffers())
            for a, w in zip(mine, theirs, strict=True):
                a.data.copy_(w.data)

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if self._average_model is None:  # validate/test/predict: state_dict is the average
            return
        super().on_load_checkpoint(trainer, pl_module, checkpoint)
