"""The built-in dataset: deterministic, in range, and shaped like a real segmentation split."""

import numpy as np
import pytest
import torch

from seglight.data.synthetic import BAND_LEVELS, CLASS_NAMES, SyntheticDataModule
from seglight.errors import ConfigError


def dataset(split="train", **kwargs):
    dm = SyntheticDataModule(num_workers=0, image_size=kwargs.pop("image_size", 48), **kwargs)
    return dm.build_dataset(split, dm.pipelines["eval"])


def test_same_seed_same_data_in_any_order():
    a, b = dataset(seed=3), dataset(seed=3)
    first = [a.load(i) for i in range(4)]
    reverse = [b.load(i) for i in reversed(range(4))][::-1]
    for x, y in zip(first, reverse, strict=True):
        np.testing.assert_array_equal(x.image, y.image)
        np.testing.assert_array_equal(x.mask, y.mask)


def test_seed_split_and_index_all_change_the_image():
    base = dataset(seed=0).load(0).image
    assert not np.array_equal(base, dataset(seed=1).load(0).image)
    assert not np.array_equal(base, dataset("val", seed=0).load(0).image)
    assert not np.array_equal(base, dataset(seed=0).load(1).image)


def test_labels_in_range_with_ignore_borders_and_every_class_present():
    ds = dataset(train_size=64)
    masks = np.stack([ds.load(i).mask for i in range(64)])
    values = set(np.unique(masks).tolist())
    assert values == set(range(len(CLASS_NAMES))) | {255}
    ignored = (masks == 255).mean()
    assert 0.02 < ignored < 0.3  # a thin band on object borders, not whole objects
    assert 0.3 < (masks == 0).mean() < 0.9  # background dominates but objects are substantial


def test_no_ignore_band_when_disabled():
    ds = dataset(border_ignore=0)
    assert not (ds.load(0).mask == 255).any()


def test_getitem_follows_the_batch_convention():
    ds = dataset(image_size=40)
    item = ds[0]
    assert item["image"].shape == (3, 40, 40) and item["image"].dtype == torch.float32
    assert item["mask"].shape == (40, 40) and item["mask"].dtype == torch.int64
    assert item["size"].tolist() == [40, 40] and item["name"] == "train_00000"
    assert abs(float(item["image"].mean())) < 2  # normalized, not 0..255


def test_split_sizes_are_configurable():
    dm = SyntheticDataModule(num_workers=0, train_size=5, val_size=3, test_size=2, predict_size=1)
    dm.setup("fit")
    dm.setup("test")
    dm.setup("predict")
    assert [len(dm.datasets[s]) for s in ("train", "val", "test", "predict")] == [5, 3, 2, 1]
    with pytest.raises(IndexError):
        dm.datasets["val"].load(3)


def test_workers_give_the_same_batches_as_the_main_process():
    def batches(workers):
        dm = SyntheticDataModule(num_workers=workers, image_size=32, val_size=8, batch_size=4)
        dm.setup("validate")
        return [b["image"] for b in dm.val_dataloader()]

    for x, y in zip(batches(0), batches(2), strict=True):
        torch.testing.assert_close(x, y)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="image_size"):
        SyntheticDataModule(image_size=4)
    with pytest.raises(ValueError, match="min_objects"):
        SyntheticDataModule(min_objects=3, max_objects=2)


def test_extra_bands_carry_the_class_and_colour_does_not():
    """extra_bands: float images of 3 + k channels; inside objects each extra band sits at its
    class's level (+ noise), so the bands tell the class, while hues are drawn at random."""
    dm = SyntheticDataModule(extra_bands=2, image_size=48, mean=[0.5] * 5, std=[0.3] * 5,
                             num_workers=0)  # fmt: skip
    assert dm.in_channels == 5
    dataset = dm.build_dataset("train", dm.pipelines["eval"])
    per_class = {c: [] for c in range(1, len(CLASS_NAMES))}
    for i in range(24):
        sample = dataset.load(i)
        assert sample.image.shape == (48, 48, 5) and sample.image.dtype == np.float32
        assert 0.0 <= sample.image.min() and sample.image.max() <= 1.0
        for c in per_class:
            per_class[c].extend(sample.image[sample.mask == c, 3].tolist())
    for c, values in per_class.items():
        assert abs(np.median(values) - BAND_LEVELS[c]) < 0.03, c  # band 3: the class's level
    # bands keeps and orders channels; the model's in_channels follows
    rgb = SyntheticDataModule(extra_bands=2, bands=[0, 1, 2], num_workers=0)
    assert rgb.in_channels == 3
    assert rgb.build_dataset("train", rgb.pipelines["eval"]).load(0).image.shape[2] == 3


def test_extra_bands_need_one_mean_and_std_per_channel():
    with pytest.raises(ConfigError, match=r"data.mean / data.std: 3 values for 5 channels"):
        SyntheticDataModule(extra_bands=2)
    with pytest.raises(ConfigError, match=r"data.bands: indices in \[0, 4\)"):
        SyntheticDataModule(extra_bands=1, bands=[4])
