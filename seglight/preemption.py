"""Moved to seglight.callbacks.preemption; old paths still work (warning)."""

from seglight._moved import moved

__getattr__ = moved(
    __name__,
    {
        "PreemptionCheckpoint": "seglight.callbacks",
        "last_checkpoint_path": "seglight.callbacks.preemption",
        "resume_command": "seglight.callbacks.preemption",
        "exit_status": "seglight.callbacks.preemption",
        "SIGNALS": "seglight.callbacks.preemption",
    },
)
