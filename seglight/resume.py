"""Moved to seglight.callbacks.rng_state; old paths still work (warning)."""

from seglight._moved import moved

__getattr__ = moved(
    __name__,
    {
        "RngState": "seglight.callbacks",
        "collect_rng_states": "seglight.callbacks.rng_state",
        "set_rng_states": "seglight.callbacks.rng_state",
    },
)
