"""Masks as people store them: 0/255 binary masks (never a silent class loss), `mask_map`,
1-bit PNGs, `<name>_mask.png` naming in one folder or two, colour masks where indices were
expected, classes absent from a split. Real PNG/JPEG files, the real CLI in-process."""

import json

import numpy as np
import pytest
from PIL import Image

from seglight.cli import main
from seglight.data.folder import FolderDataModule
from seglight.errors import ConfigError, DataError

from seglight_testing import QUICKSTART, one_error_line
from seglight_testing.datasets import make_binary

BINARY = ["background", "foreground"]
# The quickstart config (its callbacks, logging, optimizer) on a binary folder of 32 px images.
FOLDER = [
    "--config", QUICKSTART,
    "--data=seglight.data.FolderDataModule", "--data.root=data",
    f"--data.classes=[{', '.join(BINARY)}]",
    "--data.batch_size=4", "--data.num_workers=0", "--data.val_fraction=0.25",
    "--model.model_kwargs={decoder_channels: [16, 16, 8, 8, 8]}",
    "--model.lr_scheduler=null", "--model.optimizer.init_args.lr=0.003",
    "--trainer.accelerator=cpu", "--trainer.devices=1",
    "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
    "--trainer.log_every_n_steps=1",
]  # fmt: skip
MAP = "--data.mask_map={0: 0, 255: 1}"


def module(root, **kwargs) -> FolderDataModule:
    return FolderDataModule(root=str(root), num_workers=0, **{"classes": BINARY, **kwargs})


def masks_of(dm, split="train") -> dict[str, np.ndarray]:
    ds = dm.build_dataset(split, dm.pipelines["eval"])
    return {s.name: s.mask for s in (ds.load(i) for i in range(len(ds)))}


# --- 0/255 masks: found by audit and fit; learned with mask_map ---------------------------------


def test_zero_255_masks_audit_reports_the_fix_and_exits_1(in_tmp, capsys):
    make_binary(in_tmp / "data", n=6)
    with pytest.raises(SystemExit) as exit_:
        main(["audit", *FOLDER])
    assert exit_.value.code == 1
    printed = capsys.readouterr().out
    assert "no problems found" not in printed
    assert "all masks hold only 0 and 255; 255 is data.ignore_index" in printed
    assert "If 255 marks foreground, set data.mask_map: {0: 0, 255: 1}" in printed
    report = json.loads((in_tmp / "audit_train.json").read_text())
    assert [p["kind"] for p in report["problems"]] == ["only_ignore"]
    assert report["class_weights"] is None  # not [1, 0]
    assert [r["weight"] for r in report["classes"]] == [1.0, None]
    assert "[1, 0]" not in printed and "no suggestion" in printed
    # With the mapping: no problem, and weights for both classes, none of them 0 or inf.
    with pytest.raises(SystemExit) as exit_:
        main(["audit", *FOLDER, MAP])
    assert exit_.value.code == 0
    weights = json.loads((in_tmp / "audit_train.json").read_text())["class_weights"]
    assert len(weights) == 2 and all(0 < w < float("inf") for w in weights)


def test_zero_255_masks_stop_fit_with_one_line(in_tmp, capsys):
    make_binary(in_tmp / "data", n=6)
    with pytest.raises(SystemExit) as exit_:
        main(["fit", *FOLDER, "--trainer.fast_dev_run=true"])
    assert exit_.value.code == 2
    line = one_error_line(capsys)
    assert line.startswith("seglight: error: data: the 4 train masks: all masks hold only 0 and")
    assert line.endswith("If 255 marks foreground, set data.mask_map: {0: 0, 255: 1}")


def test_mask_map_flag_learns_the_foreground(in_tmp):
    """48 images (36 train, 12 val = test): a bright square on a dark background, 0/255 masks.
    4 epochs of a shallow Unet learn it (foreground IoU 0.82-0.97 over seeds 0-3); the test
    split's foreground IoU says the 255s were learned as class 1, not ignored."""
    make_binary(in_tmp / "data", n=48)
    shallow = "--model.model_kwargs={encoder_depth: 2, decoder_channels: [16, 8]}"
    main(["fit", *FOLDER, MAP, shallow, "--trainer.max_epochs=4"])
    main(["test", *FOLDER, MAP, shallow, "--ckpt_path=outputs/quickstart/checkpoints/last.ckpt"])
    (path,) = in_tmp.glob("outputs/quickstart/logs/version_*/test_report.json")
    report = json.loads(path.read_text())
    iou = {row["name"]: row["IoU"] for row in report["classes"]}
    pixels = {row["name"]: row["pixels"] for row in report["classes"]}
    assert pixels["foreground"] > 0  # the 255s are counted, as class 1
    assert iou["foreground"] > 0.5, report


def test_zero_255_masks_warn_at_test_time(tmp_path, capsys):
    """Evaluating with the mapping forgotten would score background only: a warning."""
    make_binary(tmp_path, n=4)
    module(tmp_path).setup("test")
    err = capsys.readouterr().err
    assert err.startswith("seglight: warning: data: the 1 test masks: all masks hold only 0 and")
    module(tmp_path, mask_map={0: 0, 255: 1}).setup("test")
    assert capsys.readouterr().err == ""


# --- mask_map ------------------------------------------------------------------------------------


def test_mask_map_values_and_ignore(tmp_path):
    make_binary(tmp_path, n=2)
    mask = np.zeros((32, 32), np.uint8)
    mask[:4] = 128  # "unsure": mapped to ignore
    mask[4:8] = 255
    Image.fromarray(mask, mode="L").save(tmp_path / "masks/img_00.png")
    dm = module(tmp_path, mask_map={0: 0, 128: 255, 255: 1}, val_fraction=0.5)
    got = {**masks_of(dm, "train"), **masks_of(dm, "val")}["img_00"]
    np.testing.assert_array_equal(got[:4], 255)
    np.testing.assert_array_equal(got[4:8], 1)
    np.testing.assert_array_equal(got[8:], 0)
    # A stored value the map does not name is an error, as without a map.
    dm = module(tmp_path, mask_map={0: 0, 255: 1}, val_fraction=0.5)
    with pytest.raises(DataError, match=r"img_00.png: mask has values \[128\].*values 0, 255"):
        masks_of(dm, "train") | masks_of(dm, "val")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mask_map": {0: 0, 255: 2}}, r"data.mask_map: 255 -> 2 is not a class index \(0-1\)"),
        ({"mask_map": {300: 1}}, r"data.mask_map: key 300 is not a stored 8-bit"),
        ({"mask_map": {}}, "data.mask_map: empty"),
        (
            {"mask_map": {0: 0}, "mask_format": "rgb", "colors": [[0, 0, 0], [255, 255, 255]]},
            "data.mask_map: applies to index masks",
        ),
        ({"mask_dir": "images"}, "data.mask_suffix: images and masks share the folder"),
    ],
)
def test_bad_mask_options(tmp_path, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        module(tmp_path, **kwargs)


def test_bad_mask_map_from_the_command_line_is_one_line(in_tmp, capsys):
    make_binary(in_tmp / "data", n=4)
    with pytest.raises(SystemExit) as exit_:
        main(["fit", *FOLDER, "--data.mask_map={0: 0, 255: 7}"])
    assert exit_.value.code == 2
    assert "data.mask_map: 255 -> 7 is not a class index (0-1)" in one_error_line(capsys)


# --- file formats and names ----------------------------------------------------------------------


def test_one_bit_masks_are_0_and_1(tmp_path):
    make_binary(tmp_path, n=4, one_bit=True)
    assert Image.open(tmp_path / "masks/img_00.png").mode == "1"
    dm = module(tmp_path, val_fraction=0.5)
    got = masks_of(dm, "train")
    assert len(got) == 2
    for name, mask in got.items():
        stored = np.asarray(Image.open(tmp_path / f"masks/{name}.png"))  # bool
        np.testing.assert_array_equal(mask, stored.astype(np.uint8))
        assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1}
    dm.setup("fit")  # both classes present: the label check passes


@pytest.mark.parametrize("same_dir", [False, True], ids=["two-folders", "one-folder"])
def test_masks_named_with_a_suffix(tmp_path, same_dir):
    make_binary(tmp_path, n=4, suffix="_mask", same_dir=same_dir)
    mask_dir = "images" if same_dir else "masks"
    dm = module(tmp_path, mask_suffix="_mask", mask_dir=mask_dir, mask_map={0: 0, 255: 1})
    pairs = dm.find_pairs()
    assert sorted(pairs) == [f"img_{i:02d}" for i in range(4)]  # masks are not images
    for stem, (image, mask) in pairs.items():
        assert image.name == f"{stem}.jpg" and mask == tmp_path / mask_dir / f"{stem}_mask.png"
    masks = masks_of(dm, "train") | masks_of(dm, "val")
    assert sorted(masks) == sorted(pairs) and all(
        set(np.unique(m)) == {0, 1} for m in masks.values()
    )


def test_unpaired_files_hint_at_the_mask_suffix(tmp_path):
    make_binary(tmp_path, n=3, suffix="_mask")
    with pytest.raises(DataError, match=r"6 files have no partner.*set data.mask_suffix: _mask$"):
        module(tmp_path).find_pairs()
    make_binary(tmp_path / "plain", n=3)
    with pytest.raises(DataError, match=r"images' names: remove data.mask_suffix \('_gt'\)$"):
        module(tmp_path / "plain", mask_suffix="_gt").find_pairs()


def test_colour_mask_error_names_mask_format_rgb(tmp_path):
    make_binary(tmp_path, n=2)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "masks/img_01.png")
    dm = module(tmp_path, val_fraction=0.5)
    with pytest.raises(DataError, match=r"img_01.png: mask has mode 'RGB'.*data.mask_format: rgb"):
        masks_of(dm, "train") | masks_of(dm, "val")
    with pytest.raises(DataError, match=r"and data.colors \(one \[R, G, B\] per class\)"):
        masks_of(dm, "train") | masks_of(dm, "val")


# --- classes absent from a split -----------------------------------------------------------------


def three_class_folder(root, n=8, classes_in_val=(0, 1, 2)) -> None:
    """Grey 0/1/2 masks; class 2 ("person") in the first image only."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        Image.fromarray(np.full((16, 16, 3), 20 * i, np.uint8)).save(root / f"images/s{i}.png")
        mask = np.zeros((16, 16), np.uint8)
        mask[8:] = 1
        if i == 0:
            mask[:2] = 2
        Image.fromarray(mask, mode="L").save(root / f"masks/s{i}.png")
    (root / "train.txt").write_text("".join(f"s{i}\n" for i in range(1, n - 2)))
    (root / "val.txt").write_text("s0\ns7\n")


def test_class_absent_from_training_masks(tmp_path, capsys):
    three_class_folder(tmp_path)
    kwargs = {"classes": ["background", "road", "person"], "train_list": "train.txt",
              "val_list": "val.txt"}  # fmt: skip
    with pytest.raises(DataError) as error:
        module(tmp_path, **kwargs).setup("fit")
    message = str(error.value)
    assert message.startswith("data: the 5 train masks: no pixel of class(es) person in any mask")
    assert "(stored values: 0-1)" in message and "data.label_check: warn" in message
    module(tmp_path, **kwargs, label_check="warn").setup("fit")
    assert "seglight: warning: data: the 5 train masks: no pixel of class(es) person" in (
        capsys.readouterr().err
    )
    module(tmp_path, **kwargs, label_check="off").setup("fit")
    assert capsys.readouterr().err == ""
    # Present in training but not in validation (a small split): a warning, not an error.
    (tmp_path / "train.txt").write_text("s0\ns1\ns2\n")
    (tmp_path / "val.txt").write_text("s3\ns4\n")
    module(tmp_path, **kwargs).setup("fit")
    err = capsys.readouterr().err
    assert err.startswith("seglight: warning: data: the 2 val masks: no pixel of class(es) person")


def test_class_absent_from_audited_split_is_a_problem(in_tmp, capsys):
    three_class_folder(in_tmp / "data")
    args = ["audit", "--data=seglight.data.FolderDataModule", "--data.root=data",
            "--data.classes=[background, road, person]", "--data.train_list=train.txt",
            "--data.val_list=val.txt"]  # fmt: skip
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 1
    printed = capsys.readouterr().out
    assert "absent_class  split train: no pixel of class(es) person in any mask" in printed
    report = json.loads((in_tmp / "audit_train.json").read_text())
    assert report["class_weights"] is None and report["classes"][2]["weight"] is None
    assert all(r["weight"] not in (0, float("inf")) for r in report["classes"])
    with pytest.raises(SystemExit) as exit_:
        main([*args, "--split=val"])
    assert exit_.value.code == 0  # s0 holds the person
