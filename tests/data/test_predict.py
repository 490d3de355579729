"""`predict --data.predict_dir=<folder>` on a folder as users have them: sub-folders, two photos
with one stem, hidden files, a truncated JPEG and a text file named .png among good images."""

import io
import logging
import os
import subprocess
import sys
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
import torch
from PIL import Image

from seglight.cli import main
from seglight.data.predict import collate_predict, find_images, output_names
from seglight.data.synthetic import CLASS_NAMES

from seglight_testing import QUICKSTART, TINY

GOOD = {  # input (relative path) -> (height, width), and where its mask must go
    "photo.jpg": ((40, 52), "photo.jpg.png"),
    "photo.png": ((33, 47), "photo.png.png"),
    "a/mid.png": ((36, 44), "a/mid.png"),
    "a/b/deep.jpg": ((32, 30), "a/b/deep.png"),
}
BAD = {"broken.jpg": "truncated", "notes.png": "not in a format that can be read"}
# Sorted, the inputs are a/b/deep.jpg, a/mid.png, broken.jpg, notes.png, photo.jpg, photo.png:
# with batches of 2, the second batch holds only the two bad files.


def make_folder(root: Path) -> Path:
    """The folder: good images, bad files, hidden files and folders, a file that is no image."""
    rng = np.random.default_rng(0)
    for name, ((h, w), _) in GOOD.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / name)
    jpeg = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(jpeg, "JPEG")
    (root / "broken.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    (root / "notes.png").write_text("not an image, whatever its name says")
    (root / ".DS_Store").write_bytes(b"\0\1\2")
    (root / "._photo.jpg").write_bytes(b"\0\5\26\7")  # macOS resource fork: hidden, not read
    (root / ".ipynb_checkpoints").mkdir()
    Image.new("RGB", (8, 8)).save(root / ".ipynb_checkpoints" / "photo-checkpoint.png")
    (root / "readme.txt").write_text("no image")
    return root


def written(out: Path) -> list[str]:
    """The mask files under `out`, relative, sorted."""
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))


def test_find_images_recursive_and_hidden_skipped(tmp_path):
    images, others = find_images(make_folder(tmp_path / "photos"))
    assert [str(p) for p in images] == [
        "a/b/deep.jpg", "a/mid.png", "broken.jpg", "notes.png", "photo.jpg", "photo.png"
    ]  # fmt: skip
    assert [str(p) for p in others] == ["readme.txt"]


def test_output_names_keep_the_extension_only_where_stems_clash():
    names = ["a/x.jpg", "b/x.jpg", "photo.JPG", "photo.png", "y.jpg", "y.jpg.png", "y.png",
             "z.tif"]  # fmt: skip
    assert output_names([PurePosixPath(p) for p in names]) == [
        "a/x", "b/x",  # same stem in different folders: no clash
        "photo.JPG", "photo.png",  # same stem up to case (case-insensitive disks)
        "y.jpg", "y.jpg.png", "y.png",  # y.jpg keeps its extension, then y.jpg.png must too
        "z",
    ]  # fmt: skip


def test_collate_drops_failures_and_a_batch_of_failures_only_is_empty():
    good = {"image": torch.ones(3, 4, 5), "mask": torch.zeros(4, 5, dtype=torch.long),
            "name": "a.jpg", "size": torch.tensor([4, 5]), "output": "a"}  # fmt: skip
    bad = {"failed": "dir/b.jpg", "reason": "truncated"}
    batch = collate_predict([bad, good])
    assert batch["image"].shape == (1, 3, 4, 5) and batch["name"] == ["a.jpg"]
    assert batch["output"] == ["a"] and batch["failed"] == [("dir/b.jpg", "truncated")]
    empty = collate_predict([bad, bad])
    assert empty["image"].shape[0] == 0 and empty["size"].shape == (0, 2)
    assert empty["name"] == [] and len(empty["failed"]) == 2


@pytest.mark.parametrize("workers", [0, 2])
def test_predict_over_a_real_folder(in_tmp, capsys, caplog, workers):
    make_folder(in_tmp / "photos")
    args = ["predict", "--config", QUICKSTART, *TINY, f"--data.num_workers={workers}",
            "--data.predict_dir=photos", "--data.eval_batch_size=2",
            "--trainer.callbacks+=seglight.callbacks.MaskWriter",
            "--trainer.callbacks.output_dir=out", "--trainer.callbacks.overlay=true"]  # fmt: skip
    with caplog.at_level(logging.INFO), pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 1  # the others were predicted; the run says it is incomplete
    out = in_tmp / "out"
    assert written(out) == sorted(target for _, target in GOOD.values())  # nothing overwritten
    for (h, w), target in GOOD.values():
        mask = Image.open(out / target)
        assert mask.mode == "P" and mask.size == (w, h)  # the input's own size
        assert np.array(mask).max() < len(CLASS_NAMES)
        overlay = out / "overlays" / (target.removesuffix(".png") + ".jpg")
        assert Image.open(overlay).size == (w, h)
    err = capsys.readouterr().err
    listed = [line.strip() for line in err.splitlines() if line.startswith("  ")]
    assert "2 of 6 images could not be read" in err
    assert len(listed) == 2, err
    for line, (name, reason) in zip(listed, sorted(BAD.items()), strict=True):
        assert line.startswith(f"{Path('photos') / name}: ") and reason in line
    assert "are left out: readme.txt" in caplog.text  # said, not silently ignored


def test_a_clean_folder_exits_normally(in_tmp, capsys):
    root = in_tmp / "photos"
    (root / "sub").mkdir(parents=True)
    Image.new("RGB", (40, 32)).save(root / "sub" / "x.jpg")
    main(["predict", "--config", QUICKSTART, *TINY, "--data.predict_dir=photos",
          "--trainer.callbacks+=seglight.callbacks.MaskWriter",
          "--trainer.callbacks.output_dir=out"])  # fmt: skip
    assert Image.open(in_tmp / "out" / "sub" / "x.png").size == (40, 32)
    assert "could not be read" not in capsys.readouterr().err


@pytest.mark.slow  # two processes: ~1 min on 2 cores
def test_ddp_writes_on_every_rank_and_rank_0_lists_every_failure(tmp_path):
    """2 CPU processes: each predicts half the files (one bad file each); rank 0 prints both."""
    make_folder(tmp_path / "photos")
    out = subprocess.run(
        [sys.executable, "-m", "seglight", "predict", "--config", QUICKSTART, *TINY,
         "--data.predict_dir=photos", "--data.eval_batch_size=1",
         "--trainer.callbacks+=seglight.callbacks.MaskWriter", "--trainer.callbacks.output_dir=out",
         "--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp"],
        cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 1, out.stderr[-3000:]
    assert written(tmp_path / "out") == sorted(target for _, target in GOOD.values())
    assert out.stderr.count("2 of 6 images could not be read") == 1, out.stderr[-3000:]
    listed = [line.strip() for line in out.stderr.splitlines() if line.startswith("  photos")]
    assert [line.split(":")[0] for line in listed] == [f"photos/{n}" for n in sorted(BAD)]
