"""LightningCLI with seglight's defaults and argument links: `fit`, `validate`, `test`, `predict`.

python -m seglight fit --config configs/quickstart.yaml
python -m seglight test --config configs/quickstart.yaml --ckpt_path <file>.ckpt
python -m seglight fit --config configs/quickstart.yaml --model.optimizer.lr=3e-4  # W&B style
"""

import inspect
import os
import sys
import textwrap
from pathlib import Path

import lightning
from jsonargparse import ActionConfigFile, DefaultHelpFormatter
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from seglight.callbacks import (
    ClassReport,
    FiniteBestCheckpoint,
    MaskWriter,
    PredictionFailures,
    PreemptionCheckpoint,
    RngState,
    SaveConfig,
)
from seglight.callbacks.atomic_io import use_atomic_checkpoint_io
from seglight.checkpoints import read_checkpoint
from seglight.cli.ckpt_path import check_ckpt_path, cli_model_config, hand_over
from seglight.cli.parser import DEFAULT_DATA, DEFAULT_MODEL, SeglightArgumentParser
from seglight.data.base import SegmentationDataModule
from seglight.errors import ConfigError
from seglight.module import SegmentationModule

# What the data decides and the model is told (data.<key> -> model.<key>).
LINKED = ("num_classes", "ignore_index", "class_names", "task", "in_channels")
# Callbacks added to every run, by their config key; `--<key>=null` switches one off.
ALWAYS_ON = {"class_report": ClassReport, "preemption": PreemptionCheckpoint, "rng_state": RngState}


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

    fast_dev_run writes no checkpoint (seglight.callbacks.FiniteBestCheckpoint, ...Preemption...).

    Callbacks every run gets (ALWAYS_ON), each a top-level key shown by --print_config, that
    `--<key>=null` switches off: class_report (per-class table, test report files), preemption
    (SIGTERM/SIGUSR1 -> last.ckpt), rng_state (exact resume). One also listed under
    trainer.callbacks is not added twice.
    """

    description = "seglight: semantic segmentation on PyTorch Lightning."  # top-level --help

    def __init__(self, *args, description: str | None = None, **kwargs) -> None:
        if description is not None:
            self.description = description
        given = kwargs.get("args")
        self._argv = list(sys.argv[1:] if given is None else given) if not isinstance(
            given, dict) else []  # fmt: skip
        super().__init__(*args, **kwargs)

    def init_parser(self, **kwargs) -> LightningArgumentParser:
        # As LightningCLI.init_parser, with the parser class that condenses errors.
        kwargs.setdefault("dump_header", [f"lightning.pytorch=={lightning.__version__}"])
        kwargs.setdefault("prog", "seglight")  # not "__main__.py" under `python -m seglight`
        if kwargs.get("description") in (None, "Lightning Trainer command line tool"):
            kwargs["description"] = self.description  # the table's, from seglight.cli
        kwargs.setdefault("formatter_class", _LinesHelpFormatter)
        parser = SeglightArgumentParser(**kwargs)
        parser.add_argument(
            "-c", "--config", action=ActionConfigFile, help="Path to a configuration file (YAML)."
        )
        return parser

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # The data module knows its classes; the model is told, so a config states them once.
        for key in LINKED:
            parser.link_arguments(f"data.{key}", f"model.init_args.{key}", apply_on="instantiate")
        parser.set_defaults(
            {"model": {"class_path": DEFAULT_MODEL}, "data": {"class_path": DEFAULT_DATA}}
        )
        for key, callback in ALWAYS_ON.items():
            parser.add_subclass_arguments(callback, key, required=False, fail_untyped=False)
            parser.set_defaults({key: {"class_path": f"seglight.callbacks.{callback.__name__}"}})

    def _parse_ckpt_path(self) -> None:
        """LightningCLI reads --ckpt_path's hyper-parameters into the config before anything is
        built; a bad file must be refused here, with one line naming it, not a pickle traceback.
        (`last`/`best`/`hpc` are not files: they are resolved in instantiate_trainer.)"""
        subcommand = self.config.get("subcommand")
        path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if not (path and Path(path).exists()):
            return super()._parse_ckpt_path()
        # Lightning's own version torch.loads the file again: this one uses the dict read here,
        # kept for the checks in instantiate_trainer and for the run itself (one read in all).
        self._ckpt_read = (path, read_checkpoint(path))
        model = cli_model_config(self._ckpt_read[1])
        if model is None:
            return
        before = self.config[subcommand]
        try:
            self.config = self.parser.parse_object({subcommand: {"model": model}}, self.config)
        except SystemExit:
            sys.stderr.write("Parsing of ckpt_path hyperparameters failed!\n")
            raise
        # Lightning lets the checkpoint's hyper-parameters override the command line, so
        # `test --ckpt_path X --model.threshold=0.3` would silently test at the trained
        # threshold: the values of the --model.* flags given are put back, on top, except those
        # that shape the network's weights, which only the checkpoint's can load (a flag that
        # disagrees is said, in one line, and left out).
        after = self.config[subcommand]
        for key in dict.fromkeys(k.split(".")[0] for k in model_flag_keys(self._argv)):
            paths = (f"model.init_args.{key}", f"model.{key}")
            where = next((w for w in paths if w in before), None)
            if where is None or before[where] == after.get(where):
                continue
            if key in NETWORK_KEYS:
                given, kept = before[where], after.get(where)
                rank_zero_warn_line(f"--model.{key}={given!r} is not used: the network comes "
                                    f"from --ckpt_path, which has {kept!r}")  # fmt: skip
            else:
                after[where] = before[where]

    def instantiate_trainer(self, **kwargs) -> lightning.Trainer:
        """LightningCLI's trainer, with atomic checkpoint saves (unless the config names a
        CheckpointIO), checkpoint folders fixed (dirpath null: <default_root_dir>/checkpoints)
        and --ckpt_path checked and resolved before anything runs; checkpoints are loaded with
        weights_only=True unless --weights_only=false (seglight.checkpoints)."""
        self._check_linked_model_args()
        self._add_always_on_callbacks()
        trainer = super().instantiate_trainer(**kwargs)
        for callback in trainer.checkpoint_callbacks:  # dirpath null: fixed now, under the root
            if isinstance(callback, FiniteBestCheckpoint):
                callback.resolve_dirpath(trainer)
        trainer_config = self._get(self.config_init, "trainer", default={}) or {}
        use_atomic_checkpoint_io(trainer, trainer_config.get("plugins"))
        section = self.config_init.get(self.subcommand) if self.subcommand else None
        if section is not None and "ckpt_path" in section:
            path, read = section["ckpt_path"], getattr(self, "_ckpt_read", None)
            self._ckpt_read = None
            path, checkpoint = check_ckpt_path(self.subcommand, path, trainer, self.model, read)
            if checkpoint is not None:  # Lightning's restore gets this dict, not another read
                hand_over(trainer, path, checkpoint)
            section["ckpt_path"] = path
            if section.get("weights_only") is None:
                section["weights_only"] = True
        return trainer

    def _check_linked_model_args(self) -> None:
        """A linked model argument the user also set (e.g. --model.in_channels=4) would be
        silently replaced by the data module's value: one line instead, unless they agree."""
        section = self.config.get(self.subcommand) if self.subcommand else self.config
        given = section.get("model", {}).get("init_args") if section else None
        if given is None or self.model is None or section.get("ckpt_path"):
            return  # with --ckpt_path they come from the checkpoint, checked against the data
        for key in LINKED:
            value, default = given.get(key), _default(type(self.model), key)
            actual = self.model.hparams.get(key)
            if value is None or value == default or value == actual:
                continue
            raise ConfigError(
                f"model.{key}: {value!r} was given, but the data module sets it "
                f"(data.{key} = {actual!r}); set it on the data (classes, bands, task, ...) "
                f"and remove model.{key}"
            )

    def _add_always_on_callbacks(self) -> None:
        """The ALWAYS_ON callbacks that are not null into trainer.callbacks (the Trainer orders
        them before the checkpoint callbacks), unless one of that class or a subclass is there."""
        section = self.config_init.get(self.subcommand) if self.subcommand else self.config_init
        trainer = section.get("trainer")
        if trainer is None:
            return
        callbacks = trainer.get("callbacks") or []
        callbacks = list(callbacks) if isinstance(callbacks, list | tuple) else [callbacks]
        for key in ALWAYS_ON:
            callback = section.get(key)
            if callback is not None and not any(isinstance(c, type(callback)) for c in callbacks):
                callbacks.append(callback)
        trainer["callbacks"] = callbacks

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


def _default(cls: type, name: str):
    """The default of __init__ argument `name` where the class hierarchy declares it (a
    subclass may take it through **kwargs)."""
    for klass in cls.__mro__:
        param = inspect.signature(klass.__init__).parameters.get(name)
        if param is not None and param.kind is param.POSITIONAL_OR_KEYWORD:
            return param.default
    return None


class _LinesHelpFormatter(DefaultHelpFormatter):
    """Wraps each line of a description on its own, keeping its indent: the table of
    subcommands keeps one a line."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        lines = []
        for line in text.splitlines():
            lead = indent + " " * (len(line) - len(line.lstrip()))
            lines.append(
                textwrap.fill(
                    line.strip(), width, initial_indent=lead, subsequent_indent=lead + "    "
                )
            )
        return "\n".join(lines)


# Hyper-parameters that decide the network's weights: --ckpt_path's values stand for them.
NETWORK_KEYS = frozenset(
    "arch encoder_name encoder_weights in_channels num_classes ignore_index class_names task "
    "model_kwargs".split()
)


def rank_zero_warn_line(message: str) -> None:
    """One `seglight: warning:` line on stderr, from the first process only."""
    if int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0:
        sys.stderr.write(f"seglight: warning: {message}\n")


def model_flag_keys(argv: list[str]) -> list[str]:
    """The keys of the `--model.<key>` flags of a command line (`--model.x=1` or `--model.x 1`
    give "x"; `--model.eval_protocol.flip=true` gives "eval_protocol.flip"), in order."""
    return [str(t)[len("--model.") :].split("=", 1)[0] for t in argv
            if str(t).startswith("--model.")]  # fmt: skip


def build_cli(
    args: list[str] | None = None, run: bool = True, description: str | None = None
) -> SeglightCLI:
    """The SeglightCLI of `seglight fit|validate|test|predict ...` (`run=False`: parsed and
    built, not run, for callers that drive the trainer themselves, as `seglight seeds`)."""
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
        description=description,
    )
