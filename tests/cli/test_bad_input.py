"""Bad input is one line, never a traceback: every data-module argument with wrong values, and
trainer/model/callback settings that only fail once things run, through the real CLI.

A case passes when the run either works (the value was fine after all) or stops with exit
status 2 (1 for a failed run) and one `seglight: error:` line naming what is wrong; any other
exception, or an error of several lines, fails it. The fast suite tries one wrong value per
argument; `-m slow` tries them all.
"""

import contextlib
import inspect
import io
import sys

import pytest

from seglight.cli import main
from seglight.data.base import SegmentationDataModule
from seglight.data.synthetic import SyntheticDataModule
from seglight.errors import ConfigError

from seglight_testing import QUICKSTART, TINY

# Wrong values per annotated type; the first of each list runs in the fast suite.
WRONG = {
    "int": ["-1", "0", "abc", "1.5"],
    "float": ["-1", "nan", "abc"],
    "bool": ["maybe"],
    "str": ["/nonexistent/folder", "''"],
    "tuple": ["[0, 0]", "[]", "abc", "[1]"],
    "list": ["abc", "[]", "[1]"],
    "dict": ["abc", "{x: 1}"],
}
KINDS = ("tuple", "Sequence", "list", "dict", "bool", "float", "int", "str")


def kind(annotation) -> str:
    text = str(annotation)
    found = next((k for k in KINDS if k in text), "str")
    return {"Sequence": "tuple"}.get(found, found)


def data_cases(first_only: bool) -> list[list[str]]:
    cases = []
    for cls in (SyntheticDataModule, SegmentationDataModule):
        for name, p in inspect.signature(cls.__init__).parameters.items():
            if name in ("self", "kwargs"):
                continue
            values = WRONG[kind(p.annotation)]
            cases += [[f"--data.{name}={v}"] for v in values[: 1 if first_only else None]]
    return cases


def one_line_or_success(run) -> str:
    """Run; return "ran" or the error line, failing on a traceback or a multi-line error."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            run()
    except SystemExit as e:
        lines = [ln for ln in err.getvalue().splitlines() if ln.startswith("seglight: error:")]
        assert e.code in (1, 2) and len(lines) == 1, err.getvalue()[-2000:]
        return lines[0]
    except ConfigError as e:  # raised after the CLI built everything (setup, first batch)
        assert "\n" not in str(e), str(e)
        return str(e)
    return "ran"


def instantiate_and_step(args: list[str]) -> None:
    """Parse and build everything, set up the data, run one training and one validation batch
    through the model: where data options act."""
    cli = main(["--config", QUICKSTART, *TINY, *args], run=False)
    dm, model = cli.datamodule, cli.model
    dm.trainer = cli.trainer
    dm.setup("fit")
    model.shared_step(next(iter(dm.train_dataloader())), "train")
    model.eval()
    model.validation_step(next(iter(dm.val_dataloader())), 0)


@pytest.mark.parametrize("args", data_cases(first_only=True), ids=lambda a: a[0])
def test_wrong_data_argument_is_one_line(args, in_tmp):
    one_line_or_success(lambda: instantiate_and_step(args))


@pytest.mark.slow
@pytest.mark.parametrize("args", data_cases(first_only=False), ids=lambda a: a[0])
def test_every_wrong_data_value_is_one_line(args, in_tmp):
    one_line_or_success(lambda: instantiate_and_step(args))


FIT = ["fit", "--config", QUICKSTART, *TINY, "--trainer.max_steps=1", "--trainer.logger=false",
       "--trainer.limit_val_batches=1", "--trainer.enable_checkpointing=false"]  # fmt: skip

# Settings that act when a run starts; (arguments, what the line must say).
RUN_CASES = [
    (["--seed_everything=-5"], "seed_everything: must be in [0, 4294967295]"),
    (["--trainer.strategy=deepspeed"], "trainer: To use the `DeepSpeedStrategy`"),
    (["--trainer.accelerator=gpu"], "trainer:"),
    (["--trainer.callbacks+=seglight.callbacks.MaskWriter",
      "--trainer.callbacks.overlay_alpha=3"], "MaskWriter.overlay_alpha: must be in [0, 1]"),
    (["--model.eval_protocol.window=[0, 0]"], "eval_protocol.window"),
    (["--data.train_transforms=[{name: Resize, height: 0, width: 10}]"], "for Resize"),
    (["--model.loss.unknown=1"], "unknown"),
]  # fmt: skip


@pytest.mark.parametrize("args, says", RUN_CASES, ids=lambda a: a[0] if isinstance(a, list) else "")
def test_run_settings_are_one_line(args, says, in_tmp):
    line = one_line_or_success(lambda: main([*FIT, *args]))
    assert says in line, line


def test_the_fuzz_would_catch_a_traceback(in_tmp, monkeypatch):
    """The check itself: a library error deep in setup is not taken for a one-line error."""
    monkeypatch.setattr(SyntheticDataModule, "setup", lambda self, stage: [][1])
    with pytest.raises(IndexError):
        one_line_or_success(lambda: instantiate_and_step([]))
    assert sys.argv == ["seglight"]  # in_tmp keeps pytest's argv from the CLI


# The other subcommands, with wrong arguments: (arguments, what the line must say).
SUBCOMMAND_CASES = [
    (["audit", "--config", "/nonexistent.yaml"], "does not exist"),
    (["audit", "--config", QUICKSTART, "--split", "nope"], "invalid choice"),
    (["audit", "--config", QUICKSTART, "--max_images", "-3"], "max_images: must be >= 1"),
    (["export", "--ckpt_path", "missing.ckpt"], "missing.ckpt does not exist"),
    (["export", "--ckpt_path", QUICKSTART], "is not a checkpoint"),
    (["export"], "ckpt_path"),
    (["seeds", "--seeds", "a", "--config", QUICKSTART], "seeds: argument --seeds"),
    (["seeds", "--seeds", "1", "1", "--config", QUICKSTART], "each seed once"),
]


@pytest.mark.parametrize(
    "args, says", SUBCOMMAND_CASES, ids=lambda a: " ".join(a[:2]) if isinstance(a, list) else ""
)
def test_subcommand_arguments_are_one_line(args, says, in_tmp):
    line = one_line_or_success(lambda: main(args))
    assert says in line, line
