"""`seglight audit`: statistics checked against hand counts, planted problems found by file and
kind, median-frequency weights, the JSON report, exit codes, and the CLI end to end."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seglight.cli import main
from seglight.cli.audit import audit_dataset, format_report, median_frequency_weights, run_audit
from seglight.data.synthetic import CLASS_NAMES, SyntheticDataModule

from seglight_testing.audit_example import TinyFolders

H, W = 6, 8  # size of most test images


def write_image(path: Path, h: int = H, w: int = W) -> Path:
    rng = np.random.default_rng(len(path.name))
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def write_mask(path: Path, mask: np.ndarray) -> Path:
    Image.fromarray(mask.astype(np.uint8), mode="L").save(path)
    return path


def clean_tree(root: Path) -> dict[str, np.ndarray]:
    """Three good pairs; returns their masks (stored values = training ids)."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    m0 = np.zeros((H, W), np.uint8)  # 30 x class 0, 12 x class 1, 6 x ignore
    m0.flat[30:42] = 1
    m0.flat[42:] = 255
    m1 = np.zeros((H, W), np.uint8)  # 24 x class 0, 24 x class 2
    m1.flat[24:] = 2
    m2 = np.ones((4, 4), np.uint8)  # 16 x class 1, a 4x4 image
    masks = {"good0": m0, "good1": m1, "good2": m2}
    for name, mask in masks.items():
        write_image(root / "images" / f"{name}.png", *mask.shape)
        write_mask(root / "masks" / f"{name}.png", mask)
    return masks


def plant_problems(root: Path) -> dict[str, tuple[Path, str]]:
    """One pair per kind of problem: name -> (the file to blame, kind)."""
    images, masks = root / "images", root / "masks"
    ok_mask = np.zeros((H, W), np.uint8)
    # A truncated JPEG (its mask is fine).
    jpeg = images / "truncated.jpg"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(jpeg, quality=95)
    jpeg.write_bytes(jpeg.read_bytes()[: jpeg.stat().st_size // 2])
    write_mask(masks / "truncated.png", np.zeros((64, 64)))
    # A zero-byte mask.
    write_image(images / "empty_mask.png")
    (masks / "empty_mask.png").write_bytes(b"")
    # A mask with the value 7 (3 pixels): not a label of a 3-class dataset.
    write_image(images / "value7.png")
    bad = ok_mask.copy()
    bad.flat[:3] = 7
    write_mask(masks / "value7.png", bad)
    # Image 6x8, mask 5x8.
    write_image(images / "mismatch.png")
    write_mask(masks / "mismatch.png", np.zeros((H - 1, W)))
    # A colour mask where an index mask is expected.
    write_image(images / "rgb.png")
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(masks / "rgb.png")
    # An image without its mask.
    write_image(images / "no_mask.png")
    return {
        "truncated": (jpeg, "unreadable"),
        "empty_mask": (masks / "empty_mask.png", "unreadable"),
        "value7": (masks / "value7.png", "bad_labels"),
        "mismatch": (masks / "mismatch.png", "size_mismatch"),
        "rgb": (masks / "rgb.png", "bad_labels"),
        "no_mask": (masks / "no_mask.png", "missing"),
    }


def dataset(root: Path, split="train"):
    data = TinyFolders(root=str(root), num_workers=0)
    return data.build_dataset(split, data.pipelines["eval"])


def check_clean_statistics(report: dict) -> None:
    """Against the hand counts of clean_tree (problem files are left out of the statistics)."""
    rows = report["classes"]
    assert [r["name"] for r in rows] == ["a", "b", "c"]
    assert [r["pixels"] for r in rows] == [30 + 24, 12 + 16, 24]
    assert [r["images"] for r in rows] == [2, 2, 1]
    assert report["ignored_pixels"] == 6 and report["mask_pixels"] == 48 + 48 + 16
    assert report["ignored_fraction"] == pytest.approx(6 / 112)
    assert [r["pixel_fraction"] for r in rows] == pytest.approx([54 / 106, 28 / 106, 24 / 106])
    # freq_c = pixels of c / non-ignored pixels of the images containing c.
    freq = [54 / (42 + 48), 28 / (42 + 16), 24 / 48]
    median = sorted(freq)[1]
    assert [r["frequency"] for r in rows] == pytest.approx(freq)
    assert [r["weight"] for r in rows] == pytest.approx([median / f for f in freq])
    assert report["class_weights"] == pytest.approx([median / f for f in freq], abs=1e-6)


def test_clean_tree_statistics_and_exit_0(tmp_path, capsys):
    clean_tree(tmp_path / "data")
    report = audit_dataset(dataset(tmp_path / "data"), ["a", "b", "c"], 255, "train")
    check_clean_statistics(report)
    assert report["num_images"] == report["num_labelled"] == report["num_in_statistics"] == 3
    assert report["problems"] == [] and report["absent_classes"] == []
    sizes = report["image_sizes"]
    assert sizes["height"] == {"min": 4, "max": 6, "median": 6}
    assert sizes["width"] == {"min": 4, "max": 8, "median": 8}
    assert sizes["most_common"] == [
        {"height": 6, "width": 8, "count": 2},
        {"height": 4, "width": 4, "count": 1},
    ]
    out = tmp_path / "clean.json"
    data = tmp_path / "data"
    args = [
        "--data=seglight_testing.audit_example.TinyFolders",
        f"--data.root={data}",
        f"--output={out}",
    ]
    assert run_audit(args) == 0
    assert json.loads(out.read_text())["classes"] == report["classes"]
    printed = capsys.readouterr().out
    assert "no problems found" in printed and str(out) in printed


def test_planted_problems_are_reported_by_file_and_kind(tmp_path):
    root = tmp_path / "data"
    clean_tree(root)
    planted = plant_problems(root)
    report = audit_dataset(dataset(root), ["a", "b", "c"], 255, "train")
    found = {(p["file"], p["kind"]) for p in report["problems"]}
    assert found == {(str(path), kind) for path, kind in planted.values()}
    assert report["num_problems"] == len(planted)
    for p in report["problems"]:
        assert Path(p["file"]).name in p["detail"] or p["kind"] == "size_mismatch"
    assert report["unexpected_values"] == {"7": {"pixels": 3, "files": 1}}
    (value7,) = [p for p in report["problems"] if p["file"].endswith("value7.png")]
    assert "7 (3 px)" in value7["detail"]
    (mismatch,) = [p for p in report["problems"] if p["kind"] == "size_mismatch"]
    assert "mismatch.png is 8x6" in mismatch["detail"] and "8x5" in mismatch["detail"]
    # Statistics count the clean pairs only; every readable image counts in the sizes.
    check_clean_statistics(report)
    assert report["num_images"] == 9 and report["num_labelled"] == 9
    assert report["num_in_statistics"] == 3
    assert report["image_sizes"]["most_common"][0] == {"height": H, "width": W, "count": 7}
    # The table lists every problem; the same report comes from threads.
    table = format_report(report)
    assert "problems: 6" in table and all(str(path) in table for path, _ in planted.values())
    assert audit_dataset(dataset(root), ["a", "b", "c"], 255, "train", workers=3) == report


def test_absent_class_is_a_problem_and_gets_no_weight(tmp_path):
    root = tmp_path / "data"
    clean_tree(root)
    (root / "images" / "good1.png").unlink()  # the only image with class c
    report = audit_dataset(dataset(root), ["a", "b", "c"], 255, "train")
    assert report["classes"][2]["images"] == 0 and report["classes"][2]["weight"] is None
    assert report["absent_classes"] == ["c"]
    (problem,) = report["problems"]
    assert problem["kind"] == "absent_class" and problem["file"] is None
    assert problem["detail"].startswith("split train: no pixel of class(es) c in any mask")
    assert report["class_weights"] is None  # never a 0 (or inf) to paste into the loss
    freq = [30 / 42, 28 / 58]  # median of two: their mean
    weights = [r["weight"] for r in report["classes"][:2]]
    assert weights == pytest.approx([np.mean(freq) / f for f in freq])
    table = format_report(report)
    assert "no suggestion while classes have no pixel (c)" in table
    assert "absent_class  split train: no pixel of class(es) c" in table
    # A partial scan (--max_images) may miss a class that the rest holds: a warning.
    report = audit_dataset(dataset(root), ["a", "b", "c"], 255, "train", max_images=1)
    assert report["problems"] == [] and "first 1 of 2 images" in report["warnings"][0]


def test_median_frequency_weights_edge_cases():
    assert np.isnan(median_frequency_weights([0, 0], [0, 0])).all()
    weights = median_frequency_weights([5, 0], [10, 0])
    assert weights[0] == 1.0 and np.isnan(weights[1])


def test_unlabelled_split_has_no_label_statistics(tmp_path):
    clean_tree(tmp_path / "data")
    report = audit_dataset(dataset(tmp_path / "data", "predict"), ["a", "b", "c"], 255, "predict")
    assert report["num_images"] == 3 and report["num_labelled"] == 0
    assert report["problems"] == [] and report["absent_classes"] == ["a", "b", "c"]
    assert "no masks" in report["warnings"][0]


def test_max_images_scans_the_first_n(tmp_path):
    root = tmp_path / "data"
    clean_tree(root)
    plant_problems(root)  # in name order: empty_mask.png, good0.png, ...
    report = audit_dataset(dataset(root), ["a", "b", "c"], 255, max_images=2)
    assert report["num_images"] == 2 and report["total_images"] == 9
    assert [p["kind"] for p in report["problems"]] == ["unreadable"]
    assert "first 2 of 9 images" in format_report(report)


FIT_STYLE_CONFIG = """\
seed_everything: 0
trainer:
  max_epochs: 1
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{dirpath: ckpts}}
model:
  class_path: seglight.SegmentationModule
  init_args: {{arch: Unet, encoder_name: resnet18, encoder_weights: null}}
data:
  class_path: seglight_testing.audit_example.TinyFolders
  init_args:
    root: {root}
    batch_size: 2
ckpt_path: null
"""


def test_cli_end_to_end_with_a_fit_config(in_tmp, capsys):
    root = in_tmp / "data"
    clean_tree(root)
    planted = plant_problems(root)
    config = in_tmp / "fit.yaml"
    config.write_text(FIT_STYLE_CONFIG.format(root=root))
    with pytest.raises(SystemExit) as exit_:
        # fit's flags for the model and trainer are accepted and ignored.
        main(["audit", "--config", str(config), "--trainer.max_epochs=3", "--model.lr", "3"])
    assert exit_.value.code == 1
    printed = capsys.readouterr().out
    assert "problems: 6" in printed and " c " in printed
    report = json.loads((in_tmp / "audit_train.json").read_text())  # default output
    assert (
        report["data_module"] == "seglight_testing.audit_example.TinyFolders"
        and report["split"] == "train"
    )
    assert {p["file"] for p in report["problems"]} == {str(p) for p, _ in planted.values()}
    check_clean_statistics(report)


def test_cli_errors_are_one_line_and_exit_2(in_tmp, capsys):
    for args, expected in (
        (
            ["--data=seglight_testing.audit_example.TinyFolders", "--data.root=nowhere"],
            "nowhere/images",
        ),
        (["--data.train_sise=4"], "did you mean 'train_size'"),
        (["--split=tain"], "invalid choice"),
        (["--max_images=0"], "max_images"),
    ):
        with pytest.raises(SystemExit) as exit_:
            main(["audit", *args])
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("seglight: error: ") and expected in err.splitlines()[0]


def test_help(in_tmp, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["audit", "--help"])
    assert exit_.value.code == 0
    assert "--split" in capsys.readouterr().out


def test_synthetic_data(in_tmp, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["audit", "--data.train_size=4", "--data.image_size=32"])
    assert exit_.value.code == 0
    report = json.loads((in_tmp / "audit_train.json").read_text())
    assert report["num_problems"] == 0 and report["num_images"] == 4
    assert [r["name"] for r in report["classes"]] == CLASS_NAMES
    # Against the dataset's own masks.
    data = SyntheticDataModule(train_size=4, image_size=32)
    ds = data.build_dataset("train", data.pipelines["eval"])
    counts = sum(np.bincount(ds.load(i).mask.ravel(), minlength=256) for i in range(4))
    assert [r["pixels"] for r in report["classes"]] == counts[:5].tolist()
    assert report["ignored_pixels"] == counts[255]
    assert report["image_sizes"]["most_common"] == [{"height": 32, "width": 32, "count": 4}]


def test_fit_flags_of_every_kind_are_parsed_and_ignored():
    from seglight.cli.audit import build_parser

    flags = "--trainer.max_epochs=3 --trainer.callbacks+=X --model.optimizer.lr 3e-4 --optimizer=X"
    flags += " --model=seglight.SegmentationModule --model.init_args.arch=FPN --seed_everything=7"
    flags += " --ckpt_path=last --weights_only=false --rng_state=null"
    cfg = build_parser().parse_args([*flags.split(), "--data.batch_size=3"])
    assert cfg.data.init_args.batch_size == 3  # the data flags are used, the rest set nothing
    assert cfg.trainer["max_epochs"] == "3" and cfg.model["arch"] == "FPN"
    assert cfg.seed_everything == 7 and cfg.ckpt_path == "last" and cfg.optimizer == "X"
