"""`seglight audit`: statistics checked against hand counts, planted problems found by file and
kind, median-frequency weights, the JSON report, exit codes, and the CLI end to end."""

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from seglight.cli import main
from seglight.cli.audit import audit_dataset, format_report, median_frequency_weights, run_audit
from seglight.data.folder import FolderDataModule
from seglight.data.synthetic import CLASS_NAMES, SyntheticDataModule
from seglight.data.transforms import IMAGENET_MEAN, IMAGENET_STD

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


# --- per-channel mean / std (issue 12) ------------------------------------------------------


def rgb_tree(root: Path) -> list[np.ndarray]:
    """Three RGB PNGs of different sizes with 0/1 masks; returns the arrays written."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(12)
    arrays = []
    for i, (h, w) in enumerate([(6, 8), (5, 7), (9, 4)]):
        array = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(array).save(root / "images" / f"im{i}.png")
        write_mask(root / "masks" / f"im{i}.png", rng.integers(0, 3, (h, w)))
        arrays.append(array)
    return arrays


def numpy_stats(arrays, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean / std over all pixels of (H, W, C) arrays, independently of seglight."""
    values = np.concatenate([a.reshape(-1, a.shape[2]) for a in arrays]).astype(np.float64)
    values /= scale
    return values.mean(0), values.std(0)


def printed_list(printed: str, key: str) -> list[float]:
    (line,) = [line for line in printed.splitlines() if line.strip().startswith(f"{key}: [")]
    return json.loads(line.split(": ", 1)[1])  # "[0.5, 0.25]": JSON (and YAML) alike


def test_rgb_channel_mean_std_match_numpy(tmp_path, capsys):
    root = tmp_path / "data"
    arrays = rgb_tree(root)
    mean, std = numpy_stats(arrays, 255.0)
    report = audit_dataset(dataset(root), ["a", "b", "c"], 255, "train")
    channels = report["channels"]
    assert channels["count"] == 3 and channels["images"] == 3
    assert channels["pixels"] == sum(a.shape[0] * a.shape[1] for a in arrays)
    assert channels["mean"] == pytest.approx(mean, rel=1e-9)
    assert channels["std"] == pytest.approx(std, rel=1e-9)
    # Threads give the same sums, added in the same order.
    assert audit_dataset(dataset(root), ["a", "b", "c"], 255, "train", workers=3) == report
    out = tmp_path / "rgb.json"
    args = ["--data=seglight_testing.audit_example.TinyFolders", f"--data.root={root}"]
    assert run_audit([*args, f"--output={out}"]) == 0
    written = json.loads(out.read_text())["channels"]
    assert set(written) == {"count", "mean", "std", "images", "pixels", "config"}
    assert written["mean"] == channels["mean"] and written["std"] == channels["std"]  # full
    config = written["config"]
    assert config["imagenet"] and not config["matches"]  # ImageNet's defaults
    normalized = (mean - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    assert config["normalized_mean"] == pytest.approx(normalized)
    printed = capsys.readouterr().out
    assert printed_list(printed, "data.mean") == pytest.approx(mean, rel=5e-4)  # 4 digits
    assert printed_list(printed, "data.std") == pytest.approx(std, rel=5e-4)
    assert f"data.mean: [{', '.join(f'{m:.4g}' for m in mean)}]" in printed
    assert "the config's data.mean/std (ImageNet's) differ from these" in printed
    assert "consider pasting them" in printed
    # Pasted back: they match.
    pasted = [f"--data.mean={printed_list(printed, 'data.mean')}"]
    pasted += [f"--data.std={printed_list(printed, 'data.std')}"]
    assert run_audit([*args, f"--output={out}", *pasted]) == 0
    printed = capsys.readouterr().out
    assert "the config's data.mean/std match these" in printed
    assert json.loads(out.read_text())["channels"]["config"]["matches"] is True


def test_problem_samples_are_left_out_of_the_channel_statistics(tmp_path):
    root = tmp_path / "data"
    clean_tree(root)
    clean = audit_dataset(dataset(root), ["a", "b", "c"], 255, "train")["channels"]
    arrays = [np.asarray(Image.open(root / "images" / f"good{i}.png")) for i in range(3)]
    mean, std = numpy_stats(arrays, 255.0)
    assert clean["mean"] == pytest.approx(mean, rel=1e-9)
    assert clean["std"] == pytest.approx(std, rel=1e-9)
    plant_problems(root)
    planted = audit_dataset(dataset(root), ["a", "b", "c"], 255, "train")["channels"]
    assert planted == clean  # the six problem pairs add nothing
    unlabelled = audit_dataset(dataset(root, "predict"), ["a", "b", "c"], 255, "predict")
    assert unlabelled["channels"]["images"] == 8  # every readable image (no mask to fail)


def bands_folder(root: Path, n: int = 4, channels=None) -> dict[str, np.ndarray]:
    """images/tile_<i>.tif, 16-bit, 4 bands (or channels[i]) with index-PNG masks."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(3)
    written = {}
    for i in range(n):
        c = channels[i] if channels else 4
        image = rng.integers(0, 65536, (16, 24, c), dtype=np.uint16)
        tifffile.imwrite(
            root / "images" / f"tile_{i}.tif",
            image,
            photometric="minisblack",
            planarconfig="contig",
        )
        write_mask(root / "masks" / f"tile_{i}.png", rng.choice(np.uint8([0, 1, 255]), (16, 24)))
        written[f"tile_{i}"] = image
    return written


def folder_args(root: Path) -> list[str]:
    return [
        "--data=seglight.data.folder.FolderDataModule",
        f"--data.root={root}",
        "--data.classes=[land, water]",
        "--data.num_workers=0",
    ]


def train_arrays(root: Path, written: dict, **kwargs) -> list[np.ndarray]:
    """The training split's images as decode_image gives them: float32 x / 65535."""
    data = FolderDataModule(root=str(root), classes=["land", "water"], num_workers=0, **kwargs)
    ds = data.build_dataset("train", data.pipelines["eval"])
    return [
        written[Path(image).stem].astype(np.float32) / np.float32(65535) for image, _ in ds.pairs
    ]


def test_four_band_16_bit_tiffs_with_mean_std_flags(in_tmp, capsys):
    root = in_tmp / "bands"
    written = bands_folder(root)
    arrays = train_arrays(root, written, mean=[0.5] * 4, std=[0.3] * 4)
    mean, std = numpy_stats(arrays, 1.0)
    given = ["--data.mean=[0.5, 0.5, 0.5, 0.5]", "--data.std=[0.3, 0.3, 0.3, 0.3]"]
    assert run_audit([*folder_args(root), *given]) == 0
    report = json.loads((in_tmp / "audit_train.json").read_text())
    channels = report["channels"]
    assert channels["count"] == 4 and channels["images"] == len(arrays) == 3
    assert channels["mean"] == pytest.approx(mean, rel=1e-9)
    assert channels["std"] == pytest.approx(std, rel=1e-9)
    assert channels["config"]["mean"] == [0.5] * 4 and channels["config"]["std"] == [0.3] * 4
    printed = capsys.readouterr().out
    assert "(4 channels, [0, 1] units)" in printed
    assert printed_list(printed, "data.mean") == pytest.approx(mean, rel=5e-4)
    assert printed_list(printed, "data.std") == pytest.approx(std, rel=5e-4)
    matches = channels["config"]["matches"]
    assert ("match these" in printed) == matches and ("differ from these" in printed) != matches
    # ImageNet's 3 values for 4 bands: paste these.
    assert run_audit(folder_args(root)) == 0
    printed = capsys.readouterr().out
    assert "(ImageNet's) have 3 values, the images 4 channels: paste these" in printed


def test_bands_give_the_stats_of_the_selected_channels(in_tmp, capsys):
    root = in_tmp / "bands"
    written = bands_folder(root)
    arrays = train_arrays(root, written, bands=[2, 0], mean=[0.5] * 2, std=[0.3] * 2)
    mean, std = numpy_stats([a[..., [2, 0]] for a in arrays], 1.0)
    flags = ["--data.bands=[2, 0]", "--data.mean=[0.5, 0.5]", "--data.std=[0.3, 0.3]"]
    assert run_audit([*folder_args(root), *flags]) == 0
    channels = json.loads((in_tmp / "audit_train.json").read_text())["channels"]
    assert channels["count"] == 2 and len(channels["mean"]) == len(channels["std"]) == 2
    assert channels["mean"] == pytest.approx(mean, rel=1e-9)
    assert channels["std"] == pytest.approx(std, rel=1e-9)
    assert len(printed_list(capsys.readouterr().out, "data.std")) == 2


def test_an_image_with_other_channels_is_a_problem_by_name(tmp_path):
    root = tmp_path / "bands"
    bands_folder(root, n=5, channels=[4, 4, 4, 4, 3])
    data = FolderDataModule(root=str(root), classes=["land", "water"], num_workers=0,
                            mean=[0.5] * 4, std=[0.3] * 4)  # fmt: skip
    assert data.in_channels == 4
    odd = str(root / "images" / "tile_4.tif")
    reports = [
        audit_dataset(data.prepared_dataset(split, data.pipelines["eval"]), ["l", "w"], 255, split)
        for split in ("train", "val")
    ]
    problems = [p for r in reports for p in r["problems"]]
    assert problems == [
        {
            "file": odd,
            "kind": "channels",
            "detail": f"{odd}: gives 3 channels, the first training image 4: "
            "all images need the same bands",
        }
    ]
    assert sum(r["channels"]["images"] for r in reports) == 4  # the odd one left out
    assert all(r["channels"]["count"] in (4, None) for r in reports)
    # Without a dataset-wide count, the first image scanned sets it.
    plain = data.prepared_dataset("predict", data.pipelines["eval"])
    plain.channels = None
    plain.pairs = [(str(root / "images" / f"tile_{i}.tif"), None) for i in (4, 0)]
    (problem,) = audit_dataset(plain, ["a", "b", "c"])["problems"]
    assert problem["kind"] == "channels" and "tile_0.tif: gives 4 channels" in problem["detail"]
    assert "the first image scanned 3" in problem["detail"]


def test_pasteable_values_and_constant_channels():
    from seglight.cli.audit import _channel_lines, _values

    assert _values([1e-5, 0.0812345, 0.0, 1.0, 0.123456]) == "[0.00001, 0.08123, 0, 1, 0.1235]"
    report = {"count": 2, "mean": [0.2, 0.5], "std": [0.0, 0.1], "images": 1, "pixels": 64}
    table = "\n".join(_channel_lines(report))
    assert "data.std: [0, 0.1]" in table and "channel(s) [0] constant (std 0)" in table
