"""Issue 11's moves: old class and import paths still work (with a warning naming the new one),
the always-on callbacks come from the CLI where a config sees and switches them, and the module
is built from hooks a subclass overrides one at a time."""

import importlib

import lightning as L
import pytest
import torch

from seglight import SegmentationModule
from seglight._moved import SeglightDeprecationWarning
from seglight.callbacks import (
    ClassReport,
    FiniteBestCheckpoint,
    PredictionFailures,
    PreemptionCheckpoint,
    RngState,
    ValidationImages,
    default_callbacks,
)
from seglight.cli import main

from seglight_testing import QUICKSTART, ROOT, TINY

MOVED = [
    ("seglight.visual.ValidationImages", "seglight.callbacks.ValidationImages"),
    ("seglight.visual.pick_indices", "seglight.callbacks.images.pick_indices"),
    ("seglight.visual.overlay", "seglight.render.overlay"),
    ("seglight.best_checkpoint.ModelCheckpoint", "seglight.callbacks.FiniteBestCheckpoint"),
    ("seglight.preemption.PreemptionCheckpoint", "seglight.callbacks.PreemptionCheckpoint"),
    ("seglight.preemption.resume_command", "seglight.callbacks.preemption.resume_command"),
    ("seglight.resume.RngState", "seglight.callbacks.RngState"),
    ("seglight.tuning.FindLR", "seglight.callbacks.FindLR"),
    ("seglight.tuning.FindBatchSize", "seglight.callbacks.FindBatchSize"),
    ("seglight.models.build_model", "seglight.networks.build_model"),
    ("seglight.inference.EvalProtocol", "seglight.evaluation.EvalProtocol"),
    ("seglight.loggers.SaveConfig", "seglight.callbacks.config.SaveConfig"),
    ("seglight.loggers.WandbClassMetrics", "seglight.callbacks.wandb_tables.WandbClassMetrics"),
    ("seglight.callbacks.confusion_image", "seglight.render.confusion_image"),
]


def resolve(path: str):
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize(("old", "new"), MOVED)
def test_an_old_path_warns_with_the_new_one_and_gives_the_same_object(old, new):
    with pytest.warns(SeglightDeprecationWarning, match=new.replace(".", r"\.")):
        obj = resolve(old)
    assert obj is resolve(new)


def test_a_name_that_never_existed_is_still_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        resolve("seglight.visual.Nope")


def test_old_callback_class_paths_in_a_config_still_run(in_tmp):
    callbacks = (
        "[{class_path: seglight.best_checkpoint.ModelCheckpoint, init_args: {filename: best, "
        "monitor: val/mIoU, mode: max}}, {class_path: seglight.visual.ValidationImages}]"
    )
    with pytest.warns(SeglightDeprecationWarning):
        cli = main(["fit", "--config", QUICKSTART, *TINY, f"--trainer.callbacks={callbacks}",
                    "--trainer.max_epochs=1", "--trainer.default_root_dir=run"])  # fmt: skip
    assert any(isinstance(c, FiniteBestCheckpoint) for c in cli.trainer.callbacks)
    assert any(isinstance(c, ValidationImages) for c in cli.trainer.callbacks)
    assert (in_tmp / "run" / "checkpoints" / "best.ckpt").is_file()


def test_the_renamed_checkpoint_callback_keeps_the_state_key_old_checkpoints_hold():
    old = torch.load(ROOT / "tests" / "fixtures" / "pre_redesign.ckpt", weights_only=True)
    callback = FiniteBestCheckpoint(monitor="val/mIoU", mode="max")
    assert callback.state_key in old["callbacks"]  # resuming restores best_model_score
    assert old["callbacks"][callback.state_key]["best_model_score"] is not None


def _count(cli, cls) -> int:
    return sum(type(c) is cls for c in cli.trainer.callbacks)


def test_every_run_gets_the_always_on_callbacks_once(in_tmp):
    cli = main(["--config", QUICKSTART, *TINY, "--trainer.fast_dev_run=true"], run=False)
    assert [_count(cli, c) for c in (ClassReport, PreemptionCheckpoint, RngState)] == [1, 1, 1]


def test_null_switches_one_off_and_a_listed_one_is_not_added_twice(in_tmp):
    cli = main(["--config", QUICKSTART, *TINY, "--trainer.fast_dev_run=true",
                "--preemption=null", "--trainer.callbacks+=seglight.callbacks.RngState"],
               run=False)  # fmt: skip
    assert [_count(cli, c) for c in (ClassReport, PreemptionCheckpoint, RngState)] == [1, 0, 1]


def test_print_config_shows_the_always_on_callbacks(in_tmp, capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--config", QUICKSTART, "--class_report=null", "--print_config"])
    out = capsys.readouterr().out
    assert "class_report: null" in out
    assert "preemption:\n  class_path: seglight.callbacks.PreemptionCheckpoint" in out
    assert "rng_state:\n  class_path: seglight.callbacks.RngState" in out


def test_the_module_adds_no_hidden_callbacks_and_plain_python_gets_them_by_name():
    # A subclass overriding configure_callbacks can no longer lose pre-emption or exact resume.
    assert SegmentationModule.configure_callbacks is L.LightningModule.configure_callbacks
    kinds = [type(c) for c in default_callbacks()]
    assert kinds == [ClassReport, PreemptionCheckpoint, RngState, PredictionFailures]


class CountedLoss(torch.nn.Module):
    def __init__(self, loss: torch.nn.Module) -> None:
        super().__init__()
        self.loss, self.calls = loss, 0

    def forward(self, logits, masks):
        self.calls += 1
        return self.loss(logits, masks)


class CountingLossModule(SegmentationModule):
    """Changes the loss through one hook and nothing else."""

    def configure_losses(self) -> None:
        super().configure_losses()
        self.criterion = CountedLoss(self.criterion)


def test_a_subclass_changes_one_hook_and_keeps_the_rest():
    model = CountingLossModule(encoder_name="resnet18", num_classes=3,
                               model_kwargs={"decoder_channels": [8, 8, 8, 8, 8]})  # fmt: skip
    images, masks = torch.randn(2, 3, 32, 32), torch.randint(0, 3, (2, 32, 32))
    out = model.shared_step({"image": images, "mask": masks}, "train")
    assert model.criterion.calls == 1 and out["logits"].shape == (2, 3, 32, 32)
    # The evaluation-loss means follow the terms of the configured loss.
    assert sorted(model.eval_losses["val"]) == ["loss"]  # CountedLoss has no `weights`


class OwnRngState(RngState):
    """A user's subclass of an always-on callback, listed in trainer.callbacks."""


def test_a_listed_subclass_replaces_the_always_on_callback(in_tmp):
    cli = main(["--config", QUICKSTART, *TINY, "--trainer.fast_dev_run=true",
                "--trainer.callbacks+=test_redesign_paths.OwnRngState"], run=False)  # fmt: skip
    states = [c for c in cli.trainer.callbacks if isinstance(c, RngState)]
    assert [type(c).__name__ for c in states] == ["OwnRngState"]  # not both: one restores RNGs
