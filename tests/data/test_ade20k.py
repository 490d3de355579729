"""ADE20KDataModule on a tiny ADEChallengeData2016 tree: 0 -> ignore, k -> k - 1, errors that
name the file."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from seglight.data.ade20k import ADE20KDataModule
from seglight.errors import DataError

from seglight_testing.datasets import make_ade

H, W = 32, 48


def write_annotation(base: Path, split: str, name: str, values: np.ndarray) -> Path:
    path = base / "annotations" / split / f"{name}.png"
    Image.fromarray(values.astype(np.uint8), mode="L").save(path)
    return path


def test_zero_is_ignored_and_k_becomes_k_minus_one(tmp_path):
    base = make_ade(tmp_path, splits=("validation",))
    stored = np.zeros((H, W), np.uint8)
    stored[:8], stored[8:16], stored[16:24], stored[24:] = 0, 1, 75, 150
    write_annotation(base, "validation", "ADE_val_00000001", stored)
    dm = ADE20KDataModule(root=str(tmp_path), num_workers=0)
    dm.setup("validate")
    mask = dm.datasets["val"].load(0).mask
    assert (mask[:8] == 255).all() and (mask[8:16] == 0).all()
    assert (mask[16:24] == 74).all() and (mask[24:] == 149).all()


def test_every_stored_value_decodes(tmp_path):
    make_ade(tmp_path)
    dm = ADE20KDataModule(root=str(tmp_path), num_workers=0)
    dm.setup("fit")
    for split in ("train", "val"):
        ds = dm.datasets[split]
        assert len(ds) == 3 and [p for p, _ in ds.pairs] == sorted(p for p, _ in ds.pairs)
        for i, (_, label) in enumerate(ds.pairs):
            raw = np.asarray(Image.open(label))
            want = np.where(raw == 0, 255, raw.astype(int) - 1)
            np.testing.assert_array_equal(ds.load(i).mask, want)
    item = dm.datasets["val"][0]  # eval pipeline: original size
    assert item["image"].shape == (3, H, W) and item["mask"].shape == (H, W)


@pytest.mark.parametrize("inside", [False, True], ids=["parent", "ADEChallengeData2016"])
@pytest.mark.parametrize("names", [("training", "validation"), ("train", "val")])
def test_root_and_split_names(tmp_path, inside, names):
    base = make_ade(tmp_path, n=2)
    root = base if inside else tmp_path
    dm = ADE20KDataModule(root=str(root), train_split=names[0], val_split=names[1], num_workers=0)
    dm.setup("fit")
    assert dm.datasets["train"].pairs[0][0] == base / "images/training/ADE_train_00000001.jpg"
    assert dm.datasets["val"].pairs[1][1] == base / "annotations/validation/ADE_val_00000002.png"


def test_classes_palette_and_native_ids():
    dm = ADE20KDataModule(root="does/not/exist/yet")  # no data needed to build it
    assert dm.num_classes == 150 and len(dm.palette) == 150 and dm.ignore_index == 255
    assert dm.class_names[:5] == ["wall", "building", "sky", "floor", "tree"]
    assert dm.class_names[7] == "bed" and dm.class_names[-1] == "flag"
    assert len(set(dm.class_names)) == 150
    assert dm.palette[0] == [120, 120, 120] and dm.palette[-1] == [92, 0, 255]
    assert dm.native_ids == [k + 1 for k in range(150)]


def test_values_above_150_are_errors(tmp_path):
    base = make_ade(tmp_path, splits=("validation",))
    stored = np.full((H, W), 3, np.uint8)
    stored[5, 5] = 151
    path = write_annotation(base, "validation", "ADE_val_00000002", stored)
    dm = ADE20KDataModule(root=str(tmp_path), num_workers=0)
    dm.setup("validate")
    with pytest.raises(DataError, match=r"ADE_val_00000002\.png.*\[151\]") as info:
        dm.datasets["val"].load(1)
    assert str(path) in str(info.value)


def test_missing_root_says_layout_and_download(tmp_path):
    dm = ADE20KDataModule(root=str(tmp_path / "nowhere"), num_workers=0)
    with pytest.raises(DataError) as info:
        dm.setup("fit")
    message = str(info.value)
    assert "nowhere" in message and "ADEChallengeData2016/images/" in message
    assert "http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip" in message


def test_root_without_the_dataset_folder(tmp_path):
    (tmp_path / "something_else").mkdir()
    dm = ADE20KDataModule(root=str(tmp_path), num_workers=0)
    with pytest.raises(DataError, match="no ADEChallengeData2016/ folder"):
        dm.setup("fit")


def test_missing_split_and_empty_split(tmp_path):
    base = make_ade(tmp_path, splits=("training",))
    dm = ADE20KDataModule(root=str(tmp_path), num_workers=0)
    with pytest.raises(DataError, match=r"images/validation.*found: training"):
        dm.setup("fit")
    (base / "images" / "validation").mkdir()
    with pytest.raises(DataError, match=r"images/validation.*no images"):
        ADE20KDataModule(root=str(tmp_path), num_workers=0).setup("fit")


def test_missing_annotation_names_image_and_expected_file(tmp_path):
    base = make_ade(tmp_path)
    missing = base / "annotations" / "training" / "ADE_train_00000002.png"
    missing.unlink()
    dm = ADE20KDataModule(root=str(tmp_path), num_workers=0)
    with pytest.raises(DataError) as info:
        dm.setup("fit")
    assert "ADE_train_00000002.jpg" in str(info.value) and str(missing) in str(info.value)


def test_image_and_annotation_sizes_must_agree(tmp_path):
    base = make_ade(tmp_path, splits=("validation",))
    write_annotation(base, "validation", "ADE_val_00000001", np.ones((H + 2, W), np.uint8))
    dm = ADE20KDataModule(root=str(tmp_path), num_workers=0)
    dm.setup("validate")
    with pytest.raises(DataError) as info:
        dm.datasets["val"].load(0)
    assert "ADE_val_00000001.jpg" in str(info.value)
    assert "ADE_val_00000001.png" in str(info.value)


def test_predict_needs_no_annotations(tmp_path):
    base = make_ade(tmp_path, splits=("validation",))
    for p in (base / "annotations").rglob("*.png"):
        p.unlink()
    dm = ADE20KDataModule(root=str(tmp_path), num_workers=0)
    dm.setup("predict")
    ds = dm.datasets["predict"]
    assert len(ds) == 3 and all(label is None for _, label in ds.pairs)
    assert ds[0]["name"] == "ADE_val_00000001"


def test_batches_have_the_crop_size(tmp_path):
    make_ade(tmp_path, n=4)
    dm = ADE20KDataModule(root=str(tmp_path), crop_size=(32, 32), batch_size=2, num_workers=0)
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert len(batches) == 2
    for batch in batches:
        assert batch["image"].shape == (2, 3, 32, 32) and batch["mask"].shape == (2, 32, 32)
        assert batch["mask"].dtype == torch.int64
        valid = batch["mask"][batch["mask"] != 255]
        assert valid.numel() > 0 and valid.max() <= 149
