"""The command line: LightningCLI with seglight's defaults, argument links and one-line errors.

    python -m seglight fit --config configs/quickstart.yaml
    python -m seglight test --config configs/quickstart.yaml --ckpt_path <file>.ckpt
    python -m seglight fit --config configs/quickstart.yaml --model.optimizer.lr=3e-4  # W&B style
"""

import re
import sys

import lightning
from jsonargparse import ActionConfigFile
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from seglight.data.base import SegmentationDataModule
from seglight.errors import ConfigError
from seglight.module import SegmentationModule

DEFAULT_MODEL = "seglight.module.SegmentationModule"
DEFAULT_DATA = "seglight.data.synthetic.SyntheticDataModule"


class SeglightArgumentParser(LightningArgumentParser):
    """jsonargparse's errors list every alternative of every Union it tried (a misspelled key
    under `model:` yields ~10 lines about NoneType); this prints the line that says what's wrong."""

    def error(self, message: str, ex: Exception | None = None):  # type: ignore[override]
        if getattr(self, "_seglight_raw_errors", False):
            return super().error(message, ex)
        sys.stderr.write(f"{self.prog}: error: {condense_error(message)}\n")
        sys.stderr.write(f"  (run `{self.prog} --help` for the options)\n")
        sys.exit(2)


def condense_error(message: str) -> str:
    """The most specific line of a jsonargparse error, with the key it is about."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    noise = ("Expected a <class 'NoneType'>", "Given value", "Does not validate against any",
             "Problem with given class_path", "Errors:")
    useful = [ln for ln in lines if not ln.lstrip("- ").startswith(noise)]
    keys = re.findall(r'[Pp]arser key "([^"]+)"', message)
    specific = [ln for ln in useful if not re.match(r'^[Pp]arser key "[^"]+":?$', ln)]
    detail = specific[0] if specific else (useful[0] if useful else message.strip())
    detail = detail.lstrip("- ")
    if keys and keys[-1] not in detail:
        return f'"{".".join(_dedupe_keys(keys))}": {detail}'
    return detail


def _dedupe_keys(keys: list[str]) -> list[str]:
    """Nested errors name keys relative to their parent: ["model", "loss.dice"]."""
    out: list[str] = []
    for key in keys:
        if not out or not key.startswith(out[-1]):
            out.append(key)
    return out


class SeglightCLI(LightningCLI):
    """LightningCLI with the model and dataset linked, and the built-in data as the default."""

    def init_parser(self, **kwargs) -> LightningArgumentParser:
        # As LightningCLI.init_parser, with the parser class that condenses errors.
        kwargs.setdefault("dump_header", [f"lightning.pytorch=={lightning.__version__}"])
        parser = SeglightArgumentParser(**kwargs)
        parser.add_argument(
            "-c", "--config", action=ActionConfigFile, help="Path to a configuration file (YAML)."
        )
        return parser

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # The data module knows its classes; the model is told, so a config states them once.
        for key in ("num_classes", "ignore_index", "class_names"):
            parser.link_arguments(f"data.{key}", f"model.init_args.{key}", apply_on="instantiate")
        parser.set_defaults({"model": {"class_path": DEFAULT_MODEL}, "data": {"class_path": DEFAULT_DATA}})


def main(args: list[str] | None = None, run: bool = True) -> SeglightCLI | None:
    """Entry point of `seglight` and `python -m seglight`; `args` lets tests drive it."""
    try:
        return SeglightCLI(
            SegmentationModule,
            SegmentationDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            auto_configure_optimizers=False,  # the module's optimizer/lr_scheduler arguments do it
            save_config_kwargs={"overwrite": True},
            args=args,
            run=run,
        )
    except ConfigError as e:
        sys.stderr.write(f"seglight: error: {e}\n")
        sys.exit(2)
