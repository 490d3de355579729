"""A callback for tests/callbacks/test_preemption.py: the process signals itself when training
reaches a step, as a scheduler would at an arbitrary moment of a real run.

    --trainer.callbacks+=seglight_testing.preemption_helper.SignalAtStep --trainer.callbacks.step=3
"""

import os
import signal

import lightning as L


class SignalAtStep(L.Callback):
    """Send `signal_name` to this process after optimizer step `step` (global_step == step).

    Args:
        step: the global step after which to send the signal.
        signal_name: SIGTERM or SIGUSR1.
    """

    def __init__(self, step: int = 3, signal_name: str = "SIGTERM") -> None:
        self.step = step
        self.signum = signal.Signals[signal_name]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)
