"""A score is a function of the checkpoint, the data and the protocol: never of the evaluation
batch size or the number of processes, even when the images have different sizes."""

import json
import sys

import numpy as np
from PIL import Image

from seglight.cli import main

from seglight_testing import ROOT, run_on_cpus
from seglight_testing.datasets import SMALL

# (height, width) of the images: no two batches of 2 or 3 pad alike, and 45x61 is no multiple
# of the encoder's stride 32 (the network itself needs padding).
SIZES = [(45, 61), (64, 40), (33, 33), (70, 52), (38, 64), (64, 64), (51, 47)]


def make_mixed_folder(root) -> str:
    """A folder dataset of images of different sizes, every image in the test (= val) split."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, (h, w) in enumerate(SIZES):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
            root / "images" / f"img{i}.png"
        )
        mask = rng.integers(0, 3, (h, w), dtype=np.uint8)
        mask[: h // 4] = 255  # some unlabelled pixels
        Image.fromarray(mask, mode="L").save(root / "masks" / f"img{i}.png")
    (root / "all.txt").write_text("\n".join(f"img{i}" for i in range(len(SIZES))))
    return str(root)


def eval_args(root: str, eval_batch_size: int) -> list[str]:
    return ["test", "--config", str(ROOT / "configs" / "folder.yaml"), *SMALL,
            f"--data.root={root}", "--data.classes=[a, b, c]", "--data.train_list=all.txt",
            "--data.val_list=all.txt", f"--data.eval_batch_size={eval_batch_size}",
            "--trainer.logger=true", "--trainer.default_root_dir=run"]  # fmt: skip


def report(folder) -> dict:
    return json.loads(next(folder.rglob("test_report.json")).read_text())


def test_confusion_matrix_independent_of_eval_batch_size_and_processes(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["seglight"])
    root = make_mixed_folder(tmp_path / "data")
    results = {}
    for batch in (1, 2, 3):  # in this process: a seeded random-init model, the same each time
        (tmp_path / f"bs{batch}").mkdir()
        monkeypatch.chdir(tmp_path / f"bs{batch}")
        main(eval_args(root, batch))
        results[(1, batch)] = report(tmp_path / f"bs{batch}")
    # 2 processes (gloo): 7 images split 4 + 3, batches of 3 hold different images than above.
    results[(2, 3)] = report(run_on_cpus(tmp_path, 2, eval_args(root, 3)))
    reference = np.array(results[(1, 1)]["confusion_matrix"])
    labelled = sum(int((np.array(Image.open(p)) != 255).sum())
                   for p in (tmp_path / "data" / "masks").iterdir())  # fmt: skip
    assert reference.sum() == labelled  # every labelled pixel once, padding never counted
    for key, result in results.items():
        np.testing.assert_array_equal(np.array(result["confusion_matrix"]), reference, str(key))
        assert result["mIoU"] == results[(1, 1)]["mIoU"], key  # from equal counts: equal
