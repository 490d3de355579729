"""The multilabel task (issue 12) end to end on the built-in overlapping shapes: (L, H, W) masks
with per-label ignore, one sigmoid per label, per-label reports checked against numpy counts
of the model's own predictions, prediction files per label, rendering and export metadata."""

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from seglight import SegmentationModule
from seglight.cli import main
from seglight.data.dataset import Sample, SegmentationDataset
from seglight.data.synthetic import MULTILABEL_NAMES, SyntheticDataModule
from seglight.data.transforms import build_pipeline
from seglight.deployment import build_metadata
from seglight.errors import DataError
from seglight.evaluation import EvalProtocol, predict_logits
from seglight.render import overlay

from seglight_testing import ROOT, SHRINK

MULTILABEL = str(ROOT / "configs" / "multilabel.yaml")
CKPT = "--ckpt_path=outputs/multilabel/checkpoints/last.ckpt"


def test_synthetic_shapes_overlap_and_each_label_has_its_own_ignore_band():
    dm = SyntheticDataModule(task="multilabel", image_size=64, train_size=8, num_workers=0)
    assert dm.class_names == MULTILABEL_NAMES == ["circle", "square", "triangle", "cross"]
    dataset = dm.prepared_dataset("train", dm.pipelines["eval"])
    masks = np.stack([dataset.load(i).mask for i in range(8)])  # (8, 64, 64, 4)
    assert masks.shape == (8, 64, 64, 4) and set(np.unique(masks)) == {0, 1, 255}
    carried = (masks == 1).sum(-1)  # labels per pixel
    assert (carried >= 2).any() and (carried == 0).any()  # overlaps and plain background
    ignored = masks == 255
    assert (ignored.any(-1) & ~ignored.all(-1)).any()  # ignored for one label, not the others
    item = dataset[0]
    assert item["mask"].shape == (4, 64, 64) and item["mask"].dtype == torch.long
    assert item["size"].tolist() == [64, 64]


def test_a_mask_without_label_channels_is_one_line():
    class OneClassMask(SegmentationDataset):
        def __len__(self):
            return 1

        def load(self, index):
            return Sample(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8), "a")

    dataset = OneClassMask(build_pipeline([], 255))
    dataset.num_labels = 3
    with pytest.raises(DataError, match=r"a: mask of shape \(8, 8\) .* needs \(H, W, 3\)"):
        dataset[0]


def counts_by_numpy(model: SegmentationModule, dataset) -> np.ndarray:
    """(L, 4) [tp, fp, fn, tn] of the model's predictions over `dataset`, ignore left out."""
    counts = np.zeros((model.num_classes, 4), np.int64)
    with torch.no_grad():
        for i in range(len(dataset)):
            item = dataset[i]
            pred = model.predict_step({"image": item["image"][None]}, i)[0].numpy() == 1
            truth, labelled = item["mask"].numpy() == 1, item["mask"].numpy() != 255
            for j, (p, t, keep) in enumerate(zip(pred, truth, labelled, strict=True)):
                p, t = p[keep], t[keep]
                counts[j] += [(p & t).sum(), (p & ~t).sum(), (~p & t).sum(), (~p & ~t).sum()]
    return counts


def test_recipe_fits_tests_and_predicts_and_the_report_matches_numpy(in_tmp, capsys):
    c = main(["fit", "--config", MULTILABEL, *SHRINK, "--trainer.max_epochs=1"])
    assert c.model.task == "multilabel" and c.model.net.segmentation_head[0].out_channels == 4
    assert next(in_tmp.glob("outputs/multilabel/logs/version_0/images/val_epoch0.png"))
    c = main(["test", "--config", MULTILABEL, *SHRINK, CKPT])
    assert "test per label" in capsys.readouterr().out
    run = next(in_tmp.glob("outputs/multilabel/logs/version_1"))
    report = json.loads((run / "test_report.json").read_text())
    assert report["task"] == "multilabel" and report["threshold"] == 0.5
    assert "confusion_matrix" not in report and not (run / "test_confusion.png").exists()
    rows = report["classes"]
    assert [row["name"] for row in rows] == MULTILABEL_NAMES
    # The report's counts are the model's own predictions counted by numpy, exactly.
    model = c.model.eval()
    expected = counts_by_numpy(model, c.datamodule.datasets["test"])
    np.testing.assert_array_equal(
        [[r[k] for k in ("tp", "fp", "fn", "tn")] for r in rows], expected
    )
    tp, fp, fn, _ = expected.T.astype(np.float64)
    iou, f1 = tp / (tp + fp + fn), 2 * tp / (2 * tp + fp + fn)
    for row, i, f in zip(rows, iou, f1, strict=True):
        assert row["IoU"] == pytest.approx(i, abs=1e-9) and row["F1"] == pytest.approx(f, abs=1e-9)
        assert row["pixels"] == row["tp"] + row["fn"]
    assert report["mIoU"] == pytest.approx(np.nanmean(iou), abs=1e-9)
    assert report["IoU_micro"] == pytest.approx(tp.sum() / (tp + fp + fn).sum(), abs=1e-9)
    logged = {k: float(v) for r in csv.DictReader(open(run / "metrics.csv")) for k, v in r.items()
              if v and k.startswith("test/")}  # fmt: skip
    assert logged["test/mIoU"] == pytest.approx(report["mIoU"], abs=1e-6)
    assert logged["test/F1/circle"] == pytest.approx(rows[0]["F1"], abs=1e-6)
    header = next(csv.reader(open(run / "test_report.csv")))
    assert header == ["class", "IoU", "F1", "precision", "recall", "pixels"]
    # predict: one 0/1 PNG per label and image, what predict_step gives.
    main(["predict", "--config", MULTILABEL, *SHRINK, CKPT])
    predict = c.datamodule.build_dataset("predict", c.datamodule.pipelines["eval"])
    for i in range(len(predict)):
        with torch.no_grad():
            masks = model.predict_step({"image": predict[i]["image"][None]}, i)[0].numpy()
        for name, mask in zip(MULTILABEL_NAMES, masks, strict=True):
            path = in_tmp / f"outputs/multilabel/predictions/{name}/predict_{i:05d}.png"
            np.testing.assert_array_equal(np.array(Image.open(path)), mask)


def tiny_multilabel(**kwargs) -> SegmentationModule:
    return SegmentationModule(encoder_name="resnet18", num_classes=3, task="multilabel",
                              model_kwargs={"decoder_channels": [8, 8, 8, 8, 8]},
                              class_names=["road", "car", "shadow"], **kwargs)  # fmt: skip


def test_each_label_is_thresholded_on_its_own_sigmoid():
    model = tiny_multilabel(threshold=0.6)
    p = torch.tensor([[0.59, 0.6], [0.9, 0.1], [0.99, 0.7]]).view(1, 3, 1, 2)  # (B, L, H, W)
    logits = torch.log(p) - torch.log1p(-p)
    assert model.predict_masks(logits)[0, :, 0].tolist() == [[0, 1], [1, 0], [1, 1]]
    assert torch.allclose(model.metric_inputs(logits), p, atol=1e-6)
    assert model.net.segmentation_head[0].out_channels == 3


def test_tta_averages_each_label_sigmoid():
    images, weights = torch.randn(1, 3, 8, 8), torch.randn(2, 3, 1, 1)

    def net(x):  # (B, 3, H, W) -> 2 logits per pixel, not flip-invariant
        return torch.einsum("bchw,lc->blhw", x, weights[:, :, 0, 0]) + torch.linspace(-2, 2, 8)

    out = predict_logits(net, images, 1, EvalProtocol(flip=True), 2, activation="sigmoid")
    expected = (net(images).sigmoid() + net(images.flip(-1)).flip(-1).sigmoid()) / 2
    assert torch.allclose(out.sigmoid(), expected, atol=1e-6)


def test_overlay_mixes_the_colours_of_the_labels_a_pixel_carries():
    image = np.full((1, 3, 3), 10, np.uint8)
    mask = np.array([[[1, 1, 0]], [[0, 1, 255]]])  # (L=2, H=1, W=3)
    palette = np.array([[200, 0, 0], [0, 100, 0]], np.uint8)
    out = overlay(image, mask, palette, alpha=1.0)
    assert out[0].tolist() == [[200, 0, 0], [100, 50, 0], [10, 10, 10]]


def test_export_metadata_says_how_to_read_a_multilabel_output():
    meta = build_metadata(tiny_multilabel(threshold=0.4), (0.5,) * 3, (0.25,) * 3)
    assert meta["task"] == "multilabel" and meta["num_classes"] == "3"
    assert "one logit per label" in meta["output_layout"]
    assert "sigmoid >= threshold (0.4)" in meta["output_layout"]


def test_per_label_table_and_wandb_table_show_the_label_metrics():
    from seglight.callbacks.reports import format_class_table
    from seglight.callbacks.wandb_tables import class_metrics_media
    from seglight.tasks import task_spec

    spec = task_spec("multilabel", 2, 255, 0.5, ["road", "car"])
    metric = spec.metrics()
    target = torch.tensor([[[[1, 1, 0, 255]], [[0, 1, 1, 0]]]])  # (B=1, L=2, H=1, W=4)
    metric.update(torch.tensor([[[[0.9, 0.2, 0.7, 0.9]], [[0.1, 0.8, 0.6, 0.1]]]]), target)
    result = spec.result(metric.compute())
    assert result["pixels"].tolist() == [2, 2] and int(result["counted"]) == 7
    table = format_class_table(["road", "car"], result, "test per label", spec.per_class)
    lines = table.splitlines()
    assert lines[1].split() == ["class", "IoU", "F1", "Prec", "Recall"]
    assert lines[3].split() == ["road", "33.33", "50.00", "50.00", "50.00"]  # tp 1, fp 1, fn 1
    assert lines[4].split() == ["car", "100.00", "100.00", "100.00", "100.00"]
    assert "micro IoU" in table and "micro F1" in table
    media = class_metrics_media(["road", "car"], result, "test", spec.per_class)
    assert set(media) == {"test/per_class"}  # independent labels: no confusion matrix
    assert media["test/per_class"].columns == ["class", "IoU", "F1", "precision", "recall",
                                               "pixels"]  # fmt: skip
    assert media["test/per_class"].data[1] == ["car", 1.0, 1.0, 1.0, 1.0, 2]
