"""Pre-emption: SIGTERM or SIGUSR1 during `fit` -> last.ckpt at the next batch boundary, then exit.
(Under fast_dev_run no checkpoint is written: the run just exits with the same status.)

    python -m seglight fit --config configs/quickstart.yaml            # kill -TERM <pid> ...
    python -m seglight fit --config configs/quickstart.yaml --ckpt_path last   # ... resumes

The signal handler only records the signal: the model may be in the middle of a step (or of a
collective under DDP), so nothing is saved from inside it. At the end of the current training
batch all processes agree (one all-reduce of the signal number, max over ranks: a signal seen
by any rank stops all of them at the same step), save one checkpoint together and leave with
exit status 128 + signal number (143 for SIGTERM, 138 for SIGUSR1).

Why that status: it is non-zero, so `seglight fit ... && seglight test ...` and job schedulers do
not take an interrupted run for a finished one, and it is the status shells, Docker and
Kubernetes already report for a process ended by that signal (retry policies keyed on 143 keep
working); 1 (crash) and 2 (bad configuration) keep their meaning.

Lightning's own handling, and how this fits with it:
- Lightning 2.6 sets `trainer.received_sigterm` on SIGTERM and raises SIGTERMException (exit
  status 0, no checkpoint) at a loop boundary; under DDP its handler calls dist.broadcast from
  inside the signal handler. During `fit` this callback takes SIGTERM over instead (and gives it
  back when fit ends); it exits by raising SIGTERMException too, so `on_exception` callbacks such
  as OnExceptionCheckpoint see what they would have seen.
- On SLURM with auto-requeue (Lightning's default there) the requeue signal (SIGUSR1 unless
  SLURMEnvironment(requeue_signal=...) says otherwise) stays Lightning's: it writes
  <default_root_dir>/hpc_ckpt_<n>.ckpt and runs `scontrol requeue`; the requeued job resumes from
  that file by itself when no --ckpt_path is given. SIGTERM (which SLURM sends on
  cancellation, pre-emption and after the requeue) is still ours: last.ckpt is written too.
"""

import shlex
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

import lightning as L
import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

# SIGUSR1 does not exist on Windows.
SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGUSR1") if hasattr(signal, n))


def last_checkpoint_path(trainer: L.Trainer) -> Path:
    """Where `--ckpt_path last` looks: the first ModelCheckpoint's folder, else
    <default_root_dir>/checkpoints (seglight's CLI resolves `last` there too)."""
    callback = trainer.checkpoint_callback
    if isinstance(callback, ModelCheckpoint) and callback.dirpath:
        folder = Path(callback.dirpath)
        name = ModelCheckpoint.CHECKPOINT_NAME_LAST + ModelCheckpoint.FILE_EXTENSION
    else:
        folder, name = Path(trainer.default_root_dir) / "checkpoints", "last.ckpt"
    return folder / name


def resume_command(argv: list[str] | None = None) -> str:
    """This process's command line with `--ckpt_path last` in place of any --ckpt_path."""
    argv = list(sys.argv if argv is None else argv)
    program = "python -m seglight" if argv[0].endswith("__main__.py") else Path(argv[0]).name
    args, skip = [], False
    for arg in argv[1:]:
        if skip:
            skip = False
        elif arg == "--ckpt_path":
            skip = True
        elif not arg.startswith("--ckpt_path="):
            args.append(arg)
    return f"{program} {shlex.join(args)} --ckpt_path last".replace("  ", " ")


def exit_status(signum: int) -> int:
    """The exit status of a pre-empted run: 143 for SIGTERM, 138 for SIGUSR1."""
    return 128 + int(signum)


class PreemptionCheckpoint(L.Callback):
    """On SIGTERM/SIGUSR1 during fit: save last.ckpt at the end of the current training batch
    and exit with status 128 + signal number (see the module docstring). Added to every
    run by the CLI (key `preemption`); a signal during validation is acted on at the end of
    the next training batch."""

    def __init__(self) -> None:
        self.received: int = 0  # the signal number, 0 = none; set by the handler only
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum  # only a flag: the step in progress must not be interrupted

    def _signals(self, trainer: L.Trainer) -> list[int]:
        environment = getattr(trainer.strategy, "cluster_environment", None)
        if isinstance(environment, SLURMEnvironment) and environment.auto_requeue:
            owned = environment.requeue_signal or signal.SIGUSR1  # Lightning's: hpc + requeue
            return [s for s in SIGNALS if s != owned]
        return list(SIGNALS)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After the Trainer registered its own handlers (Trainer._run), so ours win during fit.
        self.received = 0
        if threading.current_thread() is not threading.main_thread():
            return  # Python delivers signals to the main thread only
        for signum in self._signals(trainer):
            self._previous[signum] = signal.signal(signum, self._handle)

    def _restore(self) -> None:
        for signum, previous in self._previous.items():
            if signal.getsignal(signum) == self._handle:
                signal.signal(signum, previous)  # type: ignore[arg-type]
        self._previous = {}

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._restore()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        signum = self.received
        if trainer.world_size > 1:  # every rank calls this at the same step: one all-reduce
            flag = torch.tensor(signum, dtype=torch.int32, device=pl_module.device)
            signum = int(trainer.strategy.reduce(flag, reduce_op="max"))
        if not signum:
            return
        name = signal.Signals(signum).name
        if trainer.fast_dev_run:  # a smoke test must not replace the real run's last.ckpt
            message = f"seglight: {name} received: fast_dev_run, so no checkpoint saved\n"
        else:
            path = last_checkpoint_path(trainer)
            trainer.save_checkpoint(path)  # collective: every rank takes part, rank 0 writes
            message = (
                f"seglight: {name} received: saved epoch {trainer.current_epoch}, step "
                f"{trainer.global_step} to {path}; resume with: {resume_command()}\n"
            )
        if trainer.is_global_zero:
            sys.stderr.write(message)
            sys.stderr.flush()
        self._restore()
        raise SIGTERMException(exit_status(signum))
