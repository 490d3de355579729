"""The command line end to end: subcommands, config composition, sweep flags, links, errors."""

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from seglight.cli import main
from seglight.data.synthetic import CLASS_NAMES

from seglight_testing import QUICKSTART, ROOT, TINY


def cli(*args: str):
    """Run a subcommand in-process, e.g. cli("fit", "--config", ...)."""
    return main(list(args))


def parse(*args: str):
    """Parse and instantiate model, data and trainer without running (no subcommand)."""
    return main(list(args), run=False)


def python_m(*args: str, cwd: Path, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "seglight", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_help_lists_the_subcommands(in_tmp, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for sub in ("fit", "validate", "test", "predict", "audit", "export", "seeds"):
        assert sub in out


def test_one_table_of_subcommands(in_tmp, capsys):
    """Lightning's subcommands are the table's without a target; every other one is a function
    that answers --help; the top-level --help shows each with its line."""
    from lightning.pytorch.cli import LightningCLI

    from seglight.cli import SUBCOMMANDS

    assert {n for n, s in SUBCOMMANDS.items() if s.target is None} == set(
        LightningCLI.subcommands()
    )
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for name, sub in SUBCOMMANDS.items():
        assert any(
            line.split()[:1] == [name] and sub.help[:30] in line for line in out.splitlines()
        )
        if sub.target is not None:
            with pytest.raises(SystemExit) as exit_:
                main([name, "--help"])
            assert exit_.value.code == 0
            assert f"seglight {name}" in capsys.readouterr().out


def test_quickstart_fast_dev_run_through_python_m(in_tmp):
    out = python_m(
        "fit",
        "--config",
        QUICKSTART,
        "--trainer.fast_dev_run=true",
        "--data.num_workers=0",
        cwd=in_tmp,
    )
    assert out.returncode == 0, out.stderr[-3000:]


def test_fit_validate_test_predict_end_to_end(in_tmp, capsys):
    cli("fit", "--config", QUICKSTART, *TINY, "--trainer.max_epochs=2")
    ckpts = in_tmp / "outputs/quickstart/checkpoints"
    assert (ckpts / "best.ckpt").is_file() and (ckpts / "last.ckpt").is_file()
    run_dir = in_tmp / "outputs/quickstart/logs/version_0"
    assert (run_dir / "config.yaml").is_file()  # every run saves the config it ran with
    rows = list(csv.DictReader(open(run_dir / "metrics.csv")))
    logged = {k for row in rows for k, v in row.items() if v}
    assert {"train/loss_step", "val/loss", "val/mIoU", "val/pixel_acc", "val/mAcc"} <= logged
    assert {f"val/IoU/{name}" for name in CLASS_NAMES} <= logged
    miou = [float(r["val/mIoU"]) for r in rows if r.get("val/mIoU")]
    assert len(miou) == 2 and all(0 <= m <= 1 for m in miou)

    best = str(ckpts / "best.ckpt")
    capsys.readouterr()
    cli("test", "--config", QUICKSTART, *TINY, f"--ckpt_path={best}")
    printed = capsys.readouterr().out
    assert "test per class" in printed and all(name in printed for name in CLASS_NAMES)

    cli("validate", "--config", QUICKSTART, *TINY, f"--ckpt_path={best}")
    assert "val per class" in capsys.readouterr().out

    cli("predict", "--config", QUICKSTART, *TINY, f"--ckpt_path={best}")
    written = sorted((in_tmp / "outputs/quickstart/predictions").glob("*.png"))
    assert [p.name for p in written] == [
        "predict_00000.png",
        "predict_00001.png",
        "predict_00002.png",
    ]
    image = Image.open(written[0])
    assert image.mode == "P" and image.size == (32, 32)
    assert np.array(image).max() < len(CLASS_NAMES)


def test_checkpoint_reloads_in_plain_python(in_tmp):
    cli("fit", "--config", QUICKSTART, *TINY, "--trainer.max_epochs=1")
    from seglight import SegmentationModule

    model = SegmentationModule.load_from_checkpoint(
        in_tmp / "outputs/quickstart/checkpoints/last.ckpt", map_location="cpu"
    ).eval()
    assert model.num_classes == len(CLASS_NAMES) and model.class_names == CLASS_NAMES
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, len(CLASS_NAMES), 32, 32)


def test_configs_compose_later_ones_win(in_tmp):
    override = in_tmp / "override.yaml"
    override.write_text(
        "trainer:\n  max_epochs: 3\nmodel:\n  init_args:\n    loss: {ce: 1.0, dice: 0.5}\n"
        "data:\n  init_args:\n    batch_size: 2\n"
    )
    c = parse("--config", QUICKSTART, "--config", str(override), "--data.batch_size=3")
    assert c.trainer.max_epochs == 3
    assert c.model.criterion.weights == {"ce": 1.0, "dice": 0.5}
    assert c.datamodule.batch_size == 3  # the command line comes after both files


def test_sweep_agent_flags_reach_model_data_optimizer_and_trainer(in_tmp):
    # The form a W&B agent passes: --key=value, one per parameter.
    c = parse(
        "--config",
        QUICKSTART,
        "--model.arch=FPN",
        "--model.encoder_name=mobilenet_v2",
        "--model.optimizer.lr=0.0123",
        "--model.optimizer.weight_decay=0.05",
        "--model.loss.dice=0.25",
        "--model.lr_scheduler.power=1.0",
        "--data.batch_size=7",
        "--data.image_size=48",
        "--trainer.max_epochs=2",
        "--trainer.gradient_clip_val=1.5",
        "--model.model_kwargs={}",
    )
    assert type(c.model.net).__name__ == "FPN"
    assert c.model.hparams.encoder_name == "mobilenet_v2"
    assert c.model.criterion.weights == {"ce": 1.0, "dice": 0.25}
    optimizer = c.model.optimizer(c.model.parameters())
    assert optimizer.defaults["lr"] == 0.0123 and optimizer.defaults["weight_decay"] == 0.05
    assert c.model.lr_scheduler(optimizer).power == 1.0
    assert c.datamodule.batch_size == 7 and c.datamodule.image_size == 48
    assert c.trainer.max_epochs == 2 and c.trainer.gradient_clip_val == 1.5


def test_classes_are_linked_from_the_data(in_tmp):
    c = parse("--config", QUICKSTART)
    assert c.model.num_classes == len(CLASS_NAMES) and c.model.class_names == CLASS_NAMES
    assert c.model.ignore_index == 255


def test_subclass_selected_with_model_flag(in_tmp):
    # The class comes first, then its arguments (jsonargparse applies flags in order).
    cli(
        "fit",
        "--config",
        QUICKSTART,
        "--model=seglight_testing.subclass_example.BoundaryWeighted",
        *TINY,
        "--trainer.max_epochs=1",
        "--model.penalty=0.5",
    )
    rows = list(csv.DictReader(open(in_tmp / "outputs/quickstart/logs/version_0/metrics.csv")))
    assert any(r.get("train/loss_logit_l2_step") for r in rows)
    cfg = (in_tmp / "outputs/quickstart/logs/version_0/config.yaml").read_text()
    assert "seglight_testing.subclass_example.BoundaryWeighted" in cfg and "penalty: 0.5" in cfg


def test_print_config_is_a_runnable_config(in_tmp, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", QUICKSTART, "--model.optimizer.lr=0.005", "--print_config"])
    assert exit_.value.code == 0
    (in_tmp / "printed.yaml").write_text(capsys.readouterr().out)
    c = cli(
        "fit",
        "--config",
        str(in_tmp / "printed.yaml"),
        "--trainer.fast_dev_run=true",
        "--data.num_workers=0",
    )
    assert c.trainer.optimizers[0].defaults["lr"] == 0.005


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--model.arch=Unett"], "unknown architecture 'Unett' (did you mean 'Unet'?)"),
        (["--model.encoder_name=resnet19"], "unknown encoder 'resnet19'"),
        (["--model.archh=FPN"], "archh"),
        (["--trainer.max_epochs=abc"], "max_epochs"),
        (["--model.loss.dice=lots"], "dice"),
        (["--model.loss.dice=-1"], "loss.dice"),
        (["--model.encoder_weights=imagenet"], "encoder_weights: null"),
        (["--data.train_transforms=[{name: HorizontalFlp}]"], "did you mean 'HorizontalFlip'"),
    ],
    ids=[
        "arch",
        "encoder",
        "misspelled-key",
        "wrong-type",
        "wrong-type-nested",
        "bad-value",
        "offline-weights",
        "transform",
    ],
)
def test_bad_input_is_one_clear_line(in_tmp, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_info:
        parse("--config", QUICKSTART, *flags)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    error_lines = [line for line in err.splitlines() if "error:" in line]
    assert len(error_lines) == 1, err
    assert message in error_lines[0], err


@pytest.mark.slow  # a subprocess or a second run; `make test-all`
def test_bad_input_from_the_shell_has_no_traceback(in_tmp):
    out = python_m("fit", "--config", QUICKSTART, "--model.arch=Unett", cwd=in_tmp)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr and "did you mean 'Unet'" in out.stderr


def test_readme_and_makefile_commands_exist():
    makefile = (ROOT / "Makefile").read_text()
    for target in ("help:", "install:", "demo:", "test:", "test-all:", "lint:", "bench:"):
        assert target in makefile


@pytest.mark.slow  # a subprocess or a second run; `make test-all`
def test_console_script_exits_zero_on_success(in_tmp):
    script = Path(sys.executable).parent / "seglight"
    out = subprocess.run([str(script), "fit", "--config", QUICKSTART, *TINY,
                          "--trainer.fast_dev_run=true"], cwd=in_tmp, capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
