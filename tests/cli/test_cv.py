"""`seglight cv`: folds of the training split (seglight.data.folds), fit + test per fold, mean ± std
over folds, and the fold models as one ensemble (seglight.ensemble)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from seglight import SegmentationModule
from seglight.cli import main
from seglight.data import FolderDataModule, SyntheticDataModule
from seglight.data.folds import assign_folds, class_presence
from seglight.ensemble import Ensemble

from seglight_testing import QUICKSTART, TINY, one_error_line

# --- folds -------------------------------------------------------------------------------------


def _check_partition(folds: np.ndarray, n: int, k: int) -> None:
    assert folds.shape == (n,) and set(folds.tolist()) == set(range(k))  # each image one fold
    sizes = np.bincount(folds, minlength=k)
    assert sizes.sum() == n and sizes.min() >= 1


def test_plain_folds_partition_the_images_the_same_way_for_the_same_seed():
    folds = assign_folds(10, 3, seed=0)
    _check_partition(folds, 10, 3)
    assert sorted(np.bincount(folds).tolist()) == [3, 3, 4]  # sizes differ by at most one
    assert np.array_equal(folds, assign_folds(10, 3, seed=0))
    assert not np.array_equal(folds, assign_folds(10, 3, seed=1))


def test_stratified_folds_spread_a_rare_class_over_as_many_folds_as_it_can():
    rng = np.random.default_rng(0)
    n, k = 30, 3
    presence = np.zeros((n, 4), bool)
    presence[:, 0] = True  # background everywhere
    presence[:, 1] = rng.random(n) < 0.5
    presence[[4, 5, 6], 2] = True  # a rare class in 3 images: one per fold
    presence[[7, 8], 3] = True  # rarer: 2 images, 2 folds
    for seed in range(10):  # a plain shuffle would often put two of them in one fold
        folds = assign_folds(n, k, seed, presence)
        _check_partition(folds, n, k)
        assert len(set(folds[[4, 5, 6]])) == 3 and len(set(folds[[7, 8]])) == 2
        assert np.bincount(folds).max() - np.bincount(folds).min() <= 2
        assert np.array_equal(folds, assign_folds(n, k, seed, presence))


def test_too_many_folds_is_a_config_error():
    with pytest.raises(Exception, match="data.fold.k: 4 folds of 3 training images"):
        assign_folds(3, 4, 0)


def _rare_class_folder(root, n=12) -> None:
    """images + masks; class 2 only in scene_00..02; scene_99 is the validation split."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    stems = [f"scene_{i:02d}" for i in range(n)] + ["scene_99"]
    for i, stem in enumerate(stems):
        Image.fromarray(np.full((16, 16, 3), 20 * (i % 12), np.uint8)).save(
            root / "images" / f"{stem}.png"
        )
        mask = np.zeros((16, 16), np.uint8)
        mask[:8] = 1
        mask[0, 0] = 255
        if i < 3 or stem == "scene_99":
            mask[10:, 10:] = 2
        Image.fromarray(mask, mode="L").save(root / "masks" / f"{stem}.png")
    (root / "train.txt").write_text("\n".join(stems[:-1]))
    (root / "val.txt").write_text("scene_99")


def test_folder_folds_train_on_the_rest_and_evaluate_on_the_held_out_fold(tmp_path):
    _rare_class_folder(tmp_path)
    kwargs = dict(root=str(tmp_path), classes=["background", "road", "person"],
                  train_list="train.txt", val_list="val.txt", num_workers=0)  # fmt: skip
    seen: list[str] = []
    for index in range(3):
        dm = FolderDataModule(**kwargs, fold={"k": 3, "index": index, "seed": 0})
        dm.setup("fit")
        dm.setup("test")
        train, val, test = (dm.datasets[s] for s in ("train", "val", "test"))
        names = lambda d: {p[0].stem for p in d.pairs}  # noqa: E731
        assert names(val) == names(test) and not names(val) & names(train)
        assert names(val) | names(train) == {f"scene_{i:02d}" for i in range(12)}
        assert train.transform is dm.pipelines["train"] and val.transform is dm.pipelines["eval"]
        assert len({"scene_00", "scene_01", "scene_02"} & names(val)) == 1  # stratified
        assert val[0]["mask"].shape == (16, 16)
        seen += sorted(names(val))
    assert sorted(seen) == [f"scene_{i:02d}" for i in range(12)]  # each image held out once
    presence = class_presence(dm.datasets["train"].dataset, 3)
    assert presence[:3, 2].all() and not presence[3:, 2].any()


def test_synthetic_folds_and_the_dataset_test_split(tmp_path):
    sizes = dict(image_size=32, train_size=8, val_size=4, test_size=5, num_workers=0)
    dm = SyntheticDataModule(**sizes, fold={"k": 3, "index": 2, "seed": 1, "test": "split"})
    dm.setup("fit")
    dm.setup("test")
    assert len(dm.datasets["train"]) + len(dm.datasets["val"]) == 8
    assert len(dm.datasets["test"]) == 5  # the dataset's own test split
    held_out = dm.datasets["val"].indices
    same = SyntheticDataModule(**sizes, fold={"k": 3, "index": 2, "seed": 1})
    same.setup("fit")
    assert same.datasets["val"].indices == held_out  # same seed, same folds


# --- seglight cv -------------------------------------------------------------------------------

CV = ["--config", QUICKSTART, *TINY, "--trainer.max_epochs=1", "--trainer.num_sanity_val_steps=0"]


@pytest.mark.parametrize(
    "only", [[0, 2], pytest.param(None, marks=pytest.mark.slow)], ids=["folds0and2", "all"]
)  # fast: 2 of the 3 folds (each fold is a fit + a test); `make test-all`: all three
def test_cv_reports_mean_and_std_over_folds_and_ensembles_the_fold_models(only, in_tmp, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["cv", "--folds", "3", *(["--only", *map(str, only)] if only else []),
              "--ensemble", *CV])  # fmt: skip
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    content = json.loads((in_tmp / "outputs/quickstart/cv_summary.json").read_text())
    runs, summary = content["runs"], content["summary"]
    folds = only or [0, 1, 2]
    assert [r["fold"] for r in runs] == folds and content["folds"] == 3
    for name in ("test/mIoU", "test/pixel_acc", "test/IoU/circle", "test/acc/square"):
        values = np.array([r[name] for r in runs])
        values = values[~np.isnan(values)]
        mean, std = float(np.mean(values)), float(np.std(values, ddof=1))
        assert summary[name]["mean"] == pytest.approx(mean)
        assert summary[name]["std"] == pytest.approx(std) and summary[name]["n"] == len(values)
    s = summary["test/mIoU"]
    assert f"test/mIoU: {s['mean']:.4f} ± {s['std']:.4f} (n={len(folds)})" in out
    assert "test/IoU/circle:" in out and "mean ± std over folds" in out
    assert all("test/pixels/background" not in r for r in runs)  # counts are not metrics
    for f, run in zip(folds, runs, strict=True):
        assert run["checkpoint"].endswith(f"checkpoints/fold_{f}/best.ckpt")
    assert "test/mIoU" in content["ensemble"] and "ensemble of the fold models" in out
    # An ensemble of one model is that model: the log of its softmax as logits.
    best = runs[0]["checkpoint"]
    one = SegmentationModule.load_from_checkpoint(best).eval()
    ensemble = Ensemble([best], num_classes=5, class_names=one.class_names).eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = one(images).softmax(1)
        assert torch.allclose(ensemble(images).softmax(1), expected, atol=1e-5)


def test_cv_needs_two_folds(in_tmp, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["cv", "--folds", "1", *CV])
    assert exit_.value.code != 0
    assert "--folds: cross-validation needs at least 2 folds, got 1" in one_error_line(capsys)


def test_ensemble_refuses_a_model_of_another_task(in_tmp, capsys, tmp_path):
    model = SegmentationModule(num_classes=3, model_kwargs={"decoder_channels": [8] * 5})
    path = tmp_path / "three.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
                "pytorch-lightning_version": "2.4.0"}, path)  # fmt: skip
    with pytest.raises(Exception, match="3 output channels; this ensemble is multiclass with 5"):
        Ensemble([str(path)], num_classes=5)
