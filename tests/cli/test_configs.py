"""Every YAML file in configs/ parses and instantiates model, data and trainer; the logger and
callbacks every recipe shares are stated once, in configs/shared/, and reach every recipe."""

from pathlib import Path

import pytest
import yaml
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import CSVLogger

from seglight.callbacks import FiniteBestCheckpoint, MaskWriter
from seglight.cli import main

from seglight_testing import ROOT, TINY
from seglight_testing.datasets import (
    SMALL,
    add_voc_aug,
    make_ade,
    make_cityscapes,
    make_folder,
    make_voc,
)

# configs/shared/ holds pieces (one callback, one logger) that recipes load by path; they are not
# configs to pass to --config, so they are checked through the recipes instead.
CONFIGS = sorted(
    p for p in (ROOT / "configs").rglob("*.yaml") if not {"sweeps", "shared"} & set(p.parts)
)
RECIPES = sorted((ROOT / "configs").glob("*.yaml"))  # the experiments; logger/ holds add-ons
SHARED = ROOT / "configs" / "shared"
# What every recipe takes from configs/shared/, by path (never restated inline).
EVERY_RECIPE = {
    "callbacks": ["best_checkpoint.yaml", "lr_monitor.yaml"],
    "logger": "csv_logger.yaml",
}
# Recipes that state a shared piece inline because they need other settings: binary monitors
# val/fg_IoU (it logs no val/mIoU).
RESTATED = {"binary.yaml": {"best_checkpoint.yaml"}}


def test_there_are_configs():
    assert any(p.name == "quickstart.yaml" for p in CONFIGS)


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(ROOT)) for p in CONFIGS])
def test_config_instantiates(path, in_tmp):
    # This machine has no network and no GPU: pretrained weights and mixed precision are the
    # only settings overridden; everything else is built exactly as written.
    c = main(
        [
            "--config",
            str(path),
            "--data.num_workers=0",
            "--model.encoder_weights=null",
            "--trainer.precision=32-true",
        ],
        run=False,
    )
    assert c.model.num_classes == c.datamodule.num_classes
    assert c.trainer is not None


# --- the shared block ---------------------------------------------------------------------------


def shared(name: str) -> dict:
    return yaml.safe_load((SHARED / name).read_text())


def printed_config(capsys, *args: str) -> str:
    """What `seglight fit <args> --print_config` prints: the complete resolved config."""
    with pytest.raises(SystemExit) as exit_:
        main(["fit", *args, "--print_config"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


def is_part_of(small: dict, big: dict) -> bool:
    """Whether every key of `small` (nested) has the same value in `big`."""
    if not isinstance(big, dict):
        return False
    for key, value in small.items():
        if isinstance(value, dict):
            if not is_part_of(value, big.get(key)):
                return False
        elif big.get(key) != value:
            return False
    return True


def test_recipes_and_shared_pieces_exist():
    assert {p.stem for p in RECIPES} >= {"quickstart", "voc", "cityscapes", "ade20k", "folder"}
    pieces = sorted(p.name for p in SHARED.glob("*.yaml"))
    assert pieces == [
        "best_checkpoint.yaml",
        "csv_logger.yaml",
        "lr_monitor.yaml",
        "mask_writer.yaml",
    ]
    for name in pieces:
        text = (SHARED / name).read_text()
        assert text.startswith("#"), f"{name}: a comment says what shares it and how"
        assert "class_path" in shared(name)


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_recipe_resolves_to_the_shared_block(path, in_tmp, capsys):
    # Through the real parser, as --print_config shows it: each shared callback is in the
    # recipe's list with all its settings, and the shared logger is the recipe's logger.
    trainer = yaml.safe_load(printed_config(capsys, "--config", str(path)))["trainer"]
    restated = RESTATED.get(path.name, set())
    for name in ["best_checkpoint.yaml", "lr_monitor.yaml", "mask_writer.yaml"]:
        piece = shared(name)
        same_class = [c for c in trainer["callbacks"] if c["class_path"] == piece["class_path"]]
        assert len(same_class) == 1, f"{path.name}: {piece['class_path']} once"
        if name not in restated:
            assert is_part_of(piece.get("init_args", {}), same_class[0]["init_args"]), name
    checkpoint = shared("best_checkpoint.yaml")
    assert trainer["callbacks"][0]["class_path"] == checkpoint["class_path"]  # the order kept
    assert checkpoint["init_args"]["monitor"] == "val/mIoU" and checkpoint["init_args"]["save_last"]
    assert trainer["callbacks"][0]["init_args"]["save_last"]
    logger = shared("csv_logger.yaml")
    assert trainer["logger"]["class_path"] == logger["class_path"]
    assert is_part_of(logger["init_args"], trainer["logger"]["init_args"])
    # save_dir unset in the shared file: the recipe's own root, as written inline before
    assert trainer["logger"]["init_args"]["save_dir"] == trainer["default_root_dir"]
    assert trainer["default_root_dir"] == f"outputs/{path.stem}"


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_the_shared_block_is_stated_once(path):
    recipe = yaml.safe_load(path.read_text())["trainer"]
    # Loaded by path, relative to the recipe's folder; never restated inline.
    paths = [c for c in recipe["callbacks"] if isinstance(c, str)]
    expected = [n for n in EVERY_RECIPE["callbacks"] if n not in RESTATED.get(path.name, ())]
    assert paths[: len(expected)] == [f"shared/{n}" for n in expected], path.name
    assert recipe["logger"] == f"shared/{EVERY_RECIPE['logger']}", path.name
    assert all((path.parent / p).is_file() for p in paths)
    inline = [c for c in recipe["callbacks"] if isinstance(c, dict)]
    for name in ["best_checkpoint.yaml", "csv_logger.yaml", "lr_monitor.yaml", "mask_writer.yaml"]:
        piece = shared(name)
        restated = name == "mask_writer.yaml" or name in RESTATED.get(path.name, ())
        assert piece["class_path"] not in path.read_text() or restated, name
        # a shared callback written inline only where the recipe needs other settings
        for c in inline:
            if c["class_path"] == piece["class_path"]:
                assert c.get("init_args") and not is_part_of(
                    c["init_args"], piece.get("init_args") or {}
                )
                assert f"shared/{name}" not in paths, f"{path.name}: {name} and its own copy"


def test_every_shared_piece_is_used():
    used = "\n".join(p.read_text() for p in RECIPES)
    for piece in SHARED.glob("*.yaml"):
        assert f"shared/{piece.name}" in used, piece.name


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_print_config_is_complete(path, in_tmp, capsys):
    # The printed config names no file of configs/shared/ and, read back from another folder,
    # prints the same config again: nothing is left out.
    printed = printed_config(capsys, "--config", str(path))
    assert "shared/" not in printed
    (in_tmp / "printed.yaml").write_text(printed)
    assert printed_config(capsys, "--config", str(in_tmp / "printed.yaml")) == printed


def test_printed_recipe_runs_fast_dev_run(in_tmp, capsys):
    # The quickstart as --print_config writes it, saved to a file away from configs/, trains:
    # the shared callbacks and logger are built from the printed file alone.
    printed = printed_config(capsys, "--config", str(ROOT / "configs" / "quickstart.yaml"))
    (in_tmp / "printed.yaml").write_text(printed)
    c = main(["fit", "--config", str(in_tmp / "printed.yaml"), *TINY,
              "--trainer.fast_dev_run=true"])  # fmt: skip
    callbacks = {type(cb) for cb in c.trainer.callbacks}
    assert {FiniteBestCheckpoint, LearningRateMonitor, MaskWriter} <= callbacks
    best = next(cb for cb in c.trainer.callbacks if isinstance(cb, FiniteBestCheckpoint))
    assert (best.monitor, best.mode, best.save_last) == ("val/mIoU", "max", True)
    logger = c.config_init["fit"]["trainer"]["logger"]  # fast_dev_run gives the trainer a dummy
    assert isinstance(logger, CSVLogger) and logger.name == "logs"
    assert c.trainer.state.finished


def test_a_second_config_appends_to_the_shared_callbacks(in_tmp, capsys):
    # `callbacks+:` in a later config file (or --trainer.callbacks+=...) keeps the shared ones.
    (in_tmp / "more.yaml").write_text(
        "trainer:\n  callbacks+:\n"
        "    - class_path: lightning.pytorch.callbacks.EarlyStopping\n"
        "      init_args: {monitor: val/mIoU, mode: max}\n"
    )
    voc = str(ROOT / "configs" / "voc.yaml")
    config = yaml.safe_load(printed_config(capsys, "--config", voc, "--config", "more.yaml"))
    names = [c["class_path"].rsplit(".", 1)[-1] for c in config["trainer"]["callbacks"]]
    assert names == ["FiniteBestCheckpoint", "LearningRateMonitor", "MaskWriter", "EarlyStopping"]


# --- every recipe runs ---------------------------------------------------------------------------

# The data each recipe reads, as a tiny tree in the official layout under the working folder.
RECIPE_DATA = {
    "quickstart.yaml": lambda: None,  # built-in data
    "binary.yaml": lambda: None,
    "multispectral.yaml": lambda: None,
    "multilabel.yaml": lambda: None,
    "voc.yaml": lambda: make_voc(Path("data/voc")),
    "voc_aug.yaml": lambda: (make_voc(Path("data/voc")), add_voc_aug(Path("data/voc"))),
    "cityscapes.yaml": lambda: make_cityscapes(Path("data/cityscapes")),
    "ade20k.yaml": lambda: make_ade(Path("data/ade20k")),
    "folder.yaml": lambda: make_folder(Path("data/my_dataset"), n=6),
}
RECIPE_ARGS = {"folder.yaml": ["--data.classes=[background, road, person]"]}  # make_folder's


def test_every_recipe_has_its_data_here():
    assert sorted(RECIPE_DATA) == sorted(p.name for p in RECIPES)


@pytest.mark.parametrize("name", sorted(RECIPE_DATA))
def test_every_recipe_runs_fast_dev_run(name, in_tmp):
    RECIPE_DATA[name]()
    builtin = ("quickstart.yaml", "binary.yaml", "multispectral.yaml", "multilabel.yaml")
    shrink = TINY if name in builtin else SMALL
    c = main(["fit", "--config", str(ROOT / "configs" / name), *shrink,
              *RECIPE_ARGS.get(name, []), "--trainer.fast_dev_run=true"])  # fmt: skip
    assert c.trainer.state.finished and c.trainer.global_step == 1
