"""The parser every subcommand builds on, and one-line errors: a leaf (of seglight, it imports
only seglight.errors), so `seglight.cli` and each subcommand import it, never the reverse."""

import contextlib
import importlib
import inspect
import re
import sys
from collections.abc import Iterator

from jsonargparse import Namespace
from lightning.pytorch.cli import LightningArgumentParser
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from seglight.errors import ConfigError, NonFiniteLossError, did_you_mean, streaming_failure

DEFAULT_MODEL = "seglight.module.SegmentationModule"
DEFAULT_DATA = "seglight.data.synthetic.SyntheticDataModule"


class SeglightArgumentParser(LightningArgumentParser):
    """jsonargparse's errors list every alternative of every Union it tried (a misspelled key
    under `model:` yields ~10 lines about NoneType); this prints the line that says what's wrong."""

    def error(self, message: str, ex: Exception | None = None):  # type: ignore[override]
        unknown = re.search(r"Option '([^']+)' is not accepted", message)
        if unknown:  # from the parser of the class the option was meant for: it knows the options
            options = [a.dest.split(".")[-1] for a in self._actions]
            message = unknown.group(0) + did_you_mean(unknown.group(1), options)
        sys.stderr.write(f"seglight: error: {condense_error(message)}\n")
        sys.stderr.write("  (`seglight <subcommand> --help` lists the options)\n")
        sys.exit(2)

    def validate(self, *args, **kwargs) -> None:  # type: ignore[override]
        # Loggers need save_dir when built: an unset one is filled before it is found missing.
        cfg = args[0] if args else kwargs.get("namespace", kwargs.get("cfg"))
        if isinstance(cfg, Namespace):
            default_logger_save_dirs(cfg)
            _check_seed(self, cfg)
        super().validate(*args, **kwargs)


def _check_seed(parser: "SeglightArgumentParser", cfg: Namespace) -> None:
    """Lightning's seed_everything raises a numpy ValueError for a seed numpy cannot take."""
    subcommand = cfg.get("subcommand")
    seed = cfg.get(f"{subcommand}.seed_everything" if subcommand else "seed_everything")
    if isinstance(seed, int) and not isinstance(seed, bool) and not 0 <= seed < 2**32:
        parser.error(f"seed_everything: must be in [0, {2**32 - 1}] or true/false, got {seed}")


NOISE = re.compile(
    r"^(Does not validate against any|Subtypes:|Errors:|Given value|Got value|"
    r"Problem with given class_path|Expected a <class|Parser key|Not a valid subclass|"
    r"Import path|Not of type|Subclass types expect|a class path \(str\)|a dict with|"
    r"Given value type)"
)


def condense_error(message: str) -> str:
    """One line from a jsonargparse error: "<key>: <what is wrong>"."""
    keys = re.findall(r'[Pp]arser key "([^"]+)"', message)
    key = ".".join(_dedupe_keys(keys))
    lines = [ln.strip().lstrip("- ").strip() for ln in message.splitlines() if ln.strip()]
    # 'Parser key "x": what is wrong' on one line: keep what is wrong.
    lines = [re.sub(r'^[Pp]arser key "[^"]+":\s*', "", ln) or ln for ln in lines]
    specific = [ln for ln in lines if not NOISE.match(ln)]
    expected = [t for t in re.findall(r"Expected a <class '([\w.]+)'>", message) if t != "NoneType"]
    given = re.search(r"(?:Given|Got) value: ([^\n]*)", message)
    if specific:
        detail = specific[0]
    elif expected:
        detail = f"expected {' or '.join(dict.fromkeys(expected))}"
        if given:
            detail += f", got {given.group(1).strip()!r}"
    else:
        detail = lines[0] if lines else message.strip()
    return f"{key}: {detail}" if key and key not in detail else detail


def _dedupe_keys(keys: list[str]) -> list[str]:
    """Nested errors name keys relative to their parent: ["model", "loss.dice"]."""
    out: list[str] = []
    for key in keys:
        if not out or not key.startswith(out[-1]):
            out.append(key)
    return out


def default_logger_save_dirs(cfg: Namespace) -> None:
    """Each logger of the config whose save_dir is unset (or ".", W&B's default, with no `dir`)
    gets the trainer's default_root_dir, as the loggers the Trainer makes itself do; in place.
    `cfg` is a subcommand's config or the whole one (holding the subcommand's)."""
    subcommand = cfg.get("subcommand")
    section = cfg.get(subcommand) if isinstance(subcommand, str) else cfg
    trainer = section.get("trainer") if isinstance(section, Namespace) else None
    if not isinstance(trainer, Namespace):
        return
    # unset: Lightning's default, the current folder (a logger config given alone, for one)
    root = trainer.get("default_root_dir") or "."
    loggers = trainer.get("logger")
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        init_args = logger.get("init_args") if isinstance(logger, Namespace) else None
        if not isinstance(init_args, Namespace) or init_args.get("dir"):
            continue
        if init_args.get("save_dir") in (None, ".") and _has_save_dir(logger.get("class_path")):
            init_args["save_dir"] = str(root)


def _has_save_dir(class_path: str | None) -> bool:
    """Whether the logger class takes a save_dir (Comet, for one, does not)."""
    try:
        module, _, name = (class_path or "").rpartition(".")
        cls = getattr(importlib.import_module(module), name) if module else None
    except Exception:  # noqa: BLE001 - a bad class path is reported by the validation itself
        return False
    return cls is not None and "save_dir" in inspect.signature(cls).parameters


@contextlib.contextmanager
def one_line_errors() -> Iterator[None]:
    """What a run can raise that is the user's to fix, as one `seglight: error:` line and an exit
    status: a diverged training 1, a trainer setting or a ConfigError 2; anything else is raised."""
    try:
        yield
    except NonFiniteLossError as e:  # training diverged: one line says where; status 1, not 2
        sys.stderr.write(f"seglight: error: {e}\n")
        sys.exit(1)
    except MisconfigurationException as e:  # Lightning's word on a trainer setting: one line
        sys.stderr.write(f"seglight: error: trainer: {' '.join(str(e).split())}\n")
        sys.exit(2)
    except Exception as e:  # noqa: BLE001 - re-raised unless it is a ConfigError in disguise
        config_error = _find_config_error(e)
        if config_error is None:
            stream_error = streaming_failure(e)  # the object store went away mid-run: status 1
            if stream_error is None:
                raise
            sys.stderr.write(f"seglight: error: {stream_error}\n")
            sys.exit(1)
        sys.stderr.write(f"seglight: error: {_original_message(config_error)}\n")
        sys.exit(2)


def _original_message(error: ConfigError) -> str:
    """An error raised in a DataLoader worker comes back with the worker's traceback in its
    message ("Caught DataError in DataLoader worker process 0. Original Traceback ..."): the
    last line holds what was raised."""
    text = str(error)
    if "Original Traceback" not in text:
        return text
    last = [line for line in text.splitlines() if line.strip()][-1]
    return re.sub(r"^[\w.]+Error: ", "", last)


def _find_config_error(error: BaseException | None) -> ConfigError | None:
    """jsonargparse re-raises errors from a class's __init__ as a ValueError listing every Union
    alternative it tried; the ConfigError that says what is wrong is in the exception chain."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, ConfigError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None
