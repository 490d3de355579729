"""EMA (seglight.callbacks.EMA, Lightning's EMAWeightAveraging): the average equals one computed
by hand from the weights after each optimizer step; checkpoints, `test` and the export loader
read the average; an exact resume (`--ckpt_path last`) ends with the uninterrupted average."""

from pathlib import Path

import lightning as L
import pytest
import torch

from seglight.checkpoints import load_module
from seglight.cli import main

from seglight_testing import QUICKSTART, ROOT, TINY, one_error_line

EMA_CONFIG = str(ROOT / "configs" / "callbacks" / "ema.yaml")
DECAY, START = 0.6, 1
# 8 training images in batches of 4: 2 optimizer steps an epoch, 2 epochs; resnet18's first 3
# stages only.
FIT = [
    "fit", "--config", QUICKSTART, "--config", EMA_CONFIG, *TINY, "--trainer.max_epochs=2",
    "--model.model_kwargs={encoder_depth: 3, decoder_channels: [16, 8, 8]}",
    "--trainer.num_sanity_val_steps=0", f"--trainer.callbacks.decay={DECAY}",
    f"--trainer.callbacks.start_step={START}",
]  # fmt: skip


def floats(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The floating-point tensors of a state_dict (weights, BatchNorm statistics), as float64."""
    return {k: v.detach().double().clone() for k, v in module.state_dict().items()
            if v.is_floating_point()}  # fmt: skip


def close(actual: dict, expected: dict) -> None:
    """Every tensor within 1e-6 of the expected one, relative to the tensor's largest value."""
    assert actual.keys() == expected.keys()
    for k, e in expected.items():
        scale = float(e.abs().max()) or 1.0
        assert float((actual[k].double() - e).abs().max()) <= 1e-6 * scale, k


class Recorder(L.Callback):
    """The model's floating-point tensors after every optimizer step."""

    def __init__(self) -> None:
        self.steps: list[dict[str, torch.Tensor]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps.append(floats(pl_module))


class StopAtEpoch(L.Callback):
    """Raises Interrupted when epoch `epoch` starts (after the previous one's last.ckpt)."""

    def __init__(self, epoch: int = 1) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            raise Interrupted


class Interrupted(Exception):
    pass


def callback(cli, name: str):
    return next(cb for cb in cli.trainer.callbacks if type(cb).__name__ == name)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A 2-epoch fit with EMA (decay 0.6, start_step 1) in its own folder: (folder, the fit's
    CLI, the weights after each of its 4 optimizer steps)."""
    folder = tmp_path_factory.mktemp("ema")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        cli = main([*FIT, "--trainer.callbacks+=test_ema.Recorder"])
    return folder, cli, callback(cli, "Recorder").steps


def hand_average(steps: list[dict], last: int) -> dict[str, torch.Tensor]:
    """The average after step `last`: the weights until START, then d * avg + (1 - d) * w."""
    average = dict(steps[START])
    for w in steps[START + 1 : last + 1]:
        average = {k: DECAY * average[k] + (1 - DECAY) * w[k] for k in average}
    return average


def test_average_is_the_hand_computed_one(reference):
    # 4 steps over 2 epochs; validation swaps the weights in and out between them
    _, cli, steps = reference
    assert len(steps) == 4 and cli.trainer.global_step == 4
    average = hand_average(steps, 3)
    close(floats(cli.model), average)  # fit ends with the average copied into the model
    # the control: the average is not the last weights (so the comparison above could fail)
    assert max(float((average[k] - steps[-1][k]).abs().max()) for k in average) > 1e-4


def test_checkpoints_test_and_export_use_the_average(reference, monkeypatch, recwarn):
    folder, _, steps = reference
    monkeypatch.chdir(folder)
    checkpoints = Path("outputs/quickstart/checkpoints")
    for name in ("best.ckpt", "last.ckpt"):
        ckpt = torch.load(checkpoints / name, weights_only=False)
        saved = {k: v.double() for k, v in ckpt["state_dict"].items() if v.is_floating_point()}
        close(saved, hand_average(steps, ckpt["global_step"] - 1))  # at its validation
        raw = {k: v.double() for k, v in ckpt["current_model_state"].items() if k in saved}
        close(raw, steps[ckpt["global_step"] - 1])
    best = torch.load(checkpoints / "best.ckpt", weights_only=False)
    averaged = {k: v.double() for k, v in best["state_dict"].items() if v.is_floating_point()}
    # `test` of the best checkpoint, with EMA still in the config: the averaged weights, and
    # no warning about a checkpoint loaded outside fit
    test = main(["test", *FIT[1:], "--ckpt_path=best"])
    assert test.trainer.state.finished
    close(floats(test.model), averaged)
    assert not [w for w in recwarn if "WeightAveraging" in str(w.message)]
    # the one loader behind `export` and load_from_checkpoint
    close(floats(load_module(checkpoints / "best.ckpt")), averaged)


@pytest.mark.slow  # two more fits: ~14 s on 2 CPU cores
def test_resume_keeps_the_average(reference, in_tmp):
    _, full, _ = reference
    with pytest.raises(Interrupted):
        main([*FIT, "--trainer.callbacks+=test_ema.StopAtEpoch"])  # after epoch 0's last.ckpt
    resumed = main([*FIT, "--ckpt_path=last"])
    assert resumed.trainer.global_step == 4
    close(floats(resumed.model), floats(full.model))  # the averages after the last step
    ckpt = torch.load("outputs/quickstart/checkpoints/last.ckpt", weights_only=False)
    assert int(ckpt["averaging_state"]["n_averaged"]) == 3  # steps 1, 2, 3


@pytest.mark.parametrize(
    ("arg", "expected"),
    [("--trainer.callbacks.decay=1.0", "EMA.decay: must be in (0, 1)"),
     ("--trainer.callbacks.start_step=-1", "EMA.start_step: must be >= 0")],
)  # fmt: skip
def test_bad_values_are_one_line(arg, expected, in_tmp, capsys):
    with pytest.raises(SystemExit):
        main([*FIT, arg])
    assert expected in one_error_line(capsys)
