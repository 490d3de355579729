"""Training throughput of the real data pipeline: images/s of real Lightning steps, with the
wait for data told apart from the compute."""

import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from seglight.profiling.timing import peak_memory, spread, synchronize

# --- training ----------------------------------------------------------------------------------


class StepTimer(Callback):
    """Lightning callback: per training step, the compute (on_train_batch_start -> end, GPU
    synchronized) and the wait before it (previous end -> start: the loader's next batch plus
    Lightning's bookkeeping)."""

    def __init__(self, device: torch.device) -> None:
        super().__init__()
        self.device = device
        self.step: list[float] = []
        self.data: list[float] = []
        self._end: float | None = None
        self._start = 0.0
        self.batch_sizes: list[int] = []

    def on_train_epoch_start(self, trainer, module) -> None:
        if self._end is None:
            self._end = time.perf_counter()  # the first batch's wait: loader (workers) start-up
        # later epochs: the wait includes the new epoch's loader start, as training has it

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        synchronize(self.device)
        self._start = time.perf_counter()
        self.data.append(self._start - (self._end or self._start))
        self.batch_sizes.append(int(batch["image"].shape[0]))

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        synchronize(self.device)
        self._end = time.perf_counter()
        self.step.append(self._end - self._start)


def train_throughput(
    module,
    datamodule,
    device: torch.device,
    steps: int,
    warmup: int,
    precision: Any = "32-true",
    root_dir: str | None = None,
) -> dict[str, Any]:
    """`warmup` + `steps` training steps of `module` on `datamodule`'s training loader (its
    workers, transforms and batch size) under a bare Lightning Trainer (no validation, logger,
    checkpoints or callbacks of the config): images/s, and the share of time spent waiting for
    data. The module's weights change (it trains)."""
    timer = StepTimer(device)
    trainer = L.Trainer(
        accelerator=device.type,
        devices=[device.index or 0] if device.type == "cuda" else 1,
        precision=precision,
        max_steps=warmup + steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
        default_root_dir=root_dir,
    )
    with peak_memory(device) as memory:
        trainer.fit(module, datamodule=datamodule)
    step, data = timer.step[warmup:], timer.data[warmup:]
    images = sum(timer.batch_sizes[warmup:])
    if not step:
        raise RuntimeError(f"training ran {len(timer.step)} steps, none after the warm-up")
    wall = sum(step) + sum(data)
    return {
        "steps": len(step),
        "warmup_steps": warmup,
        "batch_size": datamodule.batch_size,
        "num_workers": datamodule.num_workers,
        "precision": str(trainer.precision),
        "images_per_s": images / wall,
        "compute_images_per_s": images / sum(step),
        "step": spread(step),
        "data_wait": spread(data),
        "data_fraction": sum(data) / wall,
        "peak_memory": memory,
    }
