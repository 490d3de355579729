"""Every tool works for every task recipe beyond multiclass (configs/binary.yaml, multilabel.yaml,
multispectral.yaml; quickstart's multiclass is covered by each tool's own tests): export (ONNX
and TorchScript, parity, metadata), `seglight seeds` (the task's headline metric), a W&B agent's
`--key=value` flags, an exact mid-epoch resume, `seglight audit` and `predict` of 5-band images.

One tiny 1-epoch fit per task is shared by the module (`fitted`); the runs are resnet18's first 3
stages (output stride 8) on 32 px images, so each takes seconds on a CPU.
"""

import json
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from seglight import SegmentationModule
from seglight.cli import main

from seglight_testing import ROOT, SHRINK

RECIPES = {task: str(ROOT / "configs" / f"{task}.yaml") for task in
           ("binary", "multilabel", "multispectral")}  # fmt: skip
# in_channels, logit channels, class (or label) names of each recipe's data.
LAYOUT = {
    "binary": (3, 1, ["background", "shape"]),
    "multilabel": (3, 4, ["circle", "square", "triangle", "cross"]),
    "multispectral": (5, 5, ["background", "circle", "square", "triangle", "cross"]),
}
# SHRINK, then fewer and smaller still: 4 training images (1 step an epoch), 3 encoder stages.
FAST = [
    *SHRINK,
    "--data.train_size=4",
    "--model.model_kwargs={encoder_depth: 3, decoder_channels: [16, 8, 8]}",
    "--trainer.num_sanity_val_steps=0",
    "--trainer.log_every_n_steps=1",
]
CHECKPOINT = "checkpoints/last.ckpt"  # under the recipe's default_root_dir, outputs/<task>


def exit_code(args: list[str]) -> int:
    """The status of a subcommand that exits (export, seeds, audit)."""
    with pytest.raises(SystemExit) as exit_:
        main(args)
    return exit_.value.code


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """{task: its folder} after one tiny 1-epoch `fit` of the recipe there, made on first use
    (outputs/<task>/checkpoints/{best,last}.ckpt, logs, ...)."""
    folders = {}

    def fit(task: str) -> Path:
        if task not in folders:
            folder = tmp_path_factory.mktemp(task)
            with pytest.MonkeyPatch.context() as mp:
                mp.chdir(folder)
                mp.setattr(sys, "argv", ["seglight"])
                main(["fit", "--config", RECIPES[task], *FAST, "--trainer.max_epochs=1"])
            folders[task] = folder
        return folders[task]

    return fit


def checkpoint(folder: Path, task: str) -> Path:
    return folder / "outputs" / task / CHECKPOINT


# --- export -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "task", [*(pytest.param(t, marks=pytest.mark.slow) for t in ("binary", "multilabel")),
             "multispectral"],
)  # fmt: skip
def test_onnx_export_of_every_task_passes_parity_with_its_metadata(fitted, task, capsys):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    ckpt = checkpoint(fitted(task), task)
    output = ckpt.parent / f"{task}.onnx"
    args = ["export", "--ckpt_path", str(ckpt), "--output", str(output), "--example_size",
            "41x45", "--check_sizes", "32x40,2x37x51"]  # fmt: skip
    assert exit_code(args) == 0, capsys.readouterr().err
    in_channels, out_channels, names = LAYOUT[task]
    out = capsys.readouterr().out
    assert f"1x{in_channels}x32x40: max abs diff" in out
    assert f"2x{in_channels}x37x51: max abs diff" in out and out.count(" ok") == 2

    model = onnx.load(str(output))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["task"] == ("multiclass" if task == "multispectral" else task)
    assert meta["in_channels"] == str(in_channels)
    assert json.loads(meta["class_names"]) == names and meta["num_classes"] == str(len(names))
    assert f"(batch, {in_channels}, height, width)" in meta["input_layout"]
    channels = "1" if task == "binary" else "num_classes"
    assert f"(batch, {channels}, height, width)" in meta["output_layout"]
    assert ("sigmoid >= threshold (0.5)" in meta["output_layout"]) == (task != "multispectral")
    if task == "multispectral":  # the recipe's data.mean / data.std, stored in the checkpoint
        assert json.loads(meta["mean"]) == [0.5] * 5 and json.loads(meta["std"]) == [0.3] * 5
    # The graph's channel axes are fixed, batch / height / width dynamic; one more size, odd.
    dims = [d.dim_value or d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", in_channels, "height", "width"]
    session = ort.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    x = torch.randn(3, in_channels, 33, 47, generator=torch.Generator().manual_seed(0))
    (logits,) = session.run(None, {"images": x.numpy()})
    module = SegmentationModule.load_from_checkpoint(ckpt, map_location="cpu").eval()
    with torch.no_grad():
        expected = module(x)
    assert logits.shape == (3, out_channels, 33, 47) == expected.shape
    assert (torch.from_numpy(logits) - expected).abs().max() < 1e-4


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
@pytest.mark.parametrize(
    "task", ["multispectral", pytest.param("multilabel", marks=pytest.mark.slow)]
)
def test_torchscript_export_keeps_the_tasks_metadata(fitted, task, tmp_path, capsys):
    ckpt = checkpoint(fitted(task), task)
    output = tmp_path / f"{task}.pt"
    args = ["export", "--ckpt_path", str(ckpt), "--format", "torchscript", "--output",
            str(output), "--example_size", "41x45", "--check_sizes", "2x32x40"]  # fmt: skip
    assert exit_code(args) == 0, capsys.readouterr().err
    in_channels, out_channels, _ = LAYOUT[task]
    assert f"2x{in_channels}x32x40: max abs diff" in capsys.readouterr().out
    files = {"seglight.json": ""}
    loaded = torch.jit.load(str(output), _extra_files=files)
    meta = json.loads(files["seglight.json"])
    assert meta["in_channels"] == str(in_channels)
    assert meta["task"] == ("multiclass" if task == "multispectral" else task)
    with torch.no_grad():
        assert loaded(torch.zeros(1, in_channels, 24, 40)).shape == (1, out_channels, 24, 40)


def test_export_of_a_5_band_file_without_its_normalization_says_what_to_pass(fitted, capsys):
    """A checkpoint that does not record data.mean / data.std (written before seglight stored
    them) cannot default to ImageNet's three values for 5 channels: one line says what to pass."""
    saved = torch.load(checkpoint(fitted("multispectral"), "multispectral"), weights_only=True)
    for value in saved.values():
        if isinstance(value, dict):
            value.pop("normalization", None)
    ckpt = fitted("multispectral") / "old_style.ckpt"
    torch.save(saved, ckpt)
    assert exit_code(["export", "--ckpt_path", str(ckpt), "--example_size", "41x45"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("seglight: error: mean:"), err
    assert "5 input channels" in err and "--mean" in err and "--std" in err
    assert not ckpt.with_suffix(".onnx").exists()


# --- seeds --------------------------------------------------------------------------------------

HEADLINE = {"binary": "fg_IoU", "multilabel": "mIoU"}


@pytest.mark.parametrize("task", ["binary", pytest.param("multilabel", marks=pytest.mark.slow)])
def test_seeds_summarise_the_tasks_headline_metric(task, in_tmp, capsys):
    args = ["seeds", "--seeds", "3", "4", "--config", RECIPES[task], *FAST,
            "--trainer.max_epochs=1"]  # fmt: skip
    assert exit_code(args) == 0
    out = capsys.readouterr().out
    summary = json.loads((in_tmp / f"outputs/{task}/seeds_summary.json").read_text())
    runs, stats = summary["runs"], summary["summary"]
    assert [r["seed"] for r in runs] == [3, 4]
    headline = f"test/{HEADLINE[task]}"
    values = [r[headline] for r in runs]
    assert values[0] != values[1]  # two seeds, two models
    mean, std = float(np.mean(values)), float(np.std(values, ddof=1))
    assert stats[headline] == {"mean": pytest.approx(mean), "std": pytest.approx(std), "n": 2}
    assert f"{headline}: {mean:.4f} ± {std:.4f} (n=2)" in out
    assert f"best val/{HEADLINE[task]}:" in out  # what each seed's checkpoint was chosen by
    if task == "binary":
        assert "test/mIoU:" not in out and "test/mIoU_2class" in stats  # no multiclass mIoU
    else:
        assert {"test/mF1", "test/IoU_micro", "test/F1_micro"} <= stats.keys()
    for seed in (3, 4):  # each seed's checkpoint in its own folder
        assert (in_tmp / f"outputs/{task}/checkpoints/seed_{seed}/best.ckpt").is_file()


# --- sweeps -------------------------------------------------------------------------------------

SWEPT = {
    "binary": {"model.threshold": 0.4, "model.loss.dice": 0.3, "model.optimizer.lr": 0.001},
    "multilabel": {"model.threshold": 0.6, "model.loss.ce": 0.7, "model.loss.dice": 1.0},
}


@pytest.mark.parametrize("task", ["binary", pytest.param("multilabel", marks=pytest.mark.slow)])
def test_a_sweep_agents_flags_land_in_the_hparams(task, in_tmp):
    # A W&B agent appends `--<name>=<str(value)>` per sampled parameter (wandb_agent.py, see
    # tests/cli/test_sweeps.py) after the sweep's fixed command.
    values = SWEPT[task]
    agent = [f"--{name}={value}" for name, value in values.items()]
    c = main(["fit", "--config", RECIPES[task], *FAST, *agent, "--trainer.fast_dev_run=true"])
    assert c.trainer.state.finished
    hp = c.model.hparams
    assert hp.threshold == values["model.threshold"] == c.model.spec.threshold
    assert {k: hp.loss[k] for k in ("ce", "dice")} == {
        "ce": values.get("model.loss.ce", 1.0), "dice": values["model.loss.dice"]
    }  # fmt: skip
    terms = {k: hp.loss[k] for k in ("ce", "dice", "focal", "lovasz") if hp.loss[k] > 0}
    assert c.model.criterion.weights == terms  # the recipe's other terms stay as they are
    lr = values.get("model.optimizer.lr", 0.002)
    assert c.trainer.optimizers[0].defaults["lr"] == lr
    # What the sweep's `metric` names: the task's headline, logged by validation.
    assert f"val/{HEADLINE[task]}" in c.trainer.callback_metrics


# --- resume -------------------------------------------------------------------------------------


class Interrupted(Exception):
    pass


class Interrupt(L.Callback):
    """Ends the run as a crash would, before the step after optimizer step `step` (the
    checkpoint of that step is written by then).

    Args:
        step: interrupt once `step` optimizer steps are done.
    """

    def __init__(self, step: int = 1) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise Interrupted


MID_STEP = 1  # 8 images in batches of 4: 2 steps in the one epoch; the checkpoint is mid-epoch


def resume_args(task: str, interrupt: bool = False) -> list[str]:
    callbacks = [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                  "init_args": {"dirpath": "ckpt", "save_last": True, "every_n_train_steps":
                                MID_STEP, "enable_version_counter": False}}]  # fmt: skip
    if interrupt:
        callbacks.append({"class_path": "test_every_task.Interrupt",
                          "init_args": {"step": MID_STEP}})  # fmt: skip
    return ["fit", "--config", RECIPES[task], *FAST, "--data.train_size=8",
            "--trainer.max_epochs=1", "--trainer.logger=false",
            "--model.lr_scheduler.warmup_steps=1", f"--trainer.callbacks={callbacks}"]  # fmt: skip


def state(c) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in c.model.state_dict().items()}


@pytest.mark.parametrize("task", ["binary", pytest.param("multilabel", marks=pytest.mark.slow)])
def test_a_mid_epoch_resume_ends_with_the_uninterrupted_weights(task, in_tmp, monkeypatch):
    reference_dir, run_dir = in_tmp / "reference", in_tmp / "run"
    reference_dir.mkdir()
    run_dir.mkdir()
    monkeypatch.chdir(reference_dir)
    reference = state(main(resume_args(task)))
    monkeypatch.chdir(run_dir)
    with pytest.raises(Interrupted):
        main(resume_args(task, interrupt=True))
    saved = torch.load("ckpt/last.ckpt", weights_only=True)
    assert saved["global_step"] == MID_STEP
    assert saved["SyntheticDataModule"]["train_position"] == [0, 1]  # epoch 0, 1 batch done
    c = main([*resume_args(task), "--ckpt_path=last"])
    assert c.trainer.global_step == 2 and c.trainer.current_epoch == 1
    resumed = state(c)
    assert resumed.keys() == reference.keys()
    assert all(torch.equal(resumed[k], reference[k]) for k in reference)
    # Control: the interrupted run's weights are not those of the end.
    interrupted = saved["state_dict"]
    assert not all(torch.equal(interrupted[k], reference[k]) for k in reference)


# --- audit --------------------------------------------------------------------------------------


def test_audit_of_the_binary_recipe_reports_its_two_classes(in_tmp, capsys):
    # (multilabel: tests/data/test_folder_multilabel.py)
    code = exit_code(["audit", "--config", RECIPES["binary"], *FAST, "--split=val",
                      "--output=audit.json", "--trainer.max_epochs=1"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    report = json.loads((in_tmp / "audit.json").read_text())
    assert report["split"] == "val" and report["num_images"] == 4
    assert [(r["id"], r["name"]) for r in report["classes"]] == [(0, "background"), (1, "shape")]
    assert all(r["pixel_fraction"] > 0 for r in report["classes"])
    assert sum(r["pixel_fraction"] for r in report["classes"]) == pytest.approx(1.0)
    assert report["num_problems"] == 0 and report["unexpected_values"] == {}
    assert len(report["class_weights"]) == 2
    assert "  0  background" in out and "  1  shape" in out and "no problems found" in out


# --- predict ------------------------------------------------------------------------------------


def test_predict_of_5_band_images_writes_the_models_masks(fitted, monkeypatch):
    folder = fitted("multispectral")
    monkeypatch.chdir(folder)
    monkeypatch.setattr(sys, "argv", ["seglight"])
    ckpt = checkpoint(folder, "multispectral")
    c = main(["predict", "--config", RECIPES["multispectral"], *FAST, f"--ckpt_path={ckpt}"])
    model = SegmentationModule.load_from_checkpoint(ckpt, map_location="cpu").eval()
    dataset = c.datamodule.build_dataset("predict", c.datamodule.pipelines["eval"])
    written = sorted((folder / "outputs/multispectral/predictions").glob("*.png"))
    assert len(written) == len(dataset) == 2
    for i in range(len(dataset)):
        image = dataset[i]["image"]
        assert image.shape == (5, 32, 32)
        with torch.no_grad():
            expected = model.predict_step({"image": image[None]}, i)[0].numpy()
        mask = np.array(
            Image.open(folder / f"outputs/multispectral/predictions/predict_{i:05d}.png")
        )
        assert mask.shape == (32, 32) and np.array_equal(mask, expected)
