"""PASCAL VOC: palette PNG indices read exactly, SBD-augmented training set, bad data refused."""

import numpy as np
import pytest
from PIL import Image

from seglight.data.voc import VOC_CLASSES, VOCDataModule, voc_palette
from seglight.errors import DataError

from seglight_testing.datasets import IDS, make_voc, palette_png


def dataset(root, split="train", **kwargs):
    dm = VOCDataModule(root=str(root), num_workers=0, **kwargs)
    return dm.build_dataset(split, dm.pipelines["eval"])


def test_palette_indices_are_the_labels(tmp_path):
    masks = make_voc(tmp_path)
    train = dataset(tmp_path)
    assert len(train) == 2
    for i, image_id in enumerate(IDS[:2]):
        sample = train.load(i)
        assert sample.name == image_id and sample.image.shape == (30, 40, 3)
        np.testing.assert_array_equal(sample.mask, masks[image_id])  # not colours, not remapped
    np.testing.assert_array_equal(dataset(tmp_path, "val").load(0).mask, masks[IDS[2]])


def test_classes_and_palette():
    assert len(VOC_CLASSES) == 21 and VOC_CLASSES[15] == "person"
    palette = voc_palette()
    assert palette[1] == [128, 0, 0] and palette[15] == [192, 128, 128]
    assert palette[255] == [224, 224, 192]  # the devkit's border colour


def test_root_may_point_inside_the_devkit(tmp_path):
    make_voc(tmp_path)
    assert len(dataset(tmp_path / "VOCdevkit")) == 2
    assert len(dataset(tmp_path / "VOCdevkit" / "VOC2012")) == 2


def test_sbd_augmented_training_set(tmp_path):
    make_voc(tmp_path)
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    aug = voc / "SegmentationClassAug"
    aug.mkdir()
    extra = np.full((30, 40), 7, np.uint8)
    extra[0, 0] = 255
    for image_id in IDS:  # SBD masks are grey index PNGs
        Image.fromarray(extra, mode="L").save(aug / f"{image_id}.png")
    # DeepLab's list format: image and mask paths per line.
    (voc / "ImageSets/Segmentation/train_aug.txt").write_text(
        "".join(f"/JPEGImages/{i}.jpg /SegmentationClassAug/{i}.png\n" for i in IDS)
    )
    train = dataset(tmp_path, augmented=True)
    assert len(train) == 3
    np.testing.assert_array_equal(train.load(2).mask, extra)
    assert (dataset(tmp_path, "val", augmented=True).load(0).mask != 7).any()  # official masks


def test_augmented_without_sbd_files_says_what_is_missing(tmp_path):
    make_voc(tmp_path)
    with pytest.raises(DataError, match="SegmentationClassAug.*train_aug.txt"):
        dataset(tmp_path, augmented=True)


def test_missing_root_gives_layout_and_download(tmp_path):
    with pytest.raises(DataError, match=r"VOCdevkit/VOC2012.*JPEGImages.*Download: VOC 2012: http"):
        dataset(tmp_path / "nowhere")


def test_listed_file_missing_is_named(tmp_path):
    make_voc(tmp_path)
    (tmp_path / "VOCdevkit/VOC2012/SegmentationClass/2007_000039.png").unlink()
    with pytest.raises(DataError, match="2007_000039.png"):
        dataset(tmp_path)


def test_rgb_mask_is_refused(tmp_path):
    masks = make_voc(tmp_path)
    path = tmp_path / "VOCdevkit/VOC2012/SegmentationClass/2007_000032.png"
    Image.open(path).convert("RGB").save(path)
    assert masks
    with pytest.raises(DataError, match="2007_000032.png: mask has mode 'RGB'.*converted"):
        dataset(tmp_path).load(0)


def test_label_out_of_range_is_named(tmp_path):
    make_voc(tmp_path)
    bad = np.zeros((30, 40), np.uint8)
    bad[3, 3] = 21
    palette_png(tmp_path / "VOCdevkit/VOC2012/SegmentationClass/2007_000039.png", bad)
    with pytest.raises(DataError, match=r"2007_000039.png: mask has values \[21\]"):
        dataset(tmp_path).load(1)


def test_size_mismatch_names_both_files(tmp_path):
    make_voc(tmp_path)
    palette_png(
        tmp_path / "VOCdevkit/VOC2012/SegmentationClass/2007_000032.png",
        np.zeros((31, 40), np.uint8),
    )
    with pytest.raises(DataError, match=r"2007_000032.jpg is 40x30.*2007_000032.png is 40x31"):
        dataset(tmp_path).load(0)


def test_truncated_image_is_named(tmp_path):
    make_voc(tmp_path)
    path = tmp_path / "VOCdevkit/VOC2012/JPEGImages/2007_000032.jpg"
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(DataError, match="2007_000032.jpg: cannot decode image"):
        dataset(tmp_path).load(0)


def test_training_batches_are_cropped_with_ignore_padding(tmp_path):
    make_voc(tmp_path)
    dm = VOCDataModule(root=str(tmp_path), crop_size=(48, 48), batch_size=2, num_workers=0)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 3, 48, 48) and batch["mask"].shape == (2, 48, 48)
    assert set(batch["mask"].unique().tolist()) <= {0, 1, 15, 20, 255}
    val = next(iter(dm.val_dataloader()))
    assert val["image"].shape == (1, 3, 30, 40)  # evaluation at the original resolution
