"""seglight.checkpoints, the one checkpoint loader: each file is read once (torch.load counted)
by load_from_checkpoint, `export` and `test`/`fit --ckpt_path`; the old seglight.checkpointing
names still import, with a warning, as the same objects."""

import importlib
import shutil
from pathlib import Path

import pytest
import torch

from seglight import SegmentationModule
from seglight.callbacks.atomic_io import AtomicCheckpointIO
from seglight.cli import main
from seglight.cli.export import load_module
from seglight.errors import ConfigError

from seglight_testing import QUICKSTART, ROOT, TINY, one_error_line

OLD = ROOT / "tests" / "fixtures" / "pre_redesign.ckpt"
# Its model: `best` and `last` are no files when the CLI parses, so their hparams are not read.
OLD_MODEL = ["--model.encoder_name=tu-mobilenetv3_small_050",
             "--model.model_kwargs={decoder_channels: [8, 8, 8, 8, 8]}"]  # fmt: skip


@pytest.fixture
def loads(monkeypatch) -> list:
    """What each torch.load call read: a path, or the name of the file object it was given."""
    seen, load = [], torch.load

    def counting(f, *args, **kwargs):
        name = f if isinstance(f, str | Path) else getattr(f, "path", None) or f.name
        seen.append(Path(name).resolve())
        return load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counting)
    return seen


def test_load_from_checkpoint_reads_the_file_once(loads):
    model = SegmentationModule.load_from_checkpoint(OLD)
    assert model.hparams.encoder_name == "tu-mobilenetv3_small_050"
    assert loads == [OLD.resolve()]


def test_export_loader_reads_the_file_once(loads):
    module = load_module(OLD)
    assert isinstance(module, SegmentationModule) and not module.training
    assert loads == [OLD.resolve()]


def test_built_from_the_read_dict_as_lightning_builds_it():
    ours = SegmentationModule.load_from_checkpoint(OLD, nonfinite_loss="skip")
    lightnings = super(SegmentationModule, SegmentationModule).load_from_checkpoint(
        OLD, nonfinite_loss="skip"
    )
    assert type(ours) is type(lightnings) and dict(ours.hparams) == dict(lightnings.hparams)
    assert ours.hparams.nonfinite_loss == "skip" and ours.class_names == lightnings.class_names
    theirs = lightnings.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in ours.state_dict().items())


def test_an_instantiator_outside_the_allowlist_is_refused(tmp_path):
    checkpoint = torch.load(OLD, weights_only=True)
    checkpoint["hyper_parameters"]["_instantiator"] = "os.system"
    path = tmp_path / "evil.ckpt"
    torch.save(checkpoint, path)
    with pytest.raises(ConfigError, match="instantiator 'os.system'") as info:
        SegmentationModule.load_from_checkpoint(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("subcommand", ["test", "fit"])
def test_cli_ckpt_path_reads_the_file_once(in_tmp, loads, subcommand):
    ckpt = in_tmp / "old.ckpt"
    shutil.copy(OLD, ckpt)
    more = ["--trainer.max_epochs=2", "--trainer.limit_val_batches=1"] * (subcommand == "fit")
    main([subcommand, "--config", QUICKSTART, *TINY, *more, f"--ckpt_path={ckpt}",
          "--trainer.default_root_dir=run"])  # fmt: skip
    assert loads.count(ckpt.resolve()) == 1, loads
    assert next((in_tmp / "run").rglob("test_report.json" if subcommand == "test" else "*.ckpt"))
    if subcommand == "fit":  # `best` in a new process: the best checkpoint fit wrote, read once
        main(["test", "--config", QUICKSTART, *TINY, *OLD_MODEL, "--ckpt_path=best",
              "--trainer.default_root_dir=run"])  # fmt: skip
        assert loads.count((in_tmp / "run/checkpoints/best.ckpt").resolve()) == 1, loads
        assert next((in_tmp / "run").rglob("test_report.json"))


def test_best_without_a_best_checkpoint_is_one_line(in_tmp, capsys):
    with pytest.raises(SystemExit) as info:
        main(["test", "--config", QUICKSTART, *TINY, "--ckpt_path=best"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert info.value.code == 2 and "ckpt_path: best: no best.ckpt in" in err, err
    assert "outputs/quickstart/checkpoints" in err


def test_preloaded_checkpoint_is_used_once_and_only_for_an_unchanged_file(tmp_path, loads):
    path = tmp_path / "a.ckpt"
    torch.save({"state_dict": {}, "n": 1}, path)
    io = AtomicCheckpointIO()
    io.preload(path, {"state_dict": {}, "n": "preloaded"})
    assert io.load_checkpoint(path)["n"] == "preloaded" and loads == []
    assert io.load_checkpoint(path)["n"] == 1 and len(loads) == 1  # let go after one use
    io.preload(path, {"state_dict": {}, "n": "preloaded"})
    torch.save({"state_dict": {}, "n": 2, "pad": torch.zeros(8)}, path)  # replaced since
    assert io.load_checkpoint(path)["n"] == 2


MOVED = {
    "AtomicCheckpointIO": "seglight.callbacks.atomic_io",
    "remove_stale_partials": "seglight.callbacks.atomic_io",
    "use_atomic_checkpoint_io": "seglight.callbacks.atomic_io",
    "PARTIAL_PREFIX": "seglight.callbacks.atomic_io",
    "PARTIAL_SUFFIX": "seglight.callbacks.atomic_io",
    "STALE_AFTER_S": "seglight.callbacks.atomic_io",
    "read_checkpoint": "seglight.checkpoints",
    "check_seglight_checkpoint": "seglight.checkpoints",
    "check_matches_model": "seglight.checkpoints",
    "check_resumable": "seglight.checkpoints",
    "resolve_ckpt_path": "seglight.cli.ckpt_path",
    "last_checkpoint_candidates": "seglight.cli.ckpt_path",
}


@pytest.mark.parametrize("name", MOVED)
def test_old_import_path_warns_and_gives_the_same_object(name):
    old = importlib.import_module("seglight.checkpointing")
    with pytest.warns(FutureWarning, match=f"seglight.checkpointing.{name} moved"):
        value = getattr(old, name)
    assert value is getattr(importlib.import_module(MOVED[name]), name)


def test_old_plugin_class_path_in_a_config_still_works(in_tmp):
    plugin = "--trainer.plugins=seglight.checkpointing.AtomicCheckpointIO"
    with pytest.warns(FutureWarning, match="AtomicCheckpointIO moved"):
        cli = main(["--config", QUICKSTART, *TINY, plugin], run=False)
    assert type(cli.trainer.strategy.checkpoint_io) is AtomicCheckpointIO


def test_a_checkpoint_with_weights_of_dropped_modules_tests_but_does_not_resume(in_tmp, capsys):
    """Saved before seglight dropped the encoder modules no step uses (here resnet18's layer4
    at encoder_depth 4): its weights still load; its optimizer state counts them, so `fit`
    refuses to resume in one line, naming the file."""
    depth4 = ["--model.model_kwargs={encoder_depth: 4, decoder_channels: [16, 8, 8, 8]}"]
    run = [*TINY, *depth4, "--trainer.default_root_dir=run", "--trainer.limit_val_batches=1"]
    main(["fit", "--config", QUICKSTART, *run, "--trainer.max_epochs=1"])
    checkpoint = torch.load(in_tmp / "run/checkpoints/last.ckpt", weights_only=False)
    checkpoint["state_dict"]["net.encoder.layer4.0.conv1.weight"] = torch.zeros(512, 256, 3, 3)
    torch.save(checkpoint, in_tmp / "old.ckpt")
    main(["test", "--config", QUICKSTART, *run, "--ckpt_path=old.ckpt"])
    assert next((in_tmp / "run").rglob("test_report.json"))
    with pytest.raises(SystemExit):
        main(
            ["fit", "--config", QUICKSTART, *run, "--trainer.max_epochs=2", "--ckpt_path=old.ckpt"]
        )
    line = one_error_line(capsys)
    assert "old.ckpt was saved by an older seglight" in line and "layer4.0.conv1.weight" in line
