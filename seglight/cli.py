"""The command line: LightningCLI with seglight's defaults, argument links and one-line errors.

python -m seglight fit --config configs/quickstart.yaml
python -m seglight test --config configs/quickstart.yaml --ckpt_path <file>.ckpt
python -m seglight fit --config configs/quickstart.yaml --model.optimizer.lr=3e-4  # W&B style
"""

import importlib
import inspect
import os
import re
import sys
from pathlib import Path

# Lightning's own calls into jsonargparse are deprecated there; the warnings are not the user's.
os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")

import lightning  # noqa: E402
from jsonargparse import ActionConfigFile, Namespace  # noqa: E402
from lightning.pytorch.callbacks import BasePredictionWriter  # noqa: E402
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI  # noqa: E402
from lightning.pytorch.utilities.exceptions import MisconfigurationException  # noqa: E402

from seglight.best_checkpoint import ModelCheckpoint  # noqa: E402
from seglight.callbacks import MaskWriter, PredictionFailures  # noqa: E402
from seglight.checkpointing import (  # noqa: E402
    read_checkpoint,
    resolve_ckpt_path,
    use_atomic_checkpoint_io,
)
from seglight.data.base import SegmentationDataModule  # noqa: E402
from seglight.errors import ConfigError, NonFiniteLossError, did_you_mean  # noqa: E402
from seglight.loggers import SaveConfig  # noqa: E402
from seglight.module import SegmentationModule  # noqa: E402

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


def _dedupe_keys(keys: list[str]) -> list[str]:
    """Nested errors name keys relative to their parent: ["model", "loss.dice"]."""
    out: list[str] = []
    for key in keys:
        if not out or not key.startswith(out[-1]):
            out.append(key)
    return out


class SeglightCLI(LightningCLI):
    """LightningCLI with the model and dataset linked, and the built-in data as the default.

    Where a run's outputs go: under <root> = trainer.default_root_dir (configs: outputs/<name>),
    so --trainer.default_root_dir=X moves them all; a path given for one output wins.

        output                              default                      option that moves it
        best.ckpt, last.ckpt                <root>/checkpoints           ModelCheckpoint dirpath
        CSV / TensorBoard logs              <root>/<name>/version_<N>    logger save_dir, name
        W&B run                             <root>/wandb/<run>           logger save_dir
        config.yaml, images/, test_report.* the logger's run folder (trainer.log_dir, as above)
        predicted masks                     <root>/predictions           MaskWriter output_dir
        seeds_summary.json                  <root>                       seglight seeds --summary

    fast_dev_run writes no checkpoint (seglight.best_checkpoint, seglight.preemption).
    """

    def init_parser(self, **kwargs) -> LightningArgumentParser:
        # As LightningCLI.init_parser, with the parser class that condenses errors.
        kwargs.setdefault("dump_header", [f"lightning.pytorch=={lightning.__version__}"])
        kwargs.setdefault("prog", "seglight")  # not "__main__.py" under `python -m seglight`
        if kwargs.get("description") in (None, "Lightning Trainer command line tool"):
            kwargs["description"] = (
                "seglight: semantic segmentation on PyTorch Lightning. Besides the subcommands "
                "below: `seglight audit` checks a dataset, `seglight export` writes ONNX/"
                "TorchScript, `seglight seeds` runs fit+test per seed (mean ± std); each has "
                "--help."
            )
        parser = SeglightArgumentParser(**kwargs)
        parser.add_argument(
            "-c", "--config", action=ActionConfigFile, help="Path to a configuration file (YAML)."
        )
        return parser

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # The data module knows its classes; the model is told, so a config states them once.
        for key in ("num_classes", "ignore_index", "class_names"):
            parser.link_arguments(f"data.{key}", f"model.init_args.{key}", apply_on="instantiate")
        parser.set_defaults(
            {"model": {"class_path": DEFAULT_MODEL}, "data": {"class_path": DEFAULT_DATA}}
        )

    def _parse_ckpt_path(self) -> None:
        """LightningCLI reads --ckpt_path's hyper-parameters into the config before anything is
        built; a bad file must be refused here, with one line naming it, not a pickle traceback.
        (`last`/`best`/`hpc` are not files: they are resolved in instantiate_trainer.)"""
        subcommand = self.config.get("subcommand")
        path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if path and Path(path).exists():
            read_checkpoint(path)
        super()._parse_ckpt_path()

    def instantiate_trainer(self, **kwargs) -> lightning.Trainer:
        """LightningCLI's trainer, with atomic checkpoint saves (unless the config names a
        CheckpointIO), checkpoint folders fixed (dirpath null: <default_root_dir>/checkpoints)
        and --ckpt_path checked and resolved before anything runs; checkpoints are loaded with
        weights_only=True unless --weights_only=false (seglight.checkpointing)."""
        trainer = super().instantiate_trainer(**kwargs)
        for callback in trainer.checkpoint_callbacks:  # dirpath null: fixed now, under the root
            if isinstance(callback, ModelCheckpoint):
                callback.resolve_dirpath(trainer)
        trainer_config = self._get(self.config_init, "trainer", default={}) or {}
        use_atomic_checkpoint_io(trainer, trainer_config.get("plugins"))
        section = self.config_init.get(self.subcommand) if self.subcommand else None
        if section is not None and "ckpt_path" in section:
            path = section["ckpt_path"]
            section["ckpt_path"] = resolve_ckpt_path(self.subcommand, path, trainer, self.model)
            if section.get("weights_only") is None:
                section["weights_only"] = True
        return trainer

    def predict(self, **kwargs) -> list | None:
        """`predict` streams: each batch's masks go to the prediction writers and are not kept
        in memory (memory would grow with the number of images) unless --return_predictions=true.
        Without a writer in the config, a MaskWriter writes to <log dir>/predictions.
        Images that cannot be read are skipped: the run predicts the others, lists the skipped
        files (PredictionFailures) and exits with status 1."""
        if kwargs.get("return_predictions") is None:
            kwargs["return_predictions"] = False
        if not any(isinstance(c, BasePredictionWriter) for c in self.trainer.callbacks):
            self.trainer.callbacks.append(MaskWriter())
        failures = next(
            (c for c in self.trainer.callbacks if isinstance(c, PredictionFailures)), None
        )
        if failures is None:
            failures = PredictionFailures()
            self.trainer.callbacks.append(failures)
        predictions = self.trainer.predict(**kwargs)
        if failures.failures:  # listed by the callback, on rank 0, after the run
            sys.exit(1)
        return predictions


def main(args: list[str] | None = None, run: bool = True) -> SeglightCLI | None:
    """Entry point of `seglight` and `python -m seglight`; `args` lets tests drive it.
    `seglight audit ...` (seglight/audit.py) exits with its status: 1 when it found problems;
    `seglight export ...` (seglight/export.py) with 0, or 2 when the export is not usable;
    `seglight seeds ...` (seglight/seeds.py) runs fit + test per seed and reports mean ± std."""
    argv = sys.argv[1:] if args is None else args
    try:
        if isinstance(argv, list | tuple) and argv and argv[0] == "audit":  # not Lightning's
            from seglight.audit import run_audit

            sys.exit(run_audit(argv[1:]))
        if isinstance(argv, list | tuple) and argv and argv[0] == "export":  # not Lightning's
            from seglight.export import run_export

            sys.exit(run_export(argv[1:]))
        if isinstance(argv, list | tuple) and argv and argv[0] == "seeds":  # not Lightning's
            from seglight.seeds import run_seeds

            sys.exit(run_seeds(argv[1:]))
        return SeglightCLI(
            SegmentationModule,
            SegmentationDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            auto_configure_optimizers=False,  # the module's optimizer/lr_scheduler arguments do it
            save_config_callback=SaveConfig,  # config.yaml, and the same config into W&B
            save_config_kwargs={"overwrite": True},
            args=args,
            run=run,
        )
    except NonFiniteLossError as e:  # training diverged: one line says where; status 1, not 2
        sys.stderr.write(f"seglight: error: {e}\n")
        sys.exit(1)
    except MisconfigurationException as e:  # Lightning's word on a trainer setting: one line
        sys.stderr.write(f"seglight: error: trainer: {' '.join(str(e).split())}\n")
        sys.exit(2)
    except Exception as e:  # noqa: BLE001 - re-raised unless it is a ConfigError in disguise
        config_error = _find_config_error(e)
        if config_error is None:
            raise
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


def console_main() -> None:
    """The `seglight` console script: exit status 0 on success (main() returns the CLI object,
    which `sys.exit` would print and turn into status 1)."""
    main()
