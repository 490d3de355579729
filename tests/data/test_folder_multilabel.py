"""FolderDataModule with data.task: multilabel: both mask layouts (a folder per label, one
multi-channel .tif / .npy per image) read exactly, every bad input one line, label_check catching
a label that is never positive, and fit / test / audit through the real CLI."""

import json
import shutil

import numpy as np
import pytest
import tifffile
from PIL import Image

from seglight.cli import main
from seglight.data.folder import FolderDataModule
from seglight.data.synthetic import SyntheticDataModule

from seglight_testing import ROOT, one_error_line
from seglight_testing.datasets import make_multilabel_folder

LABELS = ["a", "b", "c"]
FOLDER = str(ROOT / "configs" / "folder.yaml")
TINY = [
    "--config", FOLDER, "--data.root=data", "--data.task=multilabel", "--data.classes=[a, b, c]",
    "--data.crop_size=null", "--data.batch_size=2", "--data.num_workers=0",
    "--data.val_fraction=0.34", "--model.encoder_name=resnet18", "--model.encoder_weights=null",
    "--model.model_kwargs={decoder_channels: [16, 16, 8, 8, 8]}", "--model.lr_scheduler=null",
    "--trainer.precision=32-true", "--trainer.accelerator=cpu", "--trainer.devices=1",
    "--trainer.max_epochs=1", "--trainer.default_root_dir=out",
    "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
]  # fmt: skip


def module(root, **kwargs) -> FolderDataModule:
    return FolderDataModule(root=str(root), classes=LABELS, task="multilabel", num_workers=0,
                            **kwargs)  # fmt: skip


def read_all(data: FolderDataModule) -> dict[str, np.ndarray]:
    """stem -> (H, W, L) mask of every image, through the datasets training reads."""
    found = {}
    for split in ("train", "val"):
        dataset = data.prepared_dataset(split, data.pipelines["eval"])
        for i in range(len(dataset)):
            sample = dataset.load(i)
            found[sample.name] = sample.mask
            assert dataset[i]["mask"].shape == (len(LABELS), *sample.mask.shape[:2])
    return found


@pytest.mark.parametrize(
    "options",
    [
        {"layout": "folders"},
        {"layout": "folders", "ext": ".tif"},
        {"layout": "folders", "ext": ".bmp", "zero_255": True},
        {"layout": "stack", "ext": ".tif"},
        {"layout": "stack", "ext": ".tiff", "channels_first": True},
        {"layout": "stack", "ext": ".npy"},
        {"layout": "stack", "ext": ".npy", "channels_first": True, "zero_255": True},
    ],
)
def test_both_layouts_read_exactly_what_was_written(tmp_path, options):
    expected = make_multilabel_folder(tmp_path, **options)
    mask_map = {0: 0, 255: 1} if options.get("zero_255") else None
    found = read_all(module(tmp_path, mask_map=mask_map))
    assert sorted(found) == sorted(expected)
    for stem, mask in expected.items():
        np.testing.assert_array_equal(found[stem], mask)
        assert found[stem].dtype == np.uint8


def test_bool_and_integer_valued_arrays_and_an_ambiguous_axis(tmp_path):
    make_multilabel_folder(tmp_path, layout="stack", ext=".npy", n=2)
    masks = tmp_path / "masks"
    truth = np.load(masks / "img_00.npy")
    np.save(masks / "img_00.npy", truth == 1)  # bool: 1 -> True; the ignored corner -> 0
    np.save(masks / "img_01.npy", np.load(masks / "img_01.npy").astype(np.float32))
    found = read_all(module(tmp_path, val_fraction=0.5))
    np.testing.assert_array_equal(found["img_00"], (truth == 1).astype(np.uint8))
    # (3, 8, 3) fits (H, W, L) of a 3 x 8 image and (L, H, W) of an 8 x 3 one: the image decides
    # (a 3 x 3 image, either: channels-last).
    for h, w in ((8, 3), (3, 8), (3, 3)):
        root = tmp_path / f"{h}x{w}"
        (root / "images").mkdir(parents=True)
        (root / "masks").mkdir()
        mask = np.random.default_rng(h).integers(0, 2, (h, w, 3), dtype=np.uint8)
        for stem in ("p", "q"):
            Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(root / "images" / f"{stem}.png")
            np.save(root / "masks" / f"{stem}.npy", np.moveaxis(mask, -1, 0) if h == 8 else mask)
        data = module(root, val_fraction=0.5, label_check="off")
        assert all((m == mask).all() for m in read_all(data).values())


def fit_error(capsys, *args) -> str:
    with pytest.raises(SystemExit):
        main(["fit", *TINY, *args])
    return one_error_line(capsys)


def test_folder_layout_mistakes_are_one_line(in_tmp, capsys):
    make_multilabel_folder(in_tmp / "data")
    masks = in_tmp / "data" / "masks"
    (masks / "b").rename(masks / "bb")
    line = fit_error(capsys)
    assert "masks/bb: a mask sub-folder that is not a label" in line and "mean 'b'" in line
    shutil.rmtree(masks / "bb")
    assert "masks/b: label folder not found" in fit_error(capsys)
    shutil.copytree(masks / "a", masks / "b")
    (masks / "b" / "img_03.png").unlink()
    (masks / "c" / "img_04.png").unlink()
    line = fit_error(capsys)
    assert "2 label masks missing" in line and "masks/b/img_03.png" in line
    assert "every label folder" in line
    shutil.copy(masks / "a" / "img_03.png", masks / "b")
    shutil.copy(masks / "a" / "img_04.png", masks / "c")
    np.save(masks / "img_00.npy", np.zeros((32, 32, 3), np.uint8))
    assert "masks: holds both sub-folders" in fit_error(capsys)
    (masks / "img_00.npy").unlink()
    bad = np.array(Image.open(masks / "c" / "img_02.png"))
    bad[5, 5] = 7
    Image.fromarray(bad).save(masks / "c" / "img_02.png")
    line = fit_error(capsys)
    assert "masks/c/img_02.png: mask has values [7]" in line
    Image.fromarray(bad[:16]).save(masks / "c" / "img_02.png")  # 32 x 16 for a 32 x 32 image
    line = fit_error(capsys, "--data.label_check=off")
    assert "sizes differ" in line and "masks/c/img_02.png is 32x16" in line


def test_stack_layout_mistakes_are_one_line(in_tmp, capsys):
    make_multilabel_folder(in_tmp / "data", layout="stack", ext=".npy")
    masks = in_tmp / "data" / "masks"
    (masks / "img_01.npy").unlink()
    line = fit_error(capsys)
    assert "1 images have no mask" in line and "img_01.png" in line
    np.save(masks / "img_01.npy", np.zeros((32, 32, 2), np.uint8))
    assert "img_01.npy: multi-channel mask of shape (32, 32, 2)" in fit_error(capsys)
    np.save(masks / "img_01.npy", np.full((32, 32, 3), 0.5, np.float32))
    assert "img_01.npy: mask values [0.5]" in fit_error(capsys)
    np.save(masks / "img_01.npy", np.zeros((3, 16, 32), np.uint8))  # (L, H, W): 16 rows
    line = fit_error(capsys, "--data.label_check=off")
    assert "sizes differ" in line and "masks/img_01.npy is 32x16" in line
    np.save(masks / "img_01.npy", np.zeros((3, 32, 32), np.uint8))
    (masks / "extra.npy").write_bytes((masks / "img_01.npy").read_bytes())
    assert "1 masks have no image" in fit_error(capsys)
    (masks / "extra.npy").unlink()
    tifffile.imwrite(masks / "img_01.tif", np.zeros((32, 32, 3), np.uint8))
    assert "two masks named 'img_01'" in fit_error(capsys)
    (masks / "img_01.tif").unlink()
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(masks / "img_01.png")
    line = fit_error(capsys)
    assert "1 single-channel files" in line and "data.task: multiclass" in line
    (masks / "img_01.png").unlink()
    line = fit_error(capsys, "--data.mask_format=rgb", "--data.colors=[[0,0,0],[1,1,1],[2,2,2]]")
    assert "data.mask_format: rgb" in line


def test_label_check_catches_a_label_never_positive(in_tmp, capsys):
    make_multilabel_folder(in_tmp / "zero_255", zero_255=True)  # 255 read as unlabelled
    line = fit_error(capsys, "--data.root=zero_255")
    assert "no positive pixel of label(s) a: only 0 and 255, b: only 0 and 255" in line
    assert "set data.mask_map: {0: 0, 255: 1}" in line
    make_multilabel_folder(in_tmp / "data")
    for path in (in_tmp / "data" / "masks" / "c").iterdir():  # label c: never labelled
        Image.fromarray(np.full((32, 32), 255, np.uint8)).save(path)
    line = fit_error(capsys)
    assert "the 4 train masks: no positive pixel of label(s) c: all 255 (unlabelled)" in line
    assert "data.label_check: warn trains anyway" in line
    module(in_tmp / "data").check_labels(["val"])  # an evaluation split: a warning
    module(in_tmp / "data", label_check="warn").check_labels(["train"])
    err = capsys.readouterr().err
    assert err.count("seglight: warning: data: the") == 2 and "c: all 255" in err


def test_fit_test_and_audit_through_the_cli(in_tmp, capsys):
    expected = make_multilabel_folder(in_tmp / "data", layout="stack", ext=".tif")
    main(["fit", *TINY])
    c = main(["test", *TINY, "--ckpt_path=out/checkpoints/last.ckpt"])
    metrics = c.model.last_metrics["test"]
    assert c.model.task == "multilabel" and metrics["IoU"].shape == (3,)  # one IoU per label
    with pytest.raises(SystemExit) as exit_:
        main(["audit", *TINY, "--split=train", "--output=audit.json"])
    assert exit_.value.code == 0, capsys.readouterr()
    report = json.loads((in_tmp / "audit.json").read_text())
    data = module(in_tmp / "data", val_fraction=0.34)
    stems = data.split_stems("train", sorted(expected))
    masks = np.stack([expected[stem] for stem in stems])  # (N, H, W, L)
    assert report["task"] == "multilabel" and report["class_weights"] is None
    assert [r["pixels"] for r in report["classes"]] == (masks == 1).sum(axis=(0, 1, 2)).tolist()
    assert [r["images"] for r in report["classes"]] == [len(stems)] * 3
    assert report["ignored_pixels"] == int((masks == 255).sum())
    assert "no suggestion for multilabel" in capsys.readouterr().out


def test_audit_reports_an_all_ignored_label_and_a_bad_file(in_tmp, capsys):
    make_multilabel_folder(in_tmp / "data")
    masks = in_tmp / "data" / "masks"
    for path in (masks / "b").iterdir():
        Image.fromarray(np.full((32, 32), 255, np.uint8)).save(path)
    data = module(in_tmp / "data", val_fraction=0.34)
    train = data.split_stems("train", sorted(data.find_pairs()))
    bad = masks / "a" / f"{train[0]}.png"
    Image.fromarray(np.full((32, 32), 9, np.uint8)).save(bad)
    with pytest.raises(SystemExit) as exit_:
        main(["audit", *TINY])
    assert exit_.value.code == 1
    report = json.loads((in_tmp / "audit_train.json").read_text())
    assert report["num_in_statistics"] == len(train) - 1
    problems = {p["kind"]: p["detail"] for p in report["problems"]}
    assert f"masks/a/{train[0]}.png: mask has values [9]" in problems["bad_labels"]
    assert str(bad).endswith(next(p["file"] for p in report["problems"] if p["file"]))
    assert "b: all 255 (unlabelled)" in problems["absent_class"]
    assert report["classes"][1]["pixels"] == 0 and report["absent_classes"] == ["b"]


def test_audit_of_the_synthetic_multilabel_data(in_tmp, capsys):
    recipe = str(ROOT / "configs" / "multilabel.yaml")
    with pytest.raises(SystemExit) as exit_:
        main(["audit", "--config", recipe, "--data.train_size=3", "--data.image_size=32"])
    assert exit_.value.code == 0, capsys.readouterr()
    report = json.loads((in_tmp / "audit_train.json").read_text())
    data = SyntheticDataModule(task="multilabel", train_size=3, image_size=32)
    dataset = data.prepared_dataset("train", data.pipelines["eval"])
    masks = np.stack([dataset.load(i).mask for i in range(3)])  # (3, H, W, 4)
    assert report["task"] == "multilabel"
    assert [r["pixels"] for r in report["classes"]] == (masks == 1).sum(axis=(0, 1, 2)).tolist()
    assert report["ignored_pixels"] == int((masks == 255).sum())
