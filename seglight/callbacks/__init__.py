"""Every Lightning callback and plugin of seglight, one module per job.

    reports       ClassReport: per-class table after validate/test, test_report.json/.csv/.png
    writers       MaskWriter (predicted masks, overlays), PredictionFailures (skipped inputs)
    images        ValidationImages: image | ground truth | prediction grids during fit
    wandb_tables  WandbClassMetrics: per-class table and confusion chart into W&B
    config        SaveConfig: config.yaml beside the logs and into W&B / TensorBoard
    finite_best   FiniteBestCheckpoint: best/last checkpoints that never hold a non-finite score
    atomic_io     AtomicCheckpointIO: checkpoints written whole or not at all
    preemption    PreemptionCheckpoint: SIGTERM/SIGUSR1 -> last.ckpt at the next batch, then exit
    rng_state     RngState: RNG states saved in checkpoints and restored on resume
    finders       FindLR, FindBatchSize: Lightning's finders, usable from the command line
    ema           EMA: an exponential moving average of the weights (Lightning's EMAWeightAveraging)
    freezing      FreezeEncoder: a frozen encoder (and decoder), BatchNorm kept in eval mode

ClassReport, PreemptionCheckpoint, RngState and PredictionFailures are added to every run by
the CLI (keys `class_report`, `preemption`, `rng_state`, `prediction_failures`; null switches
one off); in plain Python, `default_callbacks()` gives them.
"""

from seglight._moved import moved
from seglight.callbacks.atomic_io import AtomicCheckpointIO
from seglight.callbacks.config import SaveConfig
from seglight.callbacks.ema import EMA
from seglight.callbacks.finders import FindBatchSize, FindLR
from seglight.callbacks.finite_best import FiniteBestCheckpoint
from seglight.callbacks.freezing import FreezeEncoder
from seglight.callbacks.images import ValidationImages
from seglight.callbacks.preemption import PreemptionCheckpoint
from seglight.callbacks.reports import ClassReport, build_report, format_class_table
from seglight.callbacks.rng_state import RngState
from seglight.callbacks.wandb_tables import WandbClassMetrics
from seglight.callbacks.writers import MaskWriter, PredictionFailures


def default_callbacks() -> list:
    """The callbacks the CLI adds to every run, for a Trainer built in plain Python:
    `Trainer(callbacks=[*default_callbacks(), ...])`."""
    return [ClassReport(), PreemptionCheckpoint(), RngState(), PredictionFailures()]


# Names this module had when it was a single file.
__getattr__ = moved(__name__, {"confusion_image": "seglight.render"})

__all__ = [
    "AtomicCheckpointIO",
    "ClassReport",
    "EMA",
    "FindBatchSize",
    "FindLR",
    "FiniteBestCheckpoint",
    "FreezeEncoder",
    "MaskWriter",
    "PredictionFailures",
    "PreemptionCheckpoint",
    "RngState",
    "SaveConfig",
    "ValidationImages",
    "WandbClassMetrics",
    "build_report",
    "default_callbacks",
    "format_class_table",
]
