"""`--ckpt_path` of the CLI: `last` / `best` resolved to files, the file checked before anything
runs, and the dict read for that check handed to the Trainer so the file is read once."""

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, OnExceptionCheckpoint
from lightning.pytorch.utilities import rank_zero_info

from seglight.callbacks.atomic_io import AtomicCheckpointIO
from seglight.checkpoints import (
    check_matches_model,
    check_resumable,
    check_seglight_checkpoint,
    read_checkpoint,
)
from seglight.errors import ConfigError
from seglight.networks.compiled import PLAIN


def cli_model_config(checkpoint: dict[str, Any]) -> dict[str, Any] | None:
    """The `model` section LightningCLI puts into the config from a checkpoint's hyper-parameters
    (LightningCLI._parse_ckpt_path, from the dict already read); None when it holds none.
    The speed settings (model.compile, model.channels_last) are left to this run's config:
    checkpoint hparams override the command line, and a compiled run's file must test plain."""
    hparams = dict(checkpoint.get("hyper_parameters") or {})  # a copy: the dict goes on to the run
    for key in ("_instantiator", *PLAIN):
        hparams.pop(key, None)
    if not hparams:
        return None
    if "_class_path" in hparams:
        return {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
    return hparams


def check_ckpt_path(
    subcommand: str,
    ckpt_path: str | None,
    trainer: L.Trainer,
    model: torch.nn.Module,
    read: tuple[str, dict[str, Any]] | None = None,
) -> tuple[str | None, dict[str, Any] | None]:
    """--ckpt_path checked before anything runs, and the dict it read (None where it read none):
    `last` becomes the newest last checkpoint (none: `fit` starts from scratch, saying so; the
    other subcommands stop), `best` the best checkpoint's file (best_checkpoint), and a local
    file must be a seglight checkpoint that fits `model` (and, for `fit`, hold the training
    state). `read`: (path, dict) already read from that path. `hpc`, URLs, registry names and
    a `best` that cannot be known before the run are left to Lightning."""
    if ckpt_path is None:
        return None, None
    text = str(ckpt_path)
    if text == "last":
        candidates = last_checkpoint_candidates(trainer)
        if not candidates:
            where = _last_dirs(trainer)
            if subcommand != "fit":
                raise ConfigError(f"ckpt_path: last: no last checkpoint in {where}")
            rank_zero_info(f"seglight: --ckpt_path last: no last checkpoint in {where} yet; "
                           f"training starts from scratch")  # fmt: skip
            return None, None
        text = str(max(candidates, key=lambda p: p.stat().st_mtime))
    elif text == "best" and subcommand != "fit" and (best := best_checkpoint(trainer)):
        if not best.is_file():
            raise ConfigError(f"ckpt_path: best: no {best.name} in {best.parent} (written by fit)")
        text = str(best)
    elif text in ("best", "hpc") or "://" in text or text.startswith("registry:"):
        return text, None
    checkpoint = read[1] if read and str(read[0]) == text else read_checkpoint(text)
    check_seglight_checkpoint(text, checkpoint)
    removed = []
    if getattr(model, "strict_loading", True):
        removed = check_matches_model(text, checkpoint, model)
    if subcommand == "fit":
        check_resumable(text, checkpoint, removed)
    return text, checkpoint


def resolve_ckpt_path(
    subcommand: str, ckpt_path: str | None, trainer: L.Trainer, model: torch.nn.Module
) -> str | None:
    """check_ckpt_path's path alone."""
    return check_ckpt_path(subcommand, ckpt_path, trainer, model)[0]


def hand_over(trainer: L.Trainer, path: str, checkpoint: dict[str, Any]) -> bool:
    """Give the checkpoint read for the checks to the trainer's AtomicCheckpointIO, which returns
    it when Lightning loads `path` (fit/validate/test/predict with ckpt_path): one read, not two.
    False when another CheckpointIO is configured: Lightning then reads the file again."""
    checkpoint_io = trainer.strategy.checkpoint_io
    if not isinstance(checkpoint_io, AtomicCheckpointIO):
        return False
    checkpoint_io.preload(path, checkpoint)
    return True


def best_checkpoint(trainer: L.Trainer) -> Path | None:
    """The file `best` names in a new process (Lightning knows it only in the process that ran
    `fit`): the first ModelCheckpoint's, when it monitors a metric and its name is fixed (as
    seglight's best.ckpt); None when that cannot be known before the run."""
    callback = trainer.checkpoint_callback
    if not isinstance(callback, ModelCheckpoint) or callback.best_model_path:
        return None
    name = callback.filename
    if not (callback.monitor and callback.dirpath and name) or "{" in name:
        return None
    return Path(callback.dirpath) / f"{name}{callback.FILE_EXTENSION}"


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


def _last_dirs(trainer: L.Trainer) -> str:
    folders = {str(Path(trainer.default_root_dir) / "checkpoints")}
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.dirpath:
            folders.add(str(callback.dirpath))
    return " or ".join(sorted(folders))
