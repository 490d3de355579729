"""The non-finite loss guard (SegmentationModule's nonfinite_loss / nonfinite_batch_dir) and
seglight.callbacks.FiniteBestCheckpoint, which never keeps a nan/inf score as the best.

A nan is put into one image of one chosen training batch (tests/seglight_testing/
nonfinite_example.py) with 2 batches per epoch: epoch 0 (steps 0, 1) is clean and checkpointed;
the nan comes at epoch 1.
"""

import csv
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.demos.boring_classes import BoringModel

from seglight import SegmentationModule
from seglight.callbacks import FiniteBestCheckpoint
from seglight.cli import main
from seglight.errors import ConfigError

from seglight_testing import QUICKSTART, ROOT, TINY
from seglight_testing.nonfinite_example import PoisonedInput

CKPTS = Path("outputs/quickstart/checkpoints")
POISONED = [*TINY, "--model=seglight_testing.nonfinite_example.PoisonedInput",
            "--trainer.max_epochs=2", "--model.poison_epoch=1"]  # fmt: skip


def floats_finite(state: dict[str, torch.Tensor]) -> bool:
    return all(bool(v.isfinite().all()) for v in state.values() if v.is_floating_point())


def optimizer_steps(checkpoint: dict) -> set[int]:
    """AdamW's own step count per parameter: Lightning's global_step counts skipped steps too."""
    return {int(s["step"]) for s in checkpoint["optimizer_states"][0]["state"].values()}


def test_stop_names_the_step_and_files_and_keeps_checkpoints(in_tmp, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", QUICKSTART, *POISONED, "--model.poison_batch=1",
              "--model.nonfinite_batch_dir=bad",
              # a second checkpointer that would save on an exception: not on this one
              "--trainer.callbacks+=seglight.callbacks.FiniteBestCheckpoint",
              "--trainer.callbacks.dirpath=on_exception",
              "--trainer.callbacks.save_on_exception=true"])  # fmt: skip
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    errors = [ln for ln in err.splitlines() if ln.startswith("seglight: error:")]
    assert len(errors) == 1 and "Traceback" not in err
    assert errors[0].startswith("seglight: error: non-finite training loss")
    poisoned = json.loads((in_tmp / "poisoned.json").read_text())
    assert poisoned["step"] == 3  # epoch 1, batch 1
    line = errors[0]
    assert "loss nan at epoch 1, global step 3, batch 1" in line
    assert "non-finite terms: ce=nan" in line
    assert f"batch files: {', '.join(poisoned['names'])} " in line
    assert f"(non-finite input image: {poisoned['nan_name']})" in line
    saved_path = in_tmp / "bad" / "nonfinite_epoch1_step3_rank0.pt"
    assert line.endswith(f"batch saved to {Path('bad') / saved_path.name}")
    saved = torch.load(saved_path, weights_only=True)
    assert saved["name"] == poisoned["names"] and saved["step"] == 3 and saved["epoch"] == 1
    nan_images = saved["image"].isnan().flatten(1).all(1).tolist()  # (B,)
    assert nan_images == [n == poisoned["nan_name"] for n in saved["name"]]
    assert saved["mask"].shape == saved["image"].shape[:1] + saved["image"].shape[2:]
    assert math.isnan(saved["losses"]["loss"])
    # Epoch 0's checkpoints: untouched, finite, loadable; none was written on the way out.
    for path in [CKPTS / "best.ckpt", CKPTS / "last.ckpt", *Path("on_exception").glob("*.ckpt")]:
        checkpoint = torch.load(path, weights_only=False)
        assert checkpoint["global_step"] == 2, path
        assert floats_finite(checkpoint["state_dict"]), path
    assert len(list(Path("on_exception").glob("*.ckpt"))) == 1  # epoch 0's
    model = PoisonedInput.load_from_checkpoint(CKPTS / "last.ckpt", map_location="cpu")
    assert model.nonfinite_loss == "stop" and floats_finite(model.state_dict())


def test_skip_drops_the_batch_and_training_goes_on(in_tmp, recwarn):
    main(["fit", "--config", QUICKSTART, *POISONED, "--model.poison_batch=0",
          "--model.nonfinite_loss=skip"])  # fmt: skip
    poisoned = json.loads((in_tmp / "poisoned.json").read_text())
    warned = [str(w.message) for w in recwarn if "skipping the batch" in str(w.message)]
    assert len(warned) == 1 and "global step 2, batch 0" in warned[0]
    assert poisoned["nan_name"] in warned[0]
    last = torch.load(CKPTS / "last.ckpt", weights_only=False)
    assert last["global_step"] == 4  # Lightning counts the skipped step
    assert optimizer_steps(last) == {3}  # but the optimizer stepped once less
    assert floats_finite(last["state_dict"])  # BatchNorm running statistics included
    rows = csv.DictReader(open(next(Path("outputs/quickstart/logs").rglob("metrics.csv"))))
    counts = [float(r["train/skipped_nonfinite"]) for r in rows if r["train/skipped_nonfinite"]]
    assert counts == [0.0, 1.0]  # per epoch, cumulative


def run_module(tmp_path: Path, args: list[str], devices: int) -> subprocess.CompletedProcess:
    """`python -m seglight <args>` on CPU processes (DDP over gloo when devices > 1), with tests/
    importable, in tmp_path; a hang fails the test instead of blocking the suite."""
    path = os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}  # warnings kept: they are checked
    return subprocess.run(
        [sys.executable, "-m", "seglight", *args, "--trainer.accelerator=cpu",
         f"--trainer.devices={devices}", f"--trainer.strategy={'ddp' if devices > 1 else 'auto'}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip


# 18 s of two gloo processes: `make test-all` (the fast suite keeps the DDP equality tests).
@pytest.mark.slow
def test_ddp_skip_on_one_rank_skips_on_all(tmp_path):
    """The nan is on rank 1 only; rank 0's loss is finite, yet it must skip too (else DDP
    would average half a gradient, or hang). 8 images on 2 processes: 1 batch per epoch each."""
    out = run_module(tmp_path, ["fit", "--config", QUICKSTART, *POISONED,
                                "--model.poison_batch=0", "--model.poison_rank=1",
                                "--model.nonfinite_loss=skip"], devices=2)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    where = "at epoch 1, global step 1, batch 0"
    rank1 = f"training loss nan {where} (non-finite terms: ce=nan) on process rank 1 of 2"
    assert rank1 in out.stderr
    assert f"loss on process rank(s) [1] of 2 {where}" in out.stderr  # rank 0's own warning
    last = torch.load(tmp_path / CKPTS / "last.ckpt", weights_only=False)  # rank 0's state
    assert last["global_step"] == 2 and optimizer_steps(last) == {1}
    assert floats_finite(last["state_dict"])


class ScriptedScore(BoringModel):
    """Logs the given validation score at each epoch."""

    def __init__(self, scores: list[float]) -> None:
        super().__init__()
        self.scores = scores

    def on_validation_epoch_end(self) -> None:
        self.log("val/mIoU", self.scores[self.current_epoch])


@pytest.mark.parametrize("save_top_k", [1, -1])
@pytest.mark.parametrize("mode", ["max", "min"])
def test_nonfinite_score_is_never_the_best(tmp_path, mode, save_top_k):
    """Lightning's own callback records a first nan as -inf/+inf (saving that checkpoint) and
    takes +inf (mode max) or -inf (mode min) as the best; last.ckpt must still be the last."""
    winning_inf = math.inf if mode == "max" else -math.inf
    scores = [math.nan, 0.3, winning_inf, math.nan, 0.2 if mode == "max" else 0.4]
    callback = FiniteBestCheckpoint(dirpath=tmp_path, monitor="val/mIoU", mode=mode, save_last=True,
                               save_top_k=save_top_k, filename="{epoch}")  # fmt: skip
    trainer = L.Trainer(max_epochs=len(scores), limit_train_batches=2, limit_val_batches=1,
                        callbacks=[callback], logger=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0)  # fmt: skip
    trainer.fit(ScriptedScore(scores))
    assert callback.best_model_score == pytest.approx(0.3)
    assert Path(callback.best_model_path).name == "epoch=1.ckpt"
    kept = {Path(p).name: round(float(v), 6) for p, v in callback.best_k_models.items()}
    finite_epochs = {"epoch=1.ckpt": 0.3, "epoch=4.ckpt": scores[4]}
    assert kept == ({"epoch=1.ckpt": 0.3} if save_top_k == 1 else finite_epochs)
    assert sorted(p.name for p in tmp_path.glob("epoch=*.ckpt")) == sorted(kept)
    last = torch.load(tmp_path / "last.ckpt", weights_only=False)
    assert last["epoch"] == len(scores) - 1  # not the epoch of the last improvement


def test_every_config_uses_the_finite_checkpoint():
    # Every checkpoint callback named in any config file (recipes and the blocks they share).
    paths = {}
    for config in sorted((ROOT / "configs").rglob("*.yaml")):
        for path in re.findall(r"class_path:\s*([\w.]*Checkpoint)\b", config.read_text()):
            paths.setdefault(config.relative_to(ROOT).as_posix(), set()).add(path)
    assert paths
    assert set().union(*paths.values()) == {"seglight.callbacks.FiniteBestCheckpoint"}, paths


def test_unknown_mode_names_the_argument():
    with pytest.raises(ConfigError, match="model.nonfinite_loss: expected 'stop', 'skip'"):
        SegmentationModule(nonfinite_loss="ignore")
