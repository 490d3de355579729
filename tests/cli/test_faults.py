"""Bad input met by a run started from the command line: exit status 2 and one `error:` line
naming the file or option and what is wrong; and nothing lost when a file goes bad mid-run.

The readers themselves are tested per dataset (tests/data/: test_voc.py, test_folder.py, ...)
by calling `load`; here the same faults travel through `main([...])`: the DataLoader (also from a
worker process), Lightning's fit loop and the CLI's error handling. Config values of the wrong type
that test_cli.py does not already cover are here too.
"""

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from seglight.cli import main
from seglight.module import SegmentationModule

from seglight_testing import QUICKSTART, one_error_line
from seglight_testing.datasets import FOLDER, NAMES, make_folder


@pytest.fixture
def folder(in_tmp) -> Path:
    """data/images, data/masks and the split lists, in the test's working folder."""
    root = in_tmp / "data"
    make_folder(root, n=4)
    (root / "train.txt").write_text("scene_00\nscene_01\nscene_02\n")
    (root / "val.txt").write_text("scene_03\n")
    return root


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def save_mask(path: Path, values: np.ndarray, mode: str | None = None) -> None:
    Image.fromarray(values, mode=mode).save(path) if mode else Image.fromarray(values).save(path)


# (what to break, the words of the error line): the line must name the file and the fault.
FAULTS = {
    "truncated-jpeg": (
        lambda root: truncate(root / "images/scene_00.jpg"),
        ["images/scene_00.jpg: cannot decode image"],
    ),
    "truncated-png-image": (
        lambda root: truncate(root / "images/scene_01.png"),
        ["images/scene_01.png: cannot decode image"],
    ),
    "zero-byte-mask": (
        lambda root: (root / "masks/scene_00.png").write_bytes(b""),
        ["masks/scene_00.png: cannot decode mask"],
    ),
    "rgb-mask": (
        lambda root: save_mask(root / "masks/scene_00.png", np.zeros((24, 32, 3), np.uint8)),
        ["masks/scene_00.png: mask has mode 'RGB'", "converted from a palette"],
    ),
    "16-bit-mask": (
        lambda root: save_mask(root / "masks/scene_02.png", np.ones((24, 32), np.uint16)),
        ["masks/scene_02.png: mask has mode 'I;16'", "8-bit"],
    ),
    "label-out-of-range": (
        lambda root: save_mask(root / "masks/scene_01.png", np.full((24, 32), 7, np.uint8), "L"),
        ["masks/scene_01.png: mask has values [7]", "values 0-2, 255"],
    ),
    "size-mismatch": (
        lambda root: save_mask(root / "masks/scene_00.png", np.zeros((24, 31), np.uint8), "L"),
        ["images/scene_00.jpg is 32x24", "masks/scene_00.png is 31x24"],
    ),
    "bad-validation-file": (
        lambda root: truncate(root / "masks/scene_03.png", 0.3),
        ["masks/scene_03.png: cannot decode mask"],
    ),
}


@pytest.mark.parametrize("fault", FAULTS, ids=list(FAULTS))
def test_bad_file_stops_fit_with_one_line_naming_it(folder, capsys, fault):
    breaks, words = FAULTS[fault]
    breaks(folder)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *FOLDER, "--trainer.fast_dev_run=true"])  # one batch: every image
    assert exit_info.value.code == 2
    line = one_error_line(capsys)
    for word in words:
        assert word in line, line


def test_bad_file_read_in_a_worker_process_is_still_one_line(folder, capsys):
    """A DataLoader worker wraps the error in its own traceback text; the line is the file's."""
    truncate(folder / "images/scene_00.jpg")
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *FOLDER, "--data.num_workers=1", "--trainer.fast_dev_run=true"])
    assert exit_info.value.code == 2
    line = one_error_line(capsys)
    assert "images/scene_00.jpg: cannot decode image" in line and "worker" not in line, line


@pytest.mark.parametrize(
    ("flag", "words"),
    [
        ("--data.batch_size=two", ["batch_size", "expected int", "'two'"]),
        ("--model.loss.ce=abc", ["ce", "expected float", "'abc'"]),
        ("--trainer.max_epochs=1.5", ["trainer.max_epochs", "expected int", "'1.5'"]),
        ("--data.batch_size=[2, 3]", ["batch_size", "expected int", "[2, 3]"]),
        ("--model.loss.ce=[1]", ["ce", "expected float", "[1]"]),
        ("--model.optimizer.lr=[0.1]", ["lr", "expected float", "[0.1]"]),
    ],
    ids=[
        "word-for-int",
        "word-for-float",
        "float-for-int",
        "list-for-int",
        "list-for-float",
        "list-for-optimizer-float",
    ],  # fmt: skip
)
def test_config_value_of_the_wrong_type_is_one_line(in_tmp, capsys, flag, words):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", QUICKSTART, flag])
    assert exit_info.value.code == 2
    line = one_error_line(capsys)
    for word in words:
        assert word in line, line


class BreakFileAfterFirstEpoch(L.Callback):
    """Truncates `path` when the first training epoch ends (after its validation and
    checkpoint): a file that goes bad mid-run, as on a failing disk or a shared file system.

    Args:
        path: the file to truncate.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == 0:
            truncate(Path(self.path), 0.3)


def test_bad_file_in_epoch_two_keeps_the_epoch_one_checkpoint(folder, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *FOLDER, "--trainer.max_epochs=3",
              "--trainer.callbacks+=test_faults.BreakFileAfterFirstEpoch",
              "--trainer.callbacks.path=data/images/scene_01.png"])  # fmt: skip
    assert exit_info.value.code == 2
    assert "images/scene_01.png: cannot decode image" in one_error_line(capsys)
    last = folder.parent / "outputs/quickstart/checkpoints/last.ckpt"
    checkpoint = torch.load(last, map_location="cpu", weights_only=False)
    assert checkpoint["epoch"] == 0 and checkpoint["global_step"] == 1  # epoch 1: one batch
    model = SegmentationModule.load_from_checkpoint(last, map_location="cpu").eval()
    assert model.class_names == NAMES
    assert model(torch.zeros(1, 3, 24, 32)).shape == (1, len(NAMES), 24, 32)
