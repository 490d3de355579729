"""Streamed data in real runs: every task's recipe converts and streams the same tensors; fit
interrupted mid-epoch or at an epoch end resumes to the uninterrupted run's weights, with 0 and
2 loader workers; under 2 gloo processes validation counts every image once (the numbers of
one process) and a mid-epoch resume is exact too."""

import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from seglight.cli import main
from seglight.data import StreamingDataModule

from seglight_testing import ROOT, assert_same_val_metrics, logged_val_metrics, run_on_cpus
from seglight_testing.datasets import make_ade, make_cityscapes, make_voc

TINY_DATA = ["--data.image_size=32", "--data.train_size=16", "--data.val_size=5",
             "--data.test_size=4", "--data.num_workers=0"]  # fmt: skip
MODEL = ["--model.model_kwargs={encoder_depth: 3, decoder_channels: [16, 8, 8]}",
         "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]  # fmt: skip


def config(recipe: str) -> str:
    return str(ROOT / "configs" / f"{recipe}.yaml")


def convert(recipe: str, split: str, output, *extra: str) -> None:
    with pytest.raises(SystemExit) as status:
        main(["convert", "--config", config(recipe), *TINY_DATA, "--split", split, "--output",
              str(output), "--workers=1", *extra])  # fmt: skip
    assert status.value.code == 0


def streamed(train=None, val=None) -> list[str]:
    out = ["--data=seglight.data.StreamingDataModule"]
    out += [f"--data.train_dir={train}"] if train else []
    out += [f"--data.val_dir={val}"] if val else []
    return out


@pytest.mark.parametrize("recipe", ["binary", "multilabel", "multispectral"])
def test_every_task_streams_the_file_modules_tensors(tmp_path, recipe):
    convert(recipe, "val", tmp_path / "val")
    cli = main(["--config", config(recipe), *TINY_DATA, "--data.batch_size=2"],
               run=False)  # fmt: skip
    files = cli.datamodule
    files.setup("validate")
    stream = StreamingDataModule(val_dir=str(tmp_path / "val"), batch_size=2, num_workers=0)
    assert (stream.task, stream.in_channels, stream.class_names) == (
        files.task, files.in_channels, files.class_names)  # fmt: skip
    assert (stream.mean, stream.std) == (files.mean, files.std)
    stream.setup("validate")
    for got, want in zip(stream.val_dataloader(), files.val_dataloader(), strict=True):
        assert got["name"] == want["name"]
        assert torch.equal(got["image"], want["image"]) and torch.equal(got["mask"], want["mask"])


class Interrupted(Exception):
    pass


class Interrupt(L.Callback):
    """Ends the run as a crash would, before the step after optimizer step `step` (the
    checkpoint of that step is written by then); `hard`: the process exits there."""

    def __init__(self, step: int, hard: bool = False) -> None:
        self.step, self.hard = step, hard

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            if self.hard:
                os._exit(17)
            raise Interrupted


@pytest.fixture(scope="module")
def train_split(tmp_path_factory):
    root = tmp_path_factory.mktemp("split")
    convert("quickstart", "train", root / "train", "--chunk_bytes=4KB")  # a few samples a chunk
    return root / "train"


def fit_args(train, workers: int, every_n_train_steps: int | None) -> list[str]:
    checkpoint = {"dirpath": "ckpt", "save_last": True, "enable_version_counter": False}
    if every_n_train_steps:
        checkpoint["every_n_train_steps"] = every_n_train_steps
    else:
        checkpoint["save_on_train_epoch_end"] = True
    callbacks = [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                  "init_args": checkpoint}]  # fmt: skip
    return ["fit", "--config", config("quickstart"), *streamed(train), "--data.batch_size=4",
            f"--data.num_workers={workers}", *MODEL, "--trainer.max_epochs=2",
            "--trainer.limit_val_batches=0", f"--trainer.callbacks={callbacks}",
            "--trainer.logger=false"]  # fmt: skip


@pytest.mark.parametrize(
    ("workers", "every_n_train_steps", "interrupt_at"),
    [(0, 1, 6), (2, 1, 6), (2, None, 4)],
    ids=["0 workers, mid-epoch", "2 workers, mid-epoch", "2 workers, at the epoch end"],
)
def test_resume_of_a_streamed_fit_is_exact(in_tmp, train_split, workers, every_n_train_steps,
                                           interrupt_at):  # fmt: skip
    # 16 images in batches of 4: 4 steps an epoch; step 6 is 2 batches into epoch 1
    sys.modules.setdefault("test_streaming_runs", sys.modules[__name__])
    args = fit_args(train_split, workers, every_n_train_steps)
    full = main([*args, "--trainer.default_root_dir=full", "--trainer.callbacks.dirpath=full"])
    want = {k: v.clone() for k, v in full.model.state_dict().items()}
    with pytest.raises(Interrupted):
        main([*args, "--trainer.callbacks+=test_streaming_runs.Interrupt",
              f"--trainer.callbacks.step={interrupt_at}"])  # fmt: skip
    saved = torch.load("ckpt/last.ckpt", weights_only=False)
    assert saved["global_step"] == interrupt_at  # the resume starts where the run stopped
    resumed = main([*args, "--ckpt_path=last"])
    assert resumed.trainer.global_step == 8
    got = resumed.model.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)


@pytest.mark.slow  # a 2-process run: ~20 s (the file modules' DDP equality is in the fast suite)
def test_ddp_validation_of_a_streamed_split_equals_one_process(in_tmp):
    convert("quickstart", "val", in_tmp / "val")
    validate = ["validate", "--config", config("quickstart"), *streamed(val=in_tmp / "val"),
                "--data.batch_size=2", "--data.num_workers=0", *MODEL]  # fmt: skip
    main([*validate, "--trainer.accelerator=cpu", "--trainer.devices=1"])  # here: faster
    one, many = logged_val_metrics(in_tmp), logged_val_metrics(run_on_cpus(in_tmp, 2, validate))
    assert {"val/mIoU", "val/IoU/circle", "val/pixel_acc"} <= set(one)
    assert_same_val_metrics(many, one)


def ddp_fit(cwd, args: list[str]) -> subprocess.CompletedProcess:
    """`seglight <args>` on 2 gloo processes in `cwd`, this file's classes importable."""
    path = os.pathsep.join([str(Path(__file__).parent), str(ROOT / "tests"),
                            os.environ.get("PYTHONPATH", "")])  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "seglight", *args, "--trainer.accelerator=cpu",
         "--trainer.devices=2", "--trainer.strategy=ddp"],
        cwd=cwd, env={**os.environ, "PYTHONPATH": path, "PYTHONWARNINGS": "ignore"},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.mark.slow  # 3 runs of 2 processes: ~55 s
def test_ddp_resume_of_a_streamed_fit_is_exact(in_tmp, train_split):
    # 16 images, batches of 4, 2 processes: 2 steps an epoch each; stopped after step 3
    # (epoch 1, its first batch) in both processes, resumed on 2 processes
    args = fit_args(train_split, 0, 1)
    (in_tmp / "full").mkdir()
    (in_tmp / "cut").mkdir()
    assert ddp_fit(in_tmp / "full", args).returncode == 0
    stopped = ddp_fit(in_tmp / "cut", [*args, "--trainer.callbacks+=test_streaming_runs.Interrupt",
                                       "--trainer.callbacks.step=3"])  # fmt: skip
    assert stopped.returncode != 0 and "Interrupted" in stopped.stderr
    assert torch.load(in_tmp / "cut/ckpt/last.ckpt", weights_only=False)["global_step"] == 3
    resumed = ddp_fit(in_tmp / "cut", [*args, "--ckpt_path=last"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    want = torch.load(in_tmp / "full/ckpt/last.ckpt", weights_only=False)
    got = torch.load(in_tmp / "cut/ckpt/last.ckpt", weights_only=False)
    assert want["global_step"] == got["global_step"] == 4
    assert all(torch.equal(got["state_dict"][k], v) for k, v in want["state_dict"].items())


DATASETS = {
    "voc": lambda: make_voc(Path("data/voc")),
    "cityscapes": lambda: make_cityscapes(Path("data/cityscapes")),
    "ade20k": lambda: make_ade(Path("data/ade20k")),
}


@pytest.mark.parametrize("recipe", sorted(DATASETS))
def test_every_dataset_recipe_streams_its_validation_split(in_tmp, recipe):
    # the official layouts (JPEG or PNG images, their label encodings): the streamed split is
    # the file module's, tensor for tensor, labels mapped to training ids
    DATASETS[recipe]()
    convert_args = ["--data.num_workers=0", "--data.batch_size=2"]
    with pytest.raises(SystemExit) as status:
        main(["convert", "--config", config(recipe), *convert_args, "--split", "val",
              "--output", "val_stream", "--workers=1"])  # fmt: skip
    assert status.value.code == 0
    files = main(["--config", config(recipe), *convert_args, "--model.encoder_weights=null"],
                 run=False).datamodule  # fmt: skip
    files.setup("validate")
    stream = StreamingDataModule(val_dir="val_stream", batch_size=2, num_workers=0,
                                 eval_batch_size=files.eval_batch_size)  # fmt: skip
    assert (stream.class_names, stream.ignore_index) == (files.class_names, files.ignore_index)
    stream.setup("validate")
    batches = 0
    for got, want in zip(stream.val_dataloader(), files.val_dataloader(), strict=True):
        assert got["name"] == want["name"]
        assert torch.equal(got["image"], want["image"]) and torch.equal(got["mask"], want["mask"])
        batches += 1
    assert batches > 0
