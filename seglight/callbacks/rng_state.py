"""Global RNG states in every checkpoint, put back where training resumes: exact resumption.

    python -m seglight fit --config configs/quickstart.yaml --ckpt_path last

Lightning restores weights, optimizer, schedulers and loop counters, but not the RNGs: a resumed
run would draw other dropout masks (and whatever else a model draws) than the uninterrupted one.
The CLI adds RngState to every run (key `rng_state`; in plain Python,
seglight.callbacks.default_callbacks()). The data side (order, position within the epoch,
augmentations) is in seglight/data/sampling.py and does not use these RNGs; the training loader
has its own generator (SegmentationDataModule._loader).

Why by hand: Lightning's fabric.utilities.seed._collect_rng_states keeps numpy's state as an
ndarray, which torch.load(weights_only=True) refuses; here every state is a tensor or a python
int/float/list, and restoring waits for `on_train_start` (see RngState).
"""

import random
from typing import Any

import lightning as L
import numpy as np
import torch


def collect_rng_states() -> dict[str, Any]:
    """python, numpy, torch CPU (and CUDA, if in use) RNG states, as tensors and python values."""
    version, internal, gauss = random.getstate()  # internal: 624 words + position
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # keys: (624,) uint32
    states: dict[str, Any] = {
        "python": {"version": version, "internal": torch.tensor(internal), "gauss": gauss},
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["torch.cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Inverse of collect_rng_states."""
    py = states["python"]
    random.setstate((py["version"], tuple(py["internal"].tolist()), py["gauss"]))
    npy = states["numpy"]
    keys = npy["keys"].numpy().astype(np.uint32)
    np.random.set_state((npy["kind"], keys, npy["pos"], npy["has_gauss"], npy["cached_gaussian"]))
    torch.set_rng_state(states["torch"])
    cuda = states.get("torch.cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


class RngState(L.Callback):
    """Saves the global RNG states in each checkpoint; a run resumed from it gets them back.

    They are restored at `on_train_start`, not when the checkpoint is loaded: in between, the
    resumed run does things the original run did not do at that point (the sanity check, creating
    the loaders' iterators), which may draw from these RNGs. From `on_train_start` on, both runs
    do the same: the rest of the interrupted epoch (or validation still due), then the next ones.
    """

    def __init__(self) -> None:
        self._to_restore: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        return collect_rng_states()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._to_restore = state_dict

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._to_restore is not None:
            set_rng_states(self._to_restore)
            self._to_restore = None
