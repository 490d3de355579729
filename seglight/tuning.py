"""Moved to seglight.callbacks.finders; old paths still work (warning)."""

from seglight._moved import moved

__getattr__ = moved(
    __name__,
    {
        "FindLR": "seglight.callbacks",
        "FindBatchSize": "seglight.callbacks",
    },
)
