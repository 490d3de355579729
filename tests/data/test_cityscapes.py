"""CityscapesDataModule on a tiny tree in the official layout: labelIds decoded to the official
training ids, labelTrainIds preferred, errors that name the file."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from seglight.data.cityscapes import CityscapesDataModule
from seglight.errors import DataError

from seglight_testing.datasets import H, W, make_cityscapes

# cityscapesScripts helpers/labels.py, written out by hand: labelId -> trainId for ids 0..33
# (license plate, id -1, is never stored in a mask).
OFFICIAL_TRAIN_ID = {
    0: 255,  # unlabeled
    1: 255,  # ego vehicle
    2: 255,  # rectification border
    3: 255,  # out of roi
    4: 255,  # static
    5: 255,  # dynamic
    6: 255,  # ground
    7: 0,  # road
    8: 1,  # sidewalk
    9: 255,  # parking
    10: 255,  # rail track
    11: 2,  # building
    12: 3,  # wall
    13: 4,  # fence
    14: 255,  # guard rail
    15: 255,  # bridge
    16: 255,  # tunnel
    17: 5,  # pole
    18: 255,  # polegroup
    19: 6,  # traffic light
    20: 7,  # traffic sign
    21: 8,  # vegetation
    22: 9,  # terrain
    23: 10,  # sky
    24: 11,  # person
    25: 12,  # rider
    26: 13,  # car
    27: 14,  # truck
    28: 15,  # bus
    29: 255,  # caravan
    30: 255,  # trailer
    31: 16,  # train
    32: 17,  # motorcycle
    33: 18,  # bicycle
}


def expected(label_ids: np.ndarray) -> np.ndarray:
    out = np.empty_like(label_ids)
    for label_id, train_id in OFFICIAL_TRAIN_ID.items():
        out[label_ids == label_id] = train_id
    return out


def label_ids_file(root: Path, split: str, city: str, k: int) -> Path:
    return root / "gtFine" / split / city / f"{city}_{k:06d}_{19 + k:06d}_gtFine_labelIds.png"


def test_label_ids_become_the_official_train_ids(tmp_path):
    stored = make_cityscapes(tmp_path)
    dm = CityscapesDataModule(root=str(tmp_path), num_workers=0)
    dm.setup("fit")
    for split in ("train", "val"):
        ds = dm.datasets[split]
        assert len(ds) == 4
        images = [p for p, _ in ds.pairs]
        assert images == sorted(images)  # deterministic order
        for i, (image, label) in enumerate(ds.pairs):
            assert label.name == image.name.replace("_leftImg8bit", "_gtFine_labelIds")
            sample = ds.load(i)
            assert sample.mask.dtype == np.uint8 and sample.image.shape == (H, W, 3)
            np.testing.assert_array_equal(sample.mask, expected(stored[label]))
    # __getitem__ through the eval pipeline (full resolution, no augmentation): the same ids.
    val = dm.datasets["val"]
    want = torch.from_numpy(expected(stored[val.pairs[0][1]])).long()
    assert torch.equal(val[0]["mask"], want)


def test_every_parking_pixel_is_ignored_and_road_is_zero(tmp_path):
    make_cityscapes(tmp_path, splits=("val",))
    path = label_ids_file(tmp_path, "val", "aachen", 0)
    ids = np.zeros((H, W), np.uint8)
    ids[:8], ids[8:16], ids[16:24], ids[24:] = 9, 7, 4, 33  # parking, road, static, bicycle
    Image.fromarray(ids, mode="L").save(path)
    dm = CityscapesDataModule(root=str(tmp_path), num_workers=0)
    dm.setup("validate")
    mask = dm.datasets["val"].load(0).mask
    assert (mask[:8] == 255).all() and (mask[8:16] == 0).all()
    assert (mask[16:24] == 255).all() and (mask[24:] == 18).all()


def test_label_train_ids_files_are_preferred(tmp_path):
    stored = make_cityscapes(tmp_path, train_ids=True)
    dm = CityscapesDataModule(root=str(tmp_path), num_workers=0)
    dm.setup("fit")
    ds = dm.datasets["train"]
    for i, (_, label) in enumerate(ds.pairs):
        assert label.name.endswith("_gtFine_labelTrainIds.png")
        np.testing.assert_array_equal(ds.load(i).mask, stored[label])


def test_label_ids_are_used_unless_every_image_has_train_ids(tmp_path):
    stored = make_cityscapes(tmp_path, splits=("val",), train_ids=True)
    some = label_ids_file(tmp_path, "val", "bochum", 1)
    Path(str(some).replace("_labelIds", "_labelTrainIds")).unlink()
    dm = CityscapesDataModule(root=str(tmp_path), num_workers=0)
    dm.setup("validate")
    ds = dm.datasets["val"]
    for i, (_, label) in enumerate(ds.pairs):
        assert label.name.endswith("_gtFine_labelIds.png")
        np.testing.assert_array_equal(ds.load(i).mask, expected(stored[label]))


def test_train_ids_files_with_label_ids_values_are_errors(tmp_path):
    make_cityscapes(tmp_path, splits=("val",), train_ids=True)
    bad = tmp_path / "gtFine/val/aachen/aachen_000000_000019_gtFine_labelTrainIds.png"
    Image.fromarray(np.full((H, W), 26, np.uint8), mode="L").save(bad)  # a labelId, not 0..18
    dm = CityscapesDataModule(root=str(tmp_path), num_workers=0)
    dm.setup("validate")
    with pytest.raises(DataError, match="aachen_000000_000019_gtFine_labelTrainIds.png"):
        dm.datasets["val"].load(0)


def test_classes_palette_and_native_ids():
    dm = CityscapesDataModule(root="does/not/exist/yet")  # no data needed to build it
    assert dm.num_classes == 19 and dm.ignore_index == 255
    assert dm.class_names[:3] == ["road", "sidewalk", "building"]
    assert dm.class_names[-3:] == ["train", "motorcycle", "bicycle"]
    assert len(dm.palette) == 19
    assert dm.palette[0] == [128, 64, 128] and dm.palette[18] == [119, 11, 32]
    assert len(dm.native_ids) == 19
    train_to_label = {t: i for i, t in OFFICIAL_TRAIN_ID.items() if t != 255}
    for train_id in range(19):
        assert dm.native_ids[train_id] == train_to_label[train_id]
        assert OFFICIAL_TRAIN_ID[dm.native_ids[train_id]] == train_id


def test_values_outside_the_table_are_errors(tmp_path):
    make_cityscapes(tmp_path, splits=("val",))
    path = label_ids_file(tmp_path, "val", "aachen", 1)
    ids = np.full((H, W), 7, np.uint8)
    ids[0, 0] = 40
    Image.fromarray(ids, mode="L").save(path)
    dm = CityscapesDataModule(root=str(tmp_path), num_workers=0)
    dm.setup("validate")
    with pytest.raises(DataError, match=r"aachen_000001_000020_gtFine_labelIds\.png.*\[40\]"):
        dm.datasets["val"].load(1)


def test_missing_root_says_layout_and_download(tmp_path):
    dm = CityscapesDataModule(root=str(tmp_path / "nowhere"), num_workers=0)
    with pytest.raises(DataError) as info:
        dm.setup("fit")
    message = str(info.value)
    assert "nowhere" in message and "leftImg8bit/<split>/<city>" in message
    assert "gtFine_labelIds.png" in message
    assert "https://www.cityscapes-dataset.com/downloads/" in message
    assert "leftImg8bit_trainvaltest.zip" in message and "gtFine_trainvaltest.zip" in message


def test_missing_split_folder_lists_the_splits_there(tmp_path):
    make_cityscapes(tmp_path, splits=("train",))
    dm = CityscapesDataModule(root=str(tmp_path), num_workers=0)
    with pytest.raises(DataError, match=r"leftImg8bit/val.*found: train"):
        dm.setup("fit")


def test_split_without_images_is_an_error(tmp_path):
    make_cityscapes(tmp_path, splits=("train",))
    (tmp_path / "leftImg8bit" / "val" / "aachen").mkdir(parents=True)
    dm = CityscapesDataModule(root=str(tmp_path), num_workers=0)
    with pytest.raises(DataError, match=r"leftImg8bit/val.*no images"):
        dm.setup("fit")


def test_missing_label_file_names_image_and_expected_label(tmp_path):
    make_cityscapes(tmp_path, splits=("train", "val"))
    missing = label_ids_file(tmp_path, "train", "bochum", 0)
    missing.unlink()
    dm = CityscapesDataModule(root=str(tmp_path), num_workers=0)
    with pytest.raises(DataError) as info:
        dm.setup("fit")
    assert "bochum_000000_000019_leftImg8bit.png" in str(info.value)
    assert str(missing) in str(info.value)


def test_image_and_label_sizes_must_agree(tmp_path):
    make_cityscapes(tmp_path, splits=("val",))
    path = label_ids_file(tmp_path, "val", "aachen", 0)
    Image.fromarray(np.full((H, W // 2), 7, np.uint8), mode="L").save(path)
    dm = CityscapesDataModule(root=str(tmp_path), num_workers=0)
    dm.setup("validate")
    with pytest.raises(DataError) as info:
        dm.datasets["val"].load(0)
    assert "aachen_000000_000019_leftImg8bit.png" in str(info.value)
    assert "aachen_000000_000019_gtFine_labelIds.png" in str(info.value)


def test_predict_needs_no_labels(tmp_path):
    make_cityscapes(tmp_path, splits=("test",))
    for p in (tmp_path / "gtFine").rglob("*.png"):
        p.unlink()
    dm = CityscapesDataModule(root=str(tmp_path), predict_split="test", num_workers=0)
    dm.setup("predict")
    ds = dm.datasets["predict"]
    assert len(ds) == 4 and all(label is None for _, label in ds.pairs)
    item = ds[0]
    assert item["name"] == "aachen_000000_000019_leftImg8bit" and (item["mask"] == 255).all()


def test_batches_have_the_crop_size_in_training_and_full_size_in_validation(tmp_path):
    make_cityscapes(tmp_path)
    dm = CityscapesDataModule(root=str(tmp_path), crop_size=(32, 32), batch_size=2, num_workers=0)
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert len(batches) == 2  # 4 images, batch 2, drop_last
    for batch in batches:
        assert batch["image"].shape == (2, 3, 32, 32) and batch["image"].dtype == torch.float32
        assert batch["mask"].shape == (2, 32, 32) and batch["mask"].dtype == torch.int64
        valid = batch["mask"][batch["mask"] != 255]
        assert valid.numel() > 0 and valid.min() >= 0 and valid.max() <= 18
    val = next(iter(dm.val_dataloader()))
    assert val["image"].shape == (2, 3, H, W) and val["mask"].shape == (2, H, W)
