"""Evaluation you can publish: report files that agree with the logs, exact metrics under DDP."""

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from seglight.cli import main
from seglight.data.synthetic import CLASS_NAMES, SyntheticDataModule

from seglight_testing import (
    QUICKSTART,
    ROOT,
    TINY,
    assert_same_val_metrics,
    logged_val_metrics,
    run_on_cpus,
)

# A random-init model (seed 0) on 5 test images: no training needed to compare protocols.
TEST = ["test", "--config", QUICKSTART, *TINY, "--data.test_size=5", "--data.eval_batch_size=1"]


def report_of(folder):
    return json.loads(next(folder.rglob("test_report.json")).read_text())


def test_report_files_agree_with_the_logged_metrics(in_tmp):
    main(TEST)
    run = in_tmp / "outputs/quickstart/logs/version_0"
    report = json.loads((run / "test_report.json").read_text())
    logged = {k: float(v) for r in csv.DictReader(open(run / "metrics.csv")) for k, v in r.items()
              if v and k.startswith("test/")}  # fmt: skip
    assert abs(report["mIoU"] - logged["test/mIoU"]) < 1e-6
    confmat = np.array(report["confusion_matrix"])
    assert confmat.shape == (5, 5) and confmat.sum() > 0
    for i, row in enumerate(report["classes"]):
        assert row["name"] == CLASS_NAMES[i] and row["pixels"] == confmat[i].sum()
        assert row["pixels"] == logged[f"test/pixels/{row['name']}"]
        if row["IoU"] is not None:
            assert abs(row["IoU"] - logged[f"test/IoU/{row['name']}"]) < 1e-6
            tp, union = confmat[i, i], confmat[i].sum() + confmat[:, i].sum() - confmat[i, i]
            assert abs(row["IoU"] - tp / union) < 1e-6  # the report's own matrix, recomputed
    rows = list(csv.DictReader(open(run / "test_report.csv")))
    assert [r["class"] for r in rows] == CLASS_NAMES
    picture = Image.open(run / "test_confusion.png")
    assert picture.mode == "RGB" and picture.size[1] >= 5 * 4


@pytest.mark.slow  # tests/test_ddp.py checks the same in the fast suite, after a DDP fit
def test_ddp_counts_every_image_exactly_once(tmp_path):
    """2 processes (gloo, CPU) on 5 images: Lightning's default sampler would repeat one image
    to even the split; the confusion matrix must equal the single-process one exactly."""
    results = {d: report_of(run_on_cpus(tmp_path, d, TEST)) for d in (1, 2)}
    single, ddp = (np.array(results[d]["confusion_matrix"]) for d in (1, 2))
    dm = SyntheticDataModule(image_size=32, test_size=5, num_workers=0)
    test_set = dm.build_dataset("test", dm.pipelines["eval"])
    labelled = sum(int((test_set.load(i).mask != 255).sum()) for i in range(5))
    assert single.sum() == labelled  # every labelled pixel of the 5 images, once
    np.testing.assert_array_equal(ddp, single)
    assert results[2]["mIoU"] == results[1]["mIoU"]


def test_predict_any_folder_with_overlays(in_tmp):
    photos = in_tmp / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    sizes = {"a.jpg": (40, 52), "b.png": (33, 47), "c.jpeg": (64, 64)}
    for name, (h, w) in sizes.items():
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(photos / name)
    (photos / "notes.txt").write_text("not an image")
    main(["predict", "--config", QUICKSTART, *TINY, "--data.predict_dir=photos",
          "--data.eval_batch_size=2", "--trainer.callbacks+=seglight.callbacks.MaskWriter",
          "--trainer.callbacks.output_dir=out", "--trainer.callbacks.overlay=true"])  # fmt: skip
    for name, (h, w) in sizes.items():
        stem = name.split(".")[0]
        mask = Image.open(in_tmp / "out" / f"{stem}.png")
        assert mask.size == (w, h) and mask.mode == "P"  # each image's own size, not the batch's
        assert np.array(mask).max() < len(CLASS_NAMES)
        assert Image.open(in_tmp / "out" / "overlays" / f"{stem}.jpg").size == (w, h)


def test_predict_dir_must_hold_images(in_tmp, capsys):
    (in_tmp / "empty").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "--config", QUICKSTART, *TINY, "--data.predict_dir=empty"])
    assert exit_info.value.code == 2
    assert "data.predict_dir: no images" in capsys.readouterr().err


def test_predict_streams_to_a_default_writer(in_tmp):
    """No writer in the config: masks still land on disk, and none are kept in memory."""
    c = main(["predict", "--config", QUICKSTART, *TINY, "--trainer.callbacks=[]",
              "--trainer.logger=false", "--trainer.default_root_dir=run"])  # fmt: skip
    assert sorted(p.name for p in (in_tmp / "run" / "predictions").glob("*.png")) == [
        "predict_00000.png", "predict_00001.png", "predict_00002.png"]  # fmt: skip
    assert c.trainer.predict_loop.predictions == []  # streamed, not accumulated


@pytest.mark.parametrize(
    ("recipe", "expected"),
    [
        ("quickstart", {"val/mIoU", "val/pixel_acc", "val/IoU/circle", "val/loss"}),
        # ~15 s each; the binary and multilabel metrics' own DDP sums are also checked in
        # the fast suite, in-process (tests/test_task_metrics_ddp.py)
        pytest.param(
            "binary",
            {"val/fg_IoU", "val/fg_dice", "val/mIoU_2class", "val/IoU/shape"},
            marks=pytest.mark.slow,
        ),
        pytest.param(
            "multilabel",
            {"val/mIoU", "val/F1_micro", "val/F1/circle", "val/recall/cross"},
            marks=pytest.mark.slow,
        ),
    ],
)
def test_ddp_validation_equals_single_process(in_tmp, recipe, expected):
    """The validation loader (the one fit validates with) under 2 processes, 5 images, for each
    task: every count-based val/ number (mIoU, accuracies, per-class IoU, binary fg_IoU,
    per-label F1) equals the single-process one (run in this process) exactly; the losses,
    float sums added in another order, to float32 rounding."""
    config = str(ROOT / "configs" / f"{recipe}.yaml")
    validate = ["validate", "--config", config, *TINY, "--data.val_size=5",
                "--data.eval_batch_size=2"]  # fmt: skip
    main([*validate, "--trainer.accelerator=cpu", "--trainer.devices=1"])
    one, many = logged_val_metrics(in_tmp), logged_val_metrics(run_on_cpus(in_tmp, 2, validate))
    assert expected | {"val/loss"} <= set(one)
    assert_same_val_metrics(many, one)


def test_per_image_scores_worst_images_and_the_html_report(in_tmp):
    """test_images.csv holds every test image's mIoU (numpy on the model's own prediction, each
    image alone), lowest first; test_worst.png draws the worst with 4 titled columns; the HTML
    page embeds every picture (no external file or script) and names the worst images."""
    from html.parser import HTMLParser

    c = main(TEST)
    run = in_tmp / "outputs/quickstart/logs/version_0"
    rows = list(csv.DictReader(open(run / "test_images.csv")))
    assert len(rows) == 5 and list(rows[0]) == ["image", "mIoU"]
    model, dataset = c.model.eval(), c.datamodule.datasets["test"]
    expected = {}
    for i in range(len(dataset)):
        item = dataset[i]
        with torch.no_grad():
            pred = model.predict_step({"image": item["image"][None]}, i)[0].numpy()
        truth = item["mask"].numpy()
        keep = truth != 255
        ious = [((pred == k) & (truth == k) & keep).sum() / union
                for k in range(model.num_classes)
                if (union := (((pred == k) | (truth == k)) & keep).sum())]  # fmt: skip
        expected[item["name"]] = float(np.mean(ious))
    scores = [float(r["mIoU"]) for r in rows]
    assert scores == sorted(scores)
    for row in rows:
        assert float(row["mIoU"]) == pytest.approx(expected[row["image"]], abs=1e-9)
    report = report_of(in_tmp)
    assert report["images"]["count"] == 5 and report["images"]["metric"] == "mIoU"
    assert [w["name"] for w in report["images"]["worst"]] == [r["image"] for r in rows]
    worst = Image.open(run / "test_worst.png")
    assert worst.width >= 4 * 96  # image | ground truth | prediction | error, enlarged

    class Sources(HTMLParser):
        def __init__(self):
            super().__init__()
            self.sources, self.tags = [], set()

        def handle_starttag(self, tag, attrs):
            self.tags.add(tag)
            self.sources += [v for k, v in attrs if k in ("src", "href")]

    page = (run / "test_report.html").read_text()
    parser = Sources()
    parser.feed(page)
    assert "script" not in parser.tags and "link" not in parser.tags
    assert len(parser.sources) == 3  # IoU bars, confusion matrix, worst images
    assert all(s.startswith("data:image/png;base64,") for s in parser.sources)
    assert all(name in page for name in CLASS_NAMES) and rows[0]["image"] in page


def test_image_scores_keep_the_lowest_and_put_undefined_last():
    from seglight.image_scores import ImageScores

    scores = ImageScores(keep=3)
    one = torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 2), torch.zeros(1, 2, 2)
    for name, score in [("a", 0.5), ("b", float("nan")), ("c", 0.1), ("d", 0.9), ("e", 0.2),
                        ("f", 0.1)]:  # fmt: skip
        scores.add(name, score, *one)
    assert [w.name for w in scores.worst()] == ["c", "f", "e"] and len(scores) == 6
    nan_only = ImageScores(keep=2)
    nan_only.add("x", float("nan"), *one)
    nan_only.add("y", 0.3, *one)
    assert [w.name for w in nan_only.worst()] == ["y", "x"]
