"""The `task` switch (issue 12): binary segmentation end to end — one foreground logit, sigmoid
and a threshold, BCE/Dice, binary metrics, reports, predictions and export metadata — on the
built-in data and on a folder of 0/255 masks, checked against numpy on the predicted files."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from seglight import SegmentationModule
from seglight.cli import main
from seglight.deployment import build_metadata
from seglight.evaluation import EvalProtocol, predict_logits

from seglight_testing import ROOT, SHRINK, one_error_line
from seglight_testing.datasets import make_binary

BINARY = str(ROOT / "configs" / "binary.yaml")


def test_binary_recipe_fits_tests_and_reports(in_tmp):
    c = main(["fit", "--config", BINARY, *SHRINK, "--trainer.max_epochs=1"])
    assert c.model.task == "binary" and c.model.net.segmentation_head[0].out_channels == 1
    main(["test", "--config", BINARY, *SHRINK, "--ckpt_path=outputs/binary/checkpoints/best.ckpt"])
    (path,) = in_tmp.glob("outputs/binary/logs/version_*/test_report.json")
    report = json.loads(path.read_text())
    assert report["task"] == "binary" and report["threshold"] == 0.5
    assert [row["name"] for row in report["classes"]] == ["background", "shape"]
    for key in ("fg_IoU", "fg_dice", "fg_precision", "fg_recall", "mIoU_2class"):
        assert 0 <= report[key] <= 1, key
    # The foreground's IoU is the per-class table's, and mIoU_2class the mean of both rows.
    rows = {row["name"]: row["IoU"] for row in report["classes"]}
    assert report["fg_IoU"] == pytest.approx(rows["shape"], rel=1e-9)
    assert report["mIoU_2class"] == pytest.approx((rows["shape"] + rows["background"]) / 2)


def test_model_flags_given_with_ckpt_path_win_over_the_checkpoints_hparams(in_tmp, capsys):
    """Lightning fills the model's config from the checkpoint's hyper-parameters after parsing
    the command line; a --model.* flag given with --ckpt_path must still decide (it used to be
    silently replaced: a test at another threshold or protocol ran at the trained one)."""
    main(["fit", "--config", BINARY, *SHRINK, "--trainer.max_epochs=1", "--model.threshold=0.4"])
    test = ["test", "--config", BINARY, *SHRINK, "--ckpt_path=outputs/binary/checkpoints/last.ckpt"]
    c = main(test)
    assert c.model.threshold == 0.4 and c.model.protocol_description == "whole"  # as trained
    c = main([*test, "--model.threshold", "0.3", "--model.eval_protocol.flip=true"])
    assert c.model.threshold == 0.3 and c.model.protocol_description == "whole + flip"
    assert c.model.last_metrics["test"]["fg_IoU"] >= 0
    # What shapes the weights comes from the checkpoint; a flag that disagrees is said, once.
    c = main([*test, "--model.model_kwargs={decoder_channels: [8, 8, 8, 8, 8]}"])
    assert c.model.hparams.model_kwargs == {"decoder_channels": [16, 16, 8, 8, 8]}
    assert "--model.model_kwargs={'decoder_channels': [8, 8, 8, 8, 8]} is not used" in (
        capsys.readouterr().err
    )


def test_zero_255_folder_trains_binary_and_fg_iou_matches_numpy_on_the_written_masks(in_tmp):
    make_binary(in_tmp / "data", n=24, size=32)
    folder = [
        "--config", BINARY, "--data=seglight.data.FolderDataModule", "--data.root=data",
        "--data.classes=[background, square]", "--data.task=binary",
        "--data.mask_map={0: 0, 255: 1}", "--data.val_fraction=0.25", "--data.batch_size=4",
        "--data.num_workers=0", "--model.model_kwargs={decoder_channels: [16, 16, 8, 8, 8]}",
        "--model.lr_scheduler=null", "--trainer.enable_progress_bar=false",
    ]  # fmt: skip
    main(["fit", *folder, "--trainer.max_epochs=3"])
    ckpt = "--ckpt_path=outputs/binary/checkpoints/last.ckpt"
    c = main(["test", *folder, ckpt])
    fg_iou = float(c.model.last_metrics["test"]["fg_IoU"])
    # The test split's images, predicted one by one to PNG files by `predict`.
    (in_tmp / "test_images").mkdir()
    pairs = c.datamodule.datasets["test"].pairs
    for image, _ in pairs:
        shutil.copy(image, in_tmp / "test_images" / image.name)
    main(["predict", *folder, ckpt, "--data.predict_dir=test_images"])
    tp = fp = fn = 0
    for image, mask in pairs:
        pred = np.array(Image.open(in_tmp / "outputs/binary/predictions" / f"{image.stem}.png"))
        truth = np.array(Image.open(mask)) == 255  # the 0/255 file as stored
        assert set(np.unique(pred)) <= {0, 1}
        tp += int((pred.astype(bool) & truth).sum())
        fp += int((pred.astype(bool) & ~truth).sum())
        fn += int((~pred.astype(bool) & truth).sum())
    assert tp + fn > 0  # the 255s are foreground, not ignored
    assert fg_iou == pytest.approx(tp / (tp + fp + fn), abs=1e-6)


def test_binary_needs_exactly_two_classes(in_tmp, capsys):
    make_binary(in_tmp / "data", n=4)
    with pytest.raises(SystemExit):
        main(["fit", "--config", BINARY, *SHRINK, "--data=seglight.data.FolderDataModule",
              "--data.root=data", "--data.classes=[a, b, c]", "--data.task=binary"])  # fmt: skip
    line = one_error_line(capsys)
    assert "binary segmentation has 2 classes (background, foreground), got 3" in line


def test_a_bad_task_or_threshold_is_one_line(in_tmp, capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--config", BINARY, *SHRINK, "--data.task=multi-label"])
    line = one_error_line(capsys)
    assert "task" in line and "'multiclass', 'binary'" in line and "multi-label" in line
    with pytest.raises(SystemExit):
        main(["fit", "--config", BINARY, *SHRINK, "--model.threshold=1.5"])
    assert "model.threshold: must be in (0, 1), got 1.5" in one_error_line(capsys)


def tiny_binary(**kwargs) -> SegmentationModule:
    return SegmentationModule(encoder_name="resnet18", num_classes=2, task="binary",
                              model_kwargs={"decoder_channels": [8, 8, 8, 8, 8]},
                              class_names=["background", "crack"], **kwargs)  # fmt: skip


def test_the_threshold_decides_foreground_inclusively():
    model = tiny_binary(threshold=0.7)
    p = torch.tensor([0.2, 0.69, 0.7, 0.71, 0.99]).view(1, 1, 1, 5)  # probabilities
    logits = torch.log(p) - torch.log1p(-p)
    assert model.predict_masks(logits).tolist() == [[[0, 0, 1, 1, 1]]]
    assert torch.allclose(model.metric_inputs(logits), p[:, 0], atol=1e-6)


def test_binary_tta_averages_the_views_sigmoid_probabilities():
    images = torch.randn(1, 3, 8, 8)
    weights = torch.randn(1, 3, 1, 1)

    def net(x):  # (B, 3, H, W) -> one logit per pixel, not flip-invariant
        return (x * weights).sum(1, keepdim=True) + torch.linspace(-2, 2, x.shape[-1])

    protocol = EvalProtocol(flip=True)
    out = predict_logits(net, images, 1, protocol, 1, activation="sigmoid")
    expected = (net(images).sigmoid() + net(images.flip(-1)).flip(-1).sigmoid()) / 2
    assert torch.allclose(out.sigmoid(), expected, atol=1e-6)


def test_export_metadata_says_how_to_read_a_binary_output():
    meta = build_metadata(tiny_binary(threshold=0.4), (0.5,) * 3, (0.25,) * 3)
    assert meta["task"] == "binary" and meta["num_classes"] == "2"
    assert "(batch, 1, height, width)" in meta["output_layout"]
    assert "sigmoid >= threshold (0.4)" in meta["output_layout"]


def test_a_4_band_16_bit_tiff_folder_trains_with_in_channels_from_the_data(in_tmp):
    tifffile = pytest.importorskip("tifffile")
    rng = np.random.default_rng(0)
    (in_tmp / "data/images").mkdir(parents=True)
    (in_tmp / "data/masks").mkdir()
    for i in range(8):
        bands = rng.integers(0, 4096, (32, 32, 4), dtype=np.uint16)  # 12-bit data in 16 bits
        mask = (bands[..., 3] > 2048).astype(np.uint8)  # the 4th band (NIR-like) decides
        tifffile.imwrite(
            in_tmp / f"data/images/t{i}.tif", bands, photometric="minisblack", planarconfig="contig"
        )  # one page of 4 bands (GDAL's layout)
        Image.fromarray(mask, mode="L").save(in_tmp / f"data/masks/t{i}.png")
    c = main([
        "fit", "--config", str(ROOT / "configs" / "quickstart.yaml"),
        "--data=seglight.data.FolderDataModule", "--data.root=data",
        "--data.classes=[land, water]", "--data.mean=[0.03, 0.03, 0.03, 0.03]",
        "--data.std=[0.02, 0.02, 0.02, 0.02]", "--data.val_fraction=0.25",
        "--data.batch_size=2", "--data.num_workers=0",
        "--model.model_kwargs={decoder_channels: [16, 16, 8, 8, 8]}",
        "--data.rgb_bands=[3, 2, 1]", "--trainer.max_epochs=2",
        "--trainer.enable_progress_bar=false",
    ])  # fmt: skip
    assert c.datamodule.in_channels == 4 and c.model.hparams.in_channels == 4
    assert c.model.net.encoder.conv1.in_channels == 4  # the first layer takes all 4 bands
    # Validation images of a 4-band folder are drawn from the bands data.rgb_bands names.
    assert list(in_tmp.glob("outputs/quickstart/logs/version_0/images/val_epoch1.png"))


def test_a_tiff_stack_is_named_not_taken_for_an_rgb_image(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    from seglight.data.folder import FolderDataModule
    from seglight.errors import DataError

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    stack = np.zeros((32, 32, 4), np.uint16)  # tifffile's default: 32 pages of 32 x 4
    tifffile.imwrite(tmp_path / "images/a.tif", stack, photometric="minisblack")
    Image.fromarray(np.zeros((32, 32), np.uint8), mode="L").save(tmp_path / "masks/a.png")
    dm = FolderDataModule(root=str(tmp_path), classes=["a", "b"], num_workers=0)
    with pytest.raises(DataError, match=r"a\.tif: has 32 frames"):
        dm.in_channels  # noqa: B018


MULTISPECTRAL = str(ROOT / "configs" / "multispectral.yaml")
RGB_ONLY = ["--data.bands=[0, 1, 2]", "--data.mean=[0.5, 0.5, 0.5]", "--data.std=[0.3, 0.3, 0.3]"]


@pytest.mark.slow
def test_a_model_that_sees_the_extra_bands_scores_higher(in_tmp):
    """The built-in multispectral variant: the class is in the extra bands (and the shape), not
    in the colour; the same recipe on RGB alone must do clearly worse."""
    small = [
        "--data.image_size=48", "--data.train_size=256", "--data.val_size=64",
        "--data.test_size=64", "--data.num_workers=0", "--trainer.max_epochs=3",
        "--model.model_kwargs={decoder_channels: [32, 32, 16, 16, 8]}",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
    ]  # fmt: skip
    scores = {}
    for name, extra in (("all", []), ("rgb", RGB_ONLY)):
        root = f"--trainer.default_root_dir=outputs/{name}"
        main(["fit", "--config", MULTISPECTRAL, *small, *extra, root])
        c = main(["test", "--config", MULTISPECTRAL, *small, *extra, root,
                  f"--ckpt_path=outputs/{name}/checkpoints/last.ckpt"])  # fmt: skip
        assert c.model.hparams.in_channels == (5 if name == "all" else 3)
        scores[name] = float(c.model.last_metrics["test"]["mIoU"])
    assert scores["all"] > scores["rgb"] + 0.05, scores
