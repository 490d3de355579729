"""Moved to seglight.callbacks.images and seglight.render; old paths still work (warning)."""

from seglight._moved import moved

__getattr__ = moved(
    __name__,
    {
        "ValidationImages": "seglight.callbacks",
        "pick_indices": "seglight.callbacks.images",
        "denormalize": "seglight.render",
        "overlay": "seglight.render",
        "draw_grid": "seglight.render",
        "GAP": "seglight.render",
        "IGNORE": "seglight.render",
    },
)
