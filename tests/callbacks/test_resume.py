"""Exact resumption: a fit interrupted after an epoch or mid-epoch, then resumed with
`--ckpt_path last` in a new `main()` (one of them after a killed subprocess), ends with the very
weights and logged metrics of the uninterrupted fit, with and without loader workers.

The model (NoisySegmentation) draws from python's, numpy's and torch's global RNGs in every
training step and the training split is augmented with flips and rotations, so a resume that
lost the RNG states, the sampler's position or the augmentation seeds ends elsewhere: the
controls at the end check that it does.
"""

import csv
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

import seglight.data.sampling
from seglight import SegmentationModule
from seglight.callbacks.rng_state import RngState, collect_rng_states, set_rng_states
from seglight.cli import main
from seglight.data.dataset import Sample
from seglight.data.sampling import ResumableSampler, SampleKey
from seglight.data.synthetic import SyntheticDataModule

from seglight_testing import QUICKSTART, ROOT, TINY

# 16 training images in batches of 4: 4 steps per epoch, 8 in all; warm-up then poly decay.
FIT = [
    "fit",
    "--config",
    QUICKSTART,
    *TINY,
    "--data.train_size=16",
    "--trainer.max_epochs=2",
    "--trainer.num_sanity_val_steps=0",
    "--model=test_resume.NoisySegmentation",
    "--model.lr_scheduler.warmup_steps=3",
    # resnet18's first 3 stages only (output stride 8): a fifth of the time of a step
    "--model.model_kwargs={encoder_depth: 3, decoder_channels: [16, 8, 8]}",
]
MID_STEP = 6  # epoch 1, after 2 of its 4 batches
EVERY_MID_STEP = {"every_n_train_steps": MID_STEP}


class NoisySegmentation(SegmentationModule):
    """Input dropout and jitter drawn from the three global RNGs, in every training step."""

    def shared_step(self, batch, stage):
        if stage == "train":
            jitter = 0.1 * random.random() + 0.1 * float(np.random.rand())
            batch = {**batch, "image": F.dropout(batch["image"], 0.2, training=True) + jitter}
        return super().shared_step(batch, stage)


class Interrupted(Exception):
    pass


class Interrupt(L.Callback):
    """Ends the run the way a crash or kill would, after a checkpoint was written: at the start
    of epoch `epoch`, or before the step after optimizer step `step` (checkpoint callbacks run
    last in a hook, so this waits for the next hook). `hard` ends the process there and then.

    Args:
        step: interrupt once `step` optimizer steps are done (-1: never).
        epoch: interrupt when epoch `epoch` starts (-1: never).
        hard: os._exit instead of an exception: nothing of the process runs after it.
    """

    def __init__(self, step: int = -1, epoch: int = -1, hard: bool = False) -> None:
        self.step, self.epoch, self.hard = step, epoch, hard

    def _stop(self) -> None:
        if self.hard:
            os._exit(17)
        raise Interrupted

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            self._stop()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            self._stop()


def run_args(name: str, workers: int, checkpoint: dict | None = None, **interrupt) -> list[str]:
    """Arguments of one run: its own CSV log folder; last.ckpt in ./ckpt (shared by the runs of
    one test, as a rerun of the same config shares it) written by a ModelCheckpoint with extra
    arguments `checkpoint`; an Interrupt if asked."""
    checkpoint = {"dirpath": "ckpt", "save_last": True, "enable_version_counter": False,
                  **(checkpoint or {})}  # fmt: skip
    callbacks = [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                  "init_args": checkpoint}]  # fmt: skip
    if interrupt:
        callbacks.append({"class_path": "test_resume.Interrupt", "init_args": interrupt})
    return [
        *FIT,
        f"--data.num_workers={workers}",
        f"--trainer.callbacks={callbacks}",
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.save_dir=logs_{name}",
    ]


def logged(name: str) -> dict[tuple[int, str], float]:
    """{(step, metric): value} of a run's metrics.csv: train/loss_step per step, val/* per epoch."""
    (path,) = Path(f"logs_{name}").glob("**/metrics.csv")
    out = {}
    with open(path) as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
                if value and (key == "train/loss_step" or key.startswith("val/")):
                    out[int(row["step"]), key] = float(value)
    return out


def weights(cli) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in cli.model.state_dict().items()}


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted 2-epoch fit without workers: (weights, logged metrics)."""
    folder = tmp_path_factory.mktemp("reference")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        mp.setattr(sys, "argv", ["seglight"])
        cli = main(run_args("full", workers=0))
        return weights(cli), logged("full")


def check_resumed(cli, reference, after_step: int) -> None:
    ref_weights, ref_logged = reference
    assert cli.trainer.global_step == 8 and cli.trainer.current_epoch == 2
    assert same_weights(weights(cli), ref_weights)
    resumed = logged("resumed")
    assert resumed == {k: v for k, v in ref_logged.items() if k[0] >= after_step}
    assert sum(key == "train/loss_step" for _, key in resumed) == 8 - after_step


@pytest.mark.parametrize(
    "workers, on_train_epoch_end",
    [(0, False), (2, True)],
    ids=["0 workers, saved at validation end", "2 workers, saved at train epoch end"],
)
def test_resume_after_an_epoch_is_exact(in_tmp, reference, workers, on_train_epoch_end):
    # ModelCheckpoint writes last.ckpt at the end of epoch 0, from on_train_epoch_end (its
    # default here) or on_validation_end (Lightning then restarts inside epoch 0, after its last
    # batch); the run dies as epoch 1 starts. Resumed, epoch 1 comes in the sampler's order for
    # epoch 1, also with workers, whose first iterator Lightning creates before set_epoch(1).
    checkpoint = {"save_on_train_epoch_end": on_train_epoch_end}
    with pytest.raises(Interrupted):
        main(run_args("interrupted", workers, checkpoint, epoch=1))
    cli = main([*run_args("resumed", workers, checkpoint), "--ckpt_path=last"])
    check_resumed(cli, reference, after_step=4)


@pytest.fixture(scope="module")
def mid_epoch_checkpoint(tmp_path_factory) -> Path:
    """last.ckpt of the fit (no workers) interrupted after step MID_STEP, written there by
    ModelCheckpoint(every_n_train_steps=MID_STEP) from on_train_batch_end."""
    folder = tmp_path_factory.mktemp("interrupted")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        mp.setattr(sys, "argv", ["seglight"])
        with pytest.raises(Interrupted):
            main(run_args("interrupted", 0, EVERY_MID_STEP, step=MID_STEP))
    return folder / "ckpt" / "last.ckpt"


def resume_mid_epoch(workers: int):
    return main([*run_args("resumed", workers, EVERY_MID_STEP), "--ckpt_path=last"])


def run_killed(args: list[str]) -> None:
    """`seglight <args>` in a new process, which an Interrupt(hard=true) ends with os._exit."""
    # This file's folder (the classes above, by class path) and tests/ (seglight_testing).
    tests = [str(Path(__file__).parent), str(ROOT / "tests")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*tests, os.environ.get("PYTHONPATH", "")])}
    code = "import sys; from seglight.cli import main; main(sys.argv[1:])"
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 17, proc.stderr[-3000:]


def test_resume_mid_epoch_is_exact(in_tmp, reference, mid_epoch_checkpoint):
    # Everything needed is in the checkpoint as tensors and python values: weights-only loadable.
    state = torch.load(mid_epoch_checkpoint, weights_only=True)
    assert state["SyntheticDataModule"]["train_position"] == [1, MID_STEP - 4]  # epoch, batches
    assert set(state["callbacks"]["RngState"]) == {"python", "numpy", "torch"}
    (in_tmp / "ckpt").mkdir()
    shutil.copy(mid_epoch_checkpoint, in_tmp / "ckpt" / "last.ckpt")
    check_resumed(resume_mid_epoch(workers=0), reference, after_step=MID_STEP)


def test_resume_mid_epoch_of_a_killed_process_with_workers_is_exact(in_tmp, reference):
    # The interrupted run is its own process, killed right after the checkpoint: nothing of it
    # survives but the file. Its 2 workers had loaded batches beyond step 6 when it died.
    run_killed(run_args("interrupted", 2, EVERY_MID_STEP, step=MID_STEP, hard=True))
    check_resumed(resume_mid_epoch(workers=2), reference, after_step=MID_STEP)


def no_skip(sampler, epoch, samples):
    sampler.set_epoch(epoch)


def other_sample_seeds(seed, epoch, length):
    return np.random.default_rng([seed, epoch, 1]).integers(0, 2**32, size=length, dtype=np.uint32)


@pytest.mark.parametrize("lost", ["sampler position", "RNG states", "augmentation seeds"])
def test_a_resume_that_loses_state_ends_elsewhere(
    in_tmp, monkeypatch, reference, mid_epoch_checkpoint, lost
):
    """Controls: the exact tests above would fail if any of the three were not restored."""
    if lost == "sampler position":  # the resumed epoch's loader starts from its first batch
        monkeypatch.setattr(ResumableSampler, "resume_at", no_skip)
    elif lost == "RNG states":
        monkeypatch.setattr(RngState, "load_state_dict", lambda self, state: None)
    else:
        monkeypatch.setattr(seglight.data.sampling, "sample_seeds", other_sample_seeds)
    (in_tmp / "ckpt").mkdir()
    shutil.copy(mid_epoch_checkpoint, in_tmp / "ckpt" / "last.ckpt")
    cli = resume_mid_epoch(workers=0)
    assert cli.trainer.global_step == 8
    assert not same_weights(weights(cli), reference[0])


def test_sampler_order_and_seeds_depend_on_seed_epoch_and_index_only():
    data = list(range(10))
    a, b = ResumableSampler(data, seed=3), ResumableSampler(data, seed=3)
    b.set_epoch(1)
    b.set_epoch(0)
    assert list(a) == list(b) and sorted(k.index for k in a) == data
    seeds = {k.index: k.seed for k in a}
    a.set_epoch(1)
    assert [k.index for k in a] != [k.index for k in b]  # a new order each epoch ...
    assert {k.index: k.seed for k in a} != seeds  # ... and new augmentations
    # Under DDP each process takes its shard of the same order, with the same seeds.
    shards = [list(ResumableSampler(data, seed=3, num_replicas=2, rank=r)) for r in (0, 1)]
    assert sorted(shards[0] + shards[1]) == sorted(b)


def test_sampler_resumes_after_the_samples_trained_on():
    data = list(range(10))
    full = list(ResumableSampler(data, seed=0))
    sampler = ResumableSampler(data, seed=0)
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    sampler.resume_at(1, 4)
    assert list(sampler) == epoch1[4:] and list(sampler) == epoch1  # one pass only
    sampler.resume_at(1, 4)
    sampler.set_epoch(0)  # an epoch change drops the skip: it belonged to epoch 1
    assert list(sampler) == full


def test_keyed_samples_ignore_what_was_loaded_before_and_leave_global_rngs_alone():
    dm = SyntheticDataModule(image_size=32, train_size=4, num_workers=0)
    dm.setup("fit")
    dataset = dm.datasets["train"]
    key = SampleKey(2, 12345)
    first = dataset[key]
    for i in range(4):
        dataset[i]  # plain indices still work, and advance the pipeline's RNG
    torch.manual_seed(0)
    before = torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()
    again = dataset[key]
    assert torch.equal(first["image"], again["image"]) and torch.equal(first["mask"], again["mask"])
    assert torch.equal(before[0], torch.get_rng_state()) and before[1] == random.getstate()
    assert (before[2] == np.random.get_state()[1]).all()


def _draw_from_global_rngs(sample) -> Sample:
    """A load that uses the global RNGs, as a user's subclass might: (python, numpy, torch)."""
    noise = [random.random(), np.random.rand(), torch.rand(()).item()]
    return Sample(sample.image, sample.mask, f"{sample.name}:{noise}")


def test_keyed_samples_are_the_same_in_a_worker_which_skips_restoring_the_rngs(monkeypatch):
    dm = SyntheticDataModule(image_size=32, train_size=4, num_workers=0)
    dm.setup("fit")
    dataset = dm.datasets["train"]
    load = dataset.load
    monkeypatch.setattr(dataset, "load", lambda i: _draw_from_global_rngs(load(i)))
    keys = [SampleKey(2, 12345), SampleKey(0, 7), SampleKey(2, 12345)]
    here = [dataset[key] for key in keys]
    loader = DataLoader(dataset, sampler=keys, batch_size=None, num_workers=1)
    there = list(loader)
    assert [s["name"] for s in there] == [s["name"] for s in here]
    assert here[0]["name"] == here[2]["name"] != here[1]["name"]  # the seed decides the draws
    for a, b in zip(here, there, strict=True):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])


def test_rng_states_survive_a_weights_only_checkpoint(tmp_path):
    torch.manual_seed(1)
    random.seed(1)
    np.random.seed(1)
    torch.save({"rng": collect_rng_states()}, tmp_path / "rng.pt")
    expected = torch.rand(3), random.random(), np.random.rand()
    set_rng_states(torch.load(tmp_path / "rng.pt", weights_only=True)["rng"])
    assert torch.equal(torch.rand(3), expected[0])
    assert random.random() == expected[1] and np.random.rand() == expected[2]
