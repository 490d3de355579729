"""The one checkpoint loader: each file read once, checked, and built into a module from that read.

    read_checkpoint      the dict of a local file (torch.load, weights_only=True), or a one-line
                         ConfigError naming the file: missing, empty, truncated, foreign, unsafe
    check_*              a seglight checkpoint? fitting the configured model? resumable by `fit`?
    load_module          the SegmentationModule (or the subclass it names) built from that dict:
                         SegmentationModule.load_from_checkpoint and `seglight export` use it
    check_ckpt_path      --ckpt_path (`last`, `best` resolved) checked before any run; the dict
                         it read goes to the run's AtomicCheckpointIO (hand_over), so Lightning's
                         restore does not read the file again

Where Lightning reads a file itself (remote paths, `hpc`, a CheckpointIO named in the config)
it reads it with its own checks; seglight reads local files only.
"""

import importlib
import inspect
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.accelerators import XLAAccelerator
from lightning.pytorch.core.saving import load_hparams_from_tags_csv, load_hparams_from_yaml
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.migration import migrate_checkpoint, pl_legacy_patch
from lightning.pytorch.utilities.model_helpers import is_overridden

from seglight.errors import ConfigError

# Instantiators a checkpoint may name (as Lightning's core.saving allows): the CLI's, nothing else.
ALLOWED_INSTANTIATORS = {
    "lightning.pytorch.cli.instantiate_module",
    "pytorch_lightning.cli.instantiate_module",
}


def _sentence(error: BaseException, limit: int = 160) -> str:
    """The first sentence of an error from torch, which can run to a paragraph."""
    text = " ".join(str(error).split())
    line = re.split(r"(?<=[.:;])\s", text, maxsplit=1)[0].rstrip(".:;")
    if len(line) > limit:
        line = line[: limit - 3] + "..."
    return f"{type(error).__name__}: {line}".rstrip(": ")


def read_checkpoint(
    path: str | Path, what: str = "ckpt_path", map_location: Any = "cpu", weights_only: bool = True
) -> dict[str, Any]:
    """The checkpoint dict of a local Lightning checkpoint file, loaded with weights_only=True
    and memory-mapped (tensors are read when used: cheap for a 1 GB file). ConfigError, with
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
            f"{what}: {path} is not a checkpoint torch can load: it is not a PyTorch checkpoint "
            f"file (it starts with {head[:4]!r})"
        )
    try:  # mmap: tensors are read when used, so a check is cheap; legacy files: whole
        with pl_legacy_patch():  # old Lightning classes, for weights_only=False
            checkpoint = torch.load(
                path, map_location=map_location, weights_only=weights_only, mmap=is_zip
            )
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
                f"{what}: {path} is not a Lightning checkpoint: it is a plain state_dict "
                f"(torch.save(model.state_dict())); encoder weights go to --model.encoder_weights"
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
            f"{what}: {path} is not a checkpoint of a seglight SegmentationModule but of another "
            f"LightningModule{of}"
        )


def check_matches_model(
    path: str | Path, checkpoint: dict[str, Any], model: torch.nn.Module, what: str = "ckpt_path"
) -> list[str]:
    """ConfigError when the checkpoint's weights do not fit `model` (another architecture,
    encoder or number of classes): the first missing, unexpected or differently shaped one.
    Returns the keys of modules the model has dropped, removed from the checkpoint's dict."""
    expected = model.state_dict()
    saved = checkpoint["state_dict"]
    # weights of encoder stages the model no longer builds (seglight.networks.parts.
    # drop_unused_modules): files saved before they were dropped still load
    net = getattr(model, "net", None)
    dropped = [f"net.encoder.{p}." for p in getattr(getattr(net, "encoder", None),
                                                   "seglight_dropped", [])]  # fmt: skip
    removed = [k for k in saved if k not in expected and k.startswith(tuple(dropped or ["\0"]))]
    for key in removed:
        del saved[key]
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
    return removed


def check_resumable(
    path: str | Path, checkpoint: dict[str, Any], removed: list[str], what: str = "ckpt_path"
) -> None:
    """`fit --ckpt_path` restores the optimizer and loops: a weights-only file cannot, nor one
    whose optimizer state counts the weights of modules the model has dropped since
    (`removed`, from check_matches_model)."""
    if "optimizer_states" not in checkpoint or "loops" not in checkpoint:
        raise ConfigError(
            f"{what}: {path} holds the weights only (ModelCheckpoint save_weights_only=true): "
            f"`fit` cannot resume from it; validate/test/predict/export can use it"
        )
    if removed:
        raise ConfigError(
            f"{what}: {path} was saved by an older seglight whose network still held encoder "
            f"modules that no training step uses ({len(removed)} tensors, e.g. {removed[0]}); "
            f"its optimizer state counts them, so `fit` cannot resume from it: resume with the "
            f"seglight version that wrote it; validate/test/predict/export can use it"
        )


# --- building the module from the dict ---------------------------------------------------------


def module_class(
    checkpoint: dict[str, Any],
    path: str | Path,
    what: str = "ckpt_path",
    base: type = L.LightningModule,
) -> type:
    """The class LightningCLI recorded (`--model path.to.Subclass`), imported as `fit` would,
    which must be a `base`; `base` itself when the checkpoint names none. (The caller passes
    SegmentationModule: seglight.module imports this module, not the other way round.)"""
    class_path = (checkpoint.get("hyper_parameters") or {}).get("_class_path")
    if not class_path:
        return base
    module_name, _, name = str(class_path).rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as e:
        raise ConfigError(
            f"{what}: {path} holds a {class_path}, which cannot be imported ({_sentence(e)}); "
            f"put the module that defines it on PYTHONPATH"
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ConfigError(f"{what}: {path} holds a {class_path}, not a {base.__name__}")
    return cls


def load_module(
    path: str | Path,
    map_location: Any = None,
    hparams_file: str | Path | None = None,
    strict: bool | None = None,
    *,
    cls: type | None = None,
    base: type = L.LightningModule,
    weights_only: bool = True,
    what: str = "ckpt_path",
    **hparams: Any,
) -> L.LightningModule:
    """`cls` (default: the `base` subclass the checkpoint names, see module_class) rebuilt from
    a local checkpoint file read once: checked (read_checkpoint, check_seglight_checkpoint),
    then built from that dict as Lightning's load_from_checkpoint builds it (hparams, `hparams`
    overriding them, on_load_checkpoint, load_state_dict) and moved to the device of its weights.
    map_location: as torch.load's; None keeps the saved device where it exists, else the CPU."""
    checkpoint = read_checkpoint(path, what, map_location or _saved_or_cpu, weights_only)
    check_seglight_checkpoint(path, checkpoint, what)
    checkpoint, _ = migrate_checkpoint(checkpoint)  # files of older Lightning versions
    if hparams_file is not None:
        checkpoint["hyper_parameters"] = _hparams_file(hparams_file, what)
    cls = cls or module_class(checkpoint, path, what, base)
    module = build_module(cls, checkpoint, strict, hparams, f"{what}: {path}")
    module.data_normalization = stored_normalization(checkpoint)
    return module


def stored_normalization(checkpoint: dict[str, Any]) -> tuple[list[float], list[float]] | None:
    """(data.mean, data.std) of the run that saved `checkpoint` (the data module's state, which
    Lightning stores under the data module's class name), or None (older files, other data)."""
    for value in checkpoint.values():
        found = value.get("normalization") if isinstance(value, dict) else None
        if isinstance(found, dict) and {"mean", "std"} <= found.keys():
            return [float(m) for m in found["mean"]], [float(s) for s in found["std"]]
    return None


def _hparams_file(path: str | Path, what: str) -> dict[str, Any]:
    suffix = Path(path).suffix.lower()
    if suffix not in (".csv", ".yml", ".yaml"):
        raise ConfigError(f"{what}: hparams_file {path} must be a .csv, .yml or .yaml file")
    return load_hparams_from_tags_csv(path) if suffix == ".csv" else load_hparams_from_yaml(path)


def build_module(
    cls: type,
    checkpoint: dict[str, Any],
    strict: bool | None = None,
    hparams: dict[str, Any] | None = None,
    source: str = "checkpoint",
) -> L.LightningModule:
    """The module of an already-read checkpoint dict (Lightning's core.saving._load_state, with
    public APIs): the saved hyper-parameters, then `hparams`, as __init__ arguments. `source`
    names the file in errors."""
    kwargs = dict(checkpoint.get("hyper_parameters") or {})
    name = checkpoint.get("hparams_name")  # hparams saved as one argument of __init__
    params = inspect.signature(cls.__init__).parameters
    named = [
        n
        for n, p in params.items()
        if n != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    ]
    # Lightning records hparams_name "kwargs" for hparams collected from __init__'s arguments:
    # only a named parameter of that name means "all the hparams as one argument".
    if name and name in named:
        kwargs = {name: kwargs}
    kwargs |= hparams or {}
    instantiator = kwargs.pop("_instantiator", None)
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        kwargs = {k: v for k, v in kwargs.items() if k in named}
    if instantiator is None:
        module = cls(**kwargs)
    elif instantiator in ALLOWED_INSTANTIATORS:  # the CLI's: jsonargparse types the arguments
        from lightning.pytorch.cli import instantiate_module

        module = instantiate_module(cls, kwargs)
    else:
        raise ConfigError(
            f"{source} names the instantiator {instantiator!r}, not one of "
            f"{sorted(ALLOWED_INSTANTIATORS)}: loading it would run code named by the file"
        )
    strict = module.strict_loading if strict is None else strict
    if is_overridden("configure_model", module):
        module.configure_model()
    module.on_load_checkpoint(checkpoint)
    keys = module.load_state_dict(checkpoint["state_dict"], strict=strict)
    if not strict and keys.missing_keys:
        rank_zero_warn(f"Weights of the model missing in the checkpoint: {keys.missing_keys}")
    if not strict and keys.unexpected_keys:
        rank_zero_warn(f"Weights in the checkpoint not in the model: {keys.unexpected_keys}")
    tensors = (t for t in checkpoint["state_dict"].values() if isinstance(t, torch.Tensor))
    return module.to(next(tensors, torch.tensor(0)).device)


def _saved_or_cpu(storage: Any, location: str) -> Any:
    """torch.load map_location: the saved device when this machine has it, else the CPU."""
    if location.startswith("cuda") and not torch.cuda.is_available():
        return storage.cpu()
    if location.startswith("mps") and not torch.backends.mps.is_available():
        return storage.cpu()
    if location.startswith("xla") and not XLAAccelerator.is_available():
        return storage.cpu()
    return None
