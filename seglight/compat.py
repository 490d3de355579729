"""Every private Lightning API seglight relies on, in one place (pyproject pins the tested range).

Lightning keeps no promise about underscore names: a minor release may rename or remove them.
Imported names come from here, so a rename fails at import with one line saying what to do;
overridden private methods are listed in OVERRIDDEN, and tests/test_compat.py checks that each
still exists on the installed Lightning with the parameters seglight's override expects (an
override of a method Lightning no longer calls would silently do nothing).
"""

import lightning

try:
    from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
    from lightning.pytorch.callbacks.lr_finder import _TunerExitException
    from lightning.pytorch.core.module import _jit_is_scripting
    from lightning.pytorch.utilities.model_helpers import _restricted_classmethod
except ImportError as e:  # pragma: no cover - only on a Lightning outside the tested range
    raise ImportError(
        f"seglight needs private Lightning APIs that lightning {lightning.__version__} does not "
        f"have ({e}); install the range pyproject.toml names (pip install -e .)"
    ) from None

# What each private name is for (the tests use it as the list of uses):
USES = {
    "_is_local_file_protocol": "callbacks.atomic_io.AtomicCheckpointIO: atomic local saves",
    "_TunerExitException": "callbacks.finders.FindLR/FindBatchSize: end fit quietly after a finder",
    "_jit_is_scripting": "deployment: trace without touching LightningModule.trainer",
    "_restricted_classmethod": "module.SegmentationModule.load_from_checkpoint, as Lightning's",
}

# Private methods seglight overrides or calls: class path -> {method: parameters after self}.
OVERRIDDEN = {
    "lightning.pytorch.callbacks.ModelCheckpoint": {
        "_find_last_checkpoints": ["trainer"],
        "_save_checkpoint": ["trainer", "filepath"],
        "_save_topk_checkpoint": ["trainer", "monitor_candidates"],
        "_save_last_checkpoint": ["trainer", "monitor_candidates"],
    },
    "lightning.pytorch.cli.LightningCLI": {"_parse_ckpt_path": []},
}

__all__ = [
    "OVERRIDDEN",
    "USES",
    "_TunerExitException",
    "_is_local_file_protocol",
    "_jit_is_scripting",
    "_restricted_classmethod",
]
