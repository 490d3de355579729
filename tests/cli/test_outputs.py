"""Where a run writes: nothing that could overwrite a checkpoint under fast_dev_run, and every
output under --trainer.default_root_dir unless a path is given for it."""

import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
from jsonargparse import Namespace
from lightning.pytorch.utilities.exceptions import SIGTERMException

from seglight.callbacks.preemption import PreemptionCheckpoint
from seglight.cli import default_logger_save_dirs, main

from seglight_testing import QUICKSTART, TINY

ONE_STEP = [
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=1",
    "--trainer.limit_val_batches=1",
    "--trainer.num_sanity_val_steps=0",
]


def files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_fast_dev_run_writes_no_checkpoint(in_tmp):
    """Lightning's ModelCheckpoint.on_train_end writes last.ckpt even under fast_dev_run."""
    main(["fit", "--config", QUICKSTART, *TINY, "--trainer.fast_dev_run=true"])
    assert not list(in_tmp.rglob("*.ckpt")), files(in_tmp)


def test_preemption_under_fast_dev_run_saves_nothing(capsys):
    def refuse(path):
        raise AssertionError(f"saved {path}")

    trainer = SimpleNamespace(world_size=1, fast_dev_run=1, is_global_zero=True,
                              save_checkpoint=refuse)  # fmt: skip
    callback = PreemptionCheckpoint()
    callback.received = signal.SIGTERM
    with pytest.raises(SIGTERMException) as info:
        callback.on_train_batch_end(trainer, None, None, None, 0)
    assert info.value.args == (143,)  # the status of a pre-empted run, as without fast_dev_run
    assert "fast_dev_run, so no checkpoint saved" in capsys.readouterr().err


def test_default_root_dir_moves_every_output(in_tmp):
    """fit + test + predict with the quickstart config: checkpoints, logs, validation images,
    test report and predictions all under runA; nothing in the config's outputs/quickstart."""
    root = ["--config", QUICKSTART, *TINY, "--trainer.default_root_dir=runA"]
    main(["fit", *root, *ONE_STEP])
    main(["test", *root, "--ckpt_path=runA/checkpoints/best.ckpt"])
    main(["predict", *root, "--ckpt_path=last"])  # `last` is looked for under runA too
    run = in_tmp / "runA"
    written = files(run)
    for name in ("checkpoints/best.ckpt", "checkpoints/last.ckpt", "logs/version_0/metrics.csv",
                 "logs/version_0/config.yaml", "logs/version_0/images/val_epoch0.png",
                 "logs/version_1/test_report.json", "predictions/predict_00000.png"):  # fmt: skip
        assert name in written, written
    assert sorted(p.name for p in in_tmp.iterdir()) == ["runA"]  # no outputs/, lightning_logs/


def test_explicit_paths_win_over_default_root_dir(in_tmp):
    callbacks = ("[{class_path: seglight.callbacks.FiniteBestCheckpoint, init_args: "
                 "{dirpath: my_ckpts, save_last: true}}, {class_path: "
                 "seglight.callbacks.MaskWriter, init_args: {output_dir: my_masks}}]")  # fmt: skip
    args = ["--config", QUICKSTART, *TINY, "--trainer.default_root_dir=runB",
            f"--trainer.callbacks={callbacks}", "--trainer.logger.save_dir=my_logs"]  # fmt: skip
    main(["fit", *args, *ONE_STEP, "--trainer.limit_val_batches=0"])
    main(["predict", *args])
    assert (in_tmp / "my_ckpts" / "last.ckpt").is_file()
    assert (in_tmp / "my_logs" / "logs" / "version_0" / "metrics.csv").is_file()
    assert len(list((in_tmp / "my_masks").glob("*.png"))) == 3
    assert not list(in_tmp.glob("runB/**/*.*"))  # nothing defaulted to the root


CSV, WANDB = "lightning.pytorch.loggers.CSVLogger", "seglight.loggers.WandbLogger"


@pytest.mark.parametrize(
    ("class_path", "init_args", "expected"),
    [
        (CSV, {"name": "logs"}, "R"),
        (CSV, {"save_dir": "mine"}, "mine"),
        (WANDB, {"save_dir": "."}, "R"),  # "." is its default: not a choice
        (WANDB, {"save_dir": ".", "dir": "d"}, "."),  # W&B's own name for save_dir was given
        ("lightning.pytorch.loggers.CometLogger", {}, None),  # takes no save_dir
    ],
)
def test_unset_logger_save_dir_becomes_the_root(class_path, init_args, expected):
    logger = Namespace(class_path=class_path, init_args=Namespace(**init_args))
    cfg = Namespace(subcommand="fit", fit=Namespace(trainer=Namespace(
        default_root_dir="R", logger=[logger])))  # fmt: skip
    default_logger_save_dirs(cfg)
    assert cfg.fit.trainer.logger[0].init_args.get("save_dir") == expected
