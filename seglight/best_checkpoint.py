"""Moved to seglight.callbacks.FiniteBestCheckpoint (renamed); old paths still work (warning)."""

from seglight._moved import moved

__getattr__ = moved(
    __name__,
    {
        "ModelCheckpoint": "seglight.callbacks:FiniteBestCheckpoint",
    },
)
