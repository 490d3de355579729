"""Checkpoint files that survive kill -9: AtomicCheckpointIO, the CheckpointIO of every run.

The CLI installs it unless the config names another CheckpointIO: a save writes a hidden partial
file beside the target, fsyncs it, renames it onto the target and fsyncs the folder, so
`last.ckpt` and `best.ckpt` are always either the old or the new checkpoint, whole. Lightning's
TorchCheckpointIO (fabric/utilities/cloud_io._atomic_save) serialises into memory, writes a
temporary file in $TMPDIR and `shutil.move`s it: when $TMPDIR is on another file system (local
disk vs. the shared one of a cluster) the move is a copy into the target itself, which a kill
leaves truncated; nothing is fsynced, so a crash of the machine can leave an empty file after the
rename; and the temporary file of a killed save stays in $TMPDIR.

Loading: a checkpoint the CLI already read for its checks (seglight.checkpoints) is handed to it
with `preload`, so `--ckpt_path` reads the file once, not once for the checks and once for the run.
"""

import os
import secrets
import socket
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins import CheckpointIO
from lightning.pytorch.plugins.io import TorchCheckpointIO

from seglight.compat import _is_local_file_protocol

# Partial files: hidden, not ending in ".ckpt" (ModelCheckpoint's `last*.ckpt` lookup ignores
# them) and without "hpc_ckpt_" (Lightning's SLURM resume takes any name holding it, then its
# digits, as a checkpoint version). Host and pid say whose they are, for the clean-up below.
PARTIAL_PREFIX = ".seglight-partial-"
PARTIAL_SUFFIX = ".tmp"
STALE_AFTER_S = 24 * 3600  # another host's partial file: that old, its save is surely dead


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO whose saves replace the target file atomically and durably.

    Remote paths (s3://, gs://, ...) keep Lightning's behaviour: object stores never show a
    partially uploaded object.
    """

    _preloaded: tuple[tuple, dict[str, Any]] | None = None

    def preload(self, path: str | Path, checkpoint: dict[str, Any]) -> None:
        """The next `load_checkpoint(path)` returns `checkpoint` (already read from that file,
        unchanged since) instead of reading the file again; once, then it is let go."""
        self._preloaded = (_file_key(path), checkpoint)

    def load_checkpoint(
        self, path: Any, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        preloaded, self._preloaded = self._preloaded, None
        if preloaded is not None and preloaded[0] == _file_key(path):
            return preloaded[1]  # tensors on the CPU: Lightning's restore moves them where needed
        if map_location is None:  # TorchCheckpointIO's default: tensors stay where they were saved
            return super().load_checkpoint(path, weights_only=weights_only)
        return super().load_checkpoint(path, map_location, weights_only)

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or not _is_local_file_protocol(path):
            super().save_checkpoint(checkpoint, path, storage_options)  # raises on options
            return
        target = Path(str(path).removeprefix("file://")).absolute()
        folder = target.parent
        folder.mkdir(parents=True, exist_ok=True)
        remove_stale_partials(folder)
        partial = folder / f"{PARTIAL_PREFIX}{_host()}-{os.getpid()}-{secrets.token_hex(4)}"
        partial = partial.with_name(partial.name + PARTIAL_SUFFIX)
        # 0o666 minus the umask: the permissions a plain open() would have given the checkpoint.
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)  # streamed to disk: no second copy in memory
                f.flush()
                os.fsync(f.fileno())  # the data is on disk before the name points at it
            os.replace(partial, target)  # atomic on POSIX within one file system
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        _fsync_folder(folder)  # the rename itself is durable


def _file_key(path: Any) -> tuple:
    """Which file, in which version: a checkpoint replaced since it was read is read anew."""
    try:
        target = Path(str(path)).resolve()
        stat = target.stat()
    except (OSError, TypeError, ValueError):
        return (str(path),)
    return (str(target), stat.st_mtime_ns, stat.st_size)


def _host() -> str:
    return socket.gethostname().replace("-", "_") or "host"


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. a platform without directory file descriptors
        return
    try:
        os.fsync(fd)
    except OSError:  # some network file systems refuse fsync on a directory: best effort
        pass
    finally:
        os.close(fd)


def remove_stale_partials(folder: Path) -> list[Path]:
    """Delete partial files of saves that can no longer finish: this host's whose process is
    gone, or another host's older than a day. Returns what it removed."""
    removed = []
    try:
        names = [n for n in os.listdir(folder) if n.startswith(PARTIAL_PREFIX)]
    except OSError:
        return removed
    for name in names:
        path = folder / name
        owner = name[len(PARTIAL_PREFIX) : -len(PARTIAL_SUFFIX)].rsplit("-", 2)
        if len(owner) != 3 or not name.endswith(PARTIAL_SUFFIX):
            continue
        host, pid = owner[0], owner[1]
        try:
            if host == _host():
                stale = pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid))
            else:
                stale = time.time() - path.stat().st_mtime > STALE_AFTER_S
            if stale:
                path.unlink()
                removed.append(path)
        except OSError:  # removed meanwhile by another process: fine
            continue
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def use_atomic_checkpoint_io(trainer: L.Trainer, plugins: Any = None) -> bool:
    """Make AtomicCheckpointIO the trainer's CheckpointIO unless the config names a CheckpointIO
    plugin or the strategy brings its own (XLA's XLACheckpointIO, an async wrapper: anything
    but the plain default TorchCheckpointIO). Sharded FSDP/DeepSpeed saves write folders their
    own way and do not go through it. True when installed."""
    configured = plugins if isinstance(plugins, list | tuple) else [plugins]
    if any(isinstance(p, CheckpointIO) for p in configured):
        return False
    if type(trainer.strategy.checkpoint_io) is not TorchCheckpointIO:
        return False
    trainer.strategy.checkpoint_io = AtomicCheckpointIO()
    return True
