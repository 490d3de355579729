"""Checkpoint files that survive kill -9, and checks that refuse unusable ones with one line.

AtomicCheckpointIO is the CheckpointIO of every seglight run (the CLI installs it unless the config
names another one): a save writes a hidden partial file beside the target, fsyncs it, renames it
onto the target and fsyncs the folder, so `last.ckpt` and `best.ckpt` are always either the old or
the new checkpoint, whole. Lightning's TorchCheckpointIO (fabric/utilities/cloud_io._atomic_save)
serialises into memory, writes a temporary file in $TMPDIR and `shutil.move`s it: when $TMPDIR is
on another file system (local disk vs. the shared one of a cluster) the move is a copy into the
target itself, which a kill leaves truncated; nothing is fsynced, so a crash of the machine can
leave an empty file after the rename; and the temporary file of a killed save stays in $TMPDIR.

read_checkpoint / check_seglight_checkpoint: what `--ckpt_path`, `seglight export` and
SegmentationModule.load_from_checkpoint run before loading, so a truncated, empty or foreign file
is a ConfigError naming the file, not a traceback from deep inside torch.load.
"""

import os
import pickle
import re
import secrets
import socket
import time
import zipfile
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins import CheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint, OnExceptionCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_info

from seglight.compat import _is_local_file_protocol
from seglight.errors import ConfigError

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


# --- checks before loading ---------------------------------------------------------------------


def _sentence(error: BaseException, limit: int = 160) -> str:
    """The first sentence of an error from torch, which can run to a paragraph."""
    text = " ".join(str(error).split())
    line = re.split(r"(?<=[.:;])\s", text, maxsplit=1)[0].rstrip(".:;")
    if len(line) > limit:
        line = line[: limit - 3] + "..."
    return f"{type(error).__name__}: {line}".rstrip(": ")


def read_checkpoint(path: str | Path, what: str = "ckpt_path") -> dict[str, Any]:
    """The checkpoint dict of a local Lightning checkpoint file, loaded with weights_only=True
    and memory-mapped (tensors are not read: cheap for a 1 GB file). ConfigError, starting with
    `what` and naming the file, when it is missing, empty, truncated, not a torch file, a file
    that would need arbitrary code to unpickle, or a torch file that is no Lightning checkpoint."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{what}: {path} does not exist")
    if path.is_dir():
        raise ConfigError(
            f"{what}: {path} is a directory, not a checkpoint file (sharded FSDP/DeepSpeed "
            f"checkpoints are loaded by their strategy, not checked here)"
        )
    size = path.stat().st_size
    if size == 0:
        raise ConfigError(f"{what}: {path} is empty (0 bytes): a save that never finished?")
    with open(path, "rb") as f:
        head = f.read(8)
    is_zip = zipfile.is_zipfile(path)  # torch.save's format since torch 1.6
    if not is_zip and not head.startswith(b"\x80"):  # nor a pickle (the legacy format)
        if head.startswith(b"PK"):
            raise ConfigError(
                f"{what}: {path} is truncated or corrupt ({size} bytes, no zip index)"
            )
        raise ConfigError(
            f"{what}: {path} is not a PyTorch checkpoint file (it starts with {head[:4]!r})"
        )
    try:  # mmap: tensors are not read, so the check is cheap; legacy files are read whole
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as e:
        if "Unsupported global" in str(e):
            raise ConfigError(
                f"{what}: {path} holds Python objects that loading would have to execute "
                f"({_unsupported_global(e)}); seglight loads checkpoints with weights_only=True"
            ) from None
        raise ConfigError(f"{what}: {path} is truncated or corrupt ({_sentence(e)})") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, AttributeError,
            KeyError, TypeError, IndexError) as e:  # fmt: skip
        raise ConfigError(
            f"{what}: {path} is truncated or corrupt ({size} bytes; {_sentence(e)})"
        ) from None
    if not isinstance(checkpoint, dict):
        raise ConfigError(
            f"{what}: {path} holds a {type(checkpoint).__name__}, not a Lightning checkpoint"
        )
    if "state_dict" not in checkpoint:
        if checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
            raise ConfigError(
                f"{what}: {path} is a plain state_dict (torch.save(model.state_dict())), not a "
                f"Lightning checkpoint (encoder weights alone go to --model.encoder_weights)"
            )
        raise ConfigError(f"{what}: {path} is not a Lightning checkpoint (no 'state_dict')")
    return checkpoint


def _unsupported_global(error: BaseException) -> str:
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(error))
    if found:
        return f"{found.group(1)} is not an allowed global"

    return _sentence(error)


def check_seglight_checkpoint(
    path: str | Path, checkpoint: dict[str, Any], what: str = "ckpt_path"
) -> None:
    """ConfigError unless the Lightning checkpoint was saved from a seglight SegmentationModule:
    hyper-parameters naming an `arch` and the network's weights under `net.`."""
    hparams = checkpoint.get("hyper_parameters")
    has_net = any(str(k).startswith("net.") for k in checkpoint["state_dict"])
    if not isinstance(hparams, dict) or "arch" not in hparams or not has_net:
        owner = hparams.get("_class_path") if isinstance(hparams, dict) else None
        of = f" (it holds a {owner})" if owner else ""
        raise ConfigError(
            f"{what}: {path} is a Lightning checkpoint of another LightningModule{of}, not of a "
            f"seglight SegmentationModule"
        )


def check_matches_model(
    path: str | Path, checkpoint: dict[str, Any], model: torch.nn.Module, what: str = "ckpt_path"
) -> None:
    """ConfigError when the checkpoint's weights do not fit `model` (another architecture,
    encoder or number of classes): the first missing, unexpected or differently shaped one."""
    expected = model.state_dict()
    saved = checkpoint["state_dict"]
    missing = [k for k in expected if k not in saved]
    unexpected = [k for k in saved if k not in expected]
    shape = {k: tuple(getattr(v, "shape", ())) for k, v in saved.items()}
    reshaped = [k for k in expected if k in saved and shape[k] != tuple(expected[k].shape)]
    if reshaped:
        k = reshaped[0]
        raise ConfigError(
            f"{what}: {path} does not fit the configured model: {k} is "
            f"{shape[k]} there, {tuple(expected[k].shape)} here "
            f"({len(reshaped)} tensors differ; another num_classes, arch or encoder?)"
        )
    if missing or unexpected:
        parts = [f"{len(missing)} weights missing (e.g. {missing[0]})"] if missing else []
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        raise ConfigError(
            f"{what}: {path} does not fit the configured model: {', '.join(parts)}; "
            f"another arch or encoder?"
        )


def check_resumable(path: str | Path, checkpoint: dict[str, Any], what: str = "ckpt_path") -> None:
    """`fit --ckpt_path` restores the optimizer and loops: a weights-only file cannot."""
    if "optimizer_states" not in checkpoint or "loops" not in checkpoint:
        raise ConfigError(
            f"{what}: {path} holds the weights only (ModelCheckpoint save_weights_only=true): "
            f"`fit` cannot resume from it; validate/test/predict/export can use it"
        )


# --- what the CLI calls ------------------------------------------------------------------------


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


def last_checkpoint_candidates(trainer: L.Trainer) -> list[Path]:
    """Every `last*.ckpt` Lightning's `ckpt_path="last"` would consider, plus
    <default_root_dir>/checkpoints/last.ckpt, where a pre-empted run without ModelCheckpoint
    saves (seglight.preemption.last_checkpoint_path)."""
    found = {Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"}
    for callback in trainer.callbacks:
        if isinstance(callback, ModelCheckpoint):
            found |= {Path(p) for p in callback._find_last_checkpoints(trainer)}
        elif isinstance(callback, OnExceptionCheckpoint):
            found.add(Path(callback.ckpt_path))
    return sorted(p for p in found if p.is_file())


def resolve_ckpt_path(
    subcommand: str, ckpt_path: str | None, trainer: L.Trainer, model: torch.nn.Module
) -> str | None:
    """--ckpt_path checked before anything runs: `last` becomes the newest last checkpoint
    (none: `fit` starts from scratch, saying so; the other subcommands stop), a local file must
    be a seglight checkpoint that fits `model` (and, for `fit`, hold the training state).
    `best`, `hpc`, URLs and registry names are left to Lightning."""
    if ckpt_path is None:
        return None
    text = str(ckpt_path)
    if text == "last":
        candidates = last_checkpoint_candidates(trainer)
        if not candidates:
            where = _last_dirs(trainer)
            if subcommand != "fit":
                raise ConfigError(f"ckpt_path: last: no last checkpoint in {where}")
            rank_zero_info(f"seglight: --ckpt_path last: no last checkpoint in {where} yet; "
                           f"training starts from scratch")  # fmt: skip
            return None
        text = str(max(candidates, key=lambda p: p.stat().st_mtime))
    elif text in ("best", "hpc") or "://" in text or text.startswith("registry:"):
        return text
    checkpoint = read_checkpoint(text)
    check_seglight_checkpoint(text, checkpoint)
    if getattr(model, "strict_loading", True):
        check_matches_model(text, checkpoint, model)
    if subcommand == "fit":
        check_resumable(text, checkpoint)
    return text


def _last_dirs(trainer: L.Trainer) -> str:
    folders = {str(Path(trainer.default_root_dir) / "checkpoints")}
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.dirpath:
            folders.add(str(callback.dirpath))
    return " or ".join(sorted(folders))
