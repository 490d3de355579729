"""Your own folder: index or colour-coded masks, classes from config or file, splits, bad pairs."""

import json

import numpy as np
import pytest
from PIL import Image

from seglight.data.folder import FolderDataModule
from seglight.errors import ConfigError, DataError

from seglight_testing.datasets import COLORS, NAMES, make_folder


def module(root, **kwargs) -> FolderDataModule:
    return FolderDataModule(root=str(root), num_workers=0, **{"classes": NAMES, **kwargs})


def all_samples(dm, split):
    ds = dm.build_dataset(split, dm.pipelines["eval"])
    return {s.name: s for s in (ds.load(i) for i in range(len(ds)))}


def test_index_masks_read_exactly_and_split_covers_everything(tmp_path):
    expected = make_folder(tmp_path)
    dm = module(tmp_path, val_fraction=0.3)
    train, val = all_samples(dm, "train"), all_samples(dm, "val")
    assert len(val) == 3 and len(train) == 7 and not set(train) & set(val)
    for name, sample in {**train, **val}.items():
        np.testing.assert_array_equal(sample.mask, expected[name])
    assert dm.num_classes == 3 and dm.class_names == NAMES


def test_random_split_is_seeded(tmp_path):
    make_folder(tmp_path)
    first = set(all_samples(module(tmp_path, split_seed=1), "val"))
    assert first == set(all_samples(module(tmp_path, split_seed=1), "val"))
    assert first != set(all_samples(module(tmp_path, split_seed=2), "val"))


def test_rgb_masks_map_through_the_palette(tmp_path):
    expected = make_folder(tmp_path, rgb=True)
    dm = module(tmp_path, mask_format="rgb", colors=COLORS, ignore_color=[255, 255, 255])
    for name, sample in all_samples(dm, "train").items():
        np.testing.assert_array_equal(sample.mask, expected[name])


def test_unknown_colour_is_named(tmp_path):
    make_folder(tmp_path, n=2, rgb=True)
    dm = module(tmp_path, mask_format="rgb", colors=COLORS)  # white (ignore) not declared
    with pytest.raises(
        DataError, match=r"masks/scene_0\d.png: mask has colours \[\[255, 255, 255\]\]"
    ):
        all_samples(dm, "train")


def test_classes_from_yaml_and_json_files(tmp_path):
    make_folder(tmp_path, n=3)
    (tmp_path / "classes.yaml").write_text(
        "".join(f"- {{name: {n}, color: {c}}}\n" for n, c in zip(NAMES, COLORS, strict=True))
    )
    dm = FolderDataModule(root=str(tmp_path), classes_file="classes.yaml", num_workers=0)
    assert dm.class_names == NAMES and dm.palette == COLORS
    (tmp_path / "classes.json").write_text(json.dumps(NAMES))
    dm = FolderDataModule(root=str(tmp_path), classes_file="classes.json", num_workers=0)
    assert dm.class_names == NAMES and dm.palette is None


def test_split_list_files(tmp_path):
    make_folder(tmp_path, n=4)
    (tmp_path / "train.txt").write_text("scene_00\nscene_01\nscene_02\n")
    (tmp_path / "val.txt").write_text("scene_03\n")
    dm = module(tmp_path, train_list="train.txt", val_list="val.txt")
    assert sorted(all_samples(dm, "train")) == ["scene_00", "scene_01", "scene_02"]
    assert list(all_samples(dm, "test")) == ["scene_03"]  # test falls back to val
    (tmp_path / "val.txt").write_text("scene_99\n")
    with pytest.raises(DataError, match="scene_99"):
        all_samples(dm, "val")


def test_unpaired_files_are_named(tmp_path):
    make_folder(tmp_path, n=3)
    (tmp_path / "masks" / "scene_01.png").unlink()
    with pytest.raises(DataError, match=r"no partner.*scene_01"):
        all_samples(module(tmp_path), "train")


def test_label_value_outside_classes_is_named(tmp_path):
    make_folder(tmp_path, n=2)
    Image.fromarray(np.full((24, 32), 3, np.uint8), mode="L").save(tmp_path / "masks/scene_00.png")
    with pytest.raises(DataError, match=r"scene_00.png: mask has values \[3\]"):
        all_samples(module(tmp_path, val_fraction=0.5), "val") | all_samples(
            module(tmp_path, val_fraction=0.5), "train"
        )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"classes": None}, "either data.classes or data.classes_file"),
        ({"classes": ["a"]}, "2 or more distinct"),
        ({"mask_format": "rgb"}, "need a colour per class"),
        ({"colors": [[0, 0, 0]]}, "1 colours for 3 classes"),
        ({"val_fraction": 1.5}, "val_fraction"),
    ],
)
def test_bad_class_config(tmp_path, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        module(tmp_path, **kwargs)


def test_missing_folder_says_the_layout(tmp_path):
    with pytest.raises(DataError, match=r"images not found.*images/<name>.jpg"):
        all_samples(module(tmp_path), "train")
