"""ValidationImages: which epochs are drawn, the grid's layout, and that the overlays show the
ground truth and the prediction in the dataset's palette."""

import csv
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from seglight.callbacks.images import ValidationImages, pick_indices
from seglight.cli import main
from seglight.data.synthetic import PALETTE, SyntheticDataModule
from seglight.errors import ConfigError
from seglight.module import SegmentationModule
from seglight.render import GAP, HEADER, denormalize, overlay

from seglight_testing import QUICKSTART, TINY

ROOT = QUICKSTART.rsplit("/configs/", 1)[0]
CSV = f"{ROOT}/configs/logger/csv.yaml"
ALPHA = 0.5


def test_pick_indices_are_evenly_spaced_fixed_and_cover_small_sets():
    assert pick_indices(100, 5) == [0, 25, 50, 74, 99]
    assert pick_indices(100, 5) == pick_indices(100, 5)
    assert pick_indices(3, 8) == [0, 1, 2]  # fewer images than asked: all of them
    assert pick_indices(1, 1) == [0]


def test_overlay_blends_the_class_colour_and_leaves_ignore_alone():
    image = np.full((2, 2, 3), 100, np.uint8)
    mask = np.array([[0, 1], [255, 1]])
    palette = np.array([[0, 0, 0], [200, 40, 0]], np.uint8)
    out = overlay(image, mask, palette, alpha=0.25)
    assert out[0, 0].tolist() == [75, 75, 75]  # 0.75 * 100 + 0.25 * 0
    assert out[0, 1].tolist() == [125, 85, 75]  # 0.75 * 100 + 0.25 * (200, 40, 0)
    assert out[1, 0].tolist() == [100, 100, 100]  # ignore: the image itself


def test_bad_arguments_name_themselves():
    with pytest.raises(ConfigError, match="every_n_epochs"):
        ValidationImages(every_n_epochs=0)
    with pytest.raises(ConfigError, match="num_images"):
        ValidationImages(num_images=0)


def test_fit_writes_grids_on_the_right_epochs_with_gt_and_prediction_overlays(in_tmp):
    """The quickstart's ValidationImages, 3 epochs, every 2nd validation: epoch 1, then epoch 2
    at the end of fit (not epoch 0).
    8 images asked of a 4-image validation set: 4 rows. Also: csv.yaml writes metrics.csv."""
    cli = main(["fit", "--config", QUICKSTART, "--config", CSV, *TINY, "--trainer.max_epochs=3",
               "--trainer.limit_train_batches=1"])  # fmt: skip
    (callback,) = [c for c in cli.trainer.callbacks if isinstance(c, ValidationImages)]
    assert (callback.every_n_epochs, callback.num_images, callback.alpha) == (2, 8, ALPHA)
    log_dir = in_tmp / "outputs/quickstart/logs/version_0"
    metrics = list(csv.DictReader(open(log_dir / "metrics.csv")))
    assert len([r for r in metrics if r.get("val/mIoU")]) == 3
    assert sorted(p.name for p in (log_dir / "images").iterdir()) == [
        "val_epoch1.png",
        "val_epoch2.png",
    ]

    dm = SyntheticDataModule(image_size=32, val_size=4, num_workers=0)
    dm.setup("validate")
    samples = [dm.datasets["val"][i] for i in range(4)]
    palette = np.array(PALETTE, np.uint8)
    grid = np.asarray(Image.open(log_dir / "images/val_epoch2.png").convert("RGB"))
    cell = 32 + GAP
    assert grid.shape[1] >= 3 * 32 + 2 * GAP
    assert grid.shape[0] > HEADER + 4 * cell  # titles, 4 rows of tiles, then the legend
    for row, sample in enumerate(samples):
        image = denormalize(sample["image"], np.array(dm.mean), np.array(dm.std))
        top = HEADER + row * cell
        tiles = [grid[top : top + 32, j * cell : j * cell + 32] for j in range(3)]
        np.testing.assert_array_equal(tiles[0], image)  # the image itself, un-normalized
        mask = sample["mask"].numpy()
        labelled = mask != 255
        expected = ((1 - ALPHA) * image + ALPHA * palette[np.where(labelled, mask, 0)]).round()
        np.testing.assert_array_equal(tiles[1][labelled], expected[labelled].astype(np.uint8))
        np.testing.assert_array_equal(tiles[1][~labelled], image[~labelled])
        # Prediction: every pixel is the image blended with some class's colour.
        blends = ((1 - ALPHA) * image[None] + ALPHA * palette[:, None, None]).round()  # (C,H,W,3)
        matches = (blends == tiles[2][None]).all(-1)  # (C, H, W)
        assert matches.any(0).all()
    # A row beyond the 4th would be a tile: the legend starts there instead.
    legend = HEADER + 4 * cell
    assert not np.array_equal(grid[legend : legend + 32, :32], grid[HEADER : HEADER + 32, :32])
    assert (grid[:HEADER] != grid[0, 0]).any()  # the column titles are drawn


def test_draw_restores_training_mode_and_shows_evaluation_logits(tmp_path):
    """Drawn in the middle of fit, the module predicts in eval mode and goes back to training
    mode; the prediction is evaluation_logits' argmax: a module that favours class 2
    everywhere shows class 2's colour (alpha 1) over the whole prediction tile."""
    dm = SyntheticDataModule(image_size=32, val_size=3, num_workers=0)
    dm.setup("validate")
    module = SegmentationModule(num_classes=dm.num_classes, class_names=dm.class_names,
                                model_kwargs={"decoder_channels": [8, 8, 8, 8, 8]})  # fmt: skip
    modes = []

    def favour_class_2(images):  # (B, 3, H, W) -> logits (B, C, H, W)
        modes.append(module.training)
        logits = torch.zeros(images.shape[0], module.num_classes, *images.shape[2:])
        logits[:, 2] = 1.0
        return logits

    module.evaluation_logits = favour_class_2
    module.train()
    trainer = SimpleNamespace(  # what draw() reads of a Trainer
        log_dir=str(tmp_path), default_root_dir=str(tmp_path), global_step=7,
        is_global_zero=True, datamodule=dm, val_dataloaders=dm.val_dataloader(), loggers=[],
    )  # fmt: skip
    path = ValidationImages(num_images=2, alpha=1.0).draw(trainer, module, epoch=4)
    assert path == tmp_path / "images" / "val_epoch4.png"
    assert modes == [False, False] and module.training
    grid = np.asarray(Image.open(path).convert("RGB"))
    for row in range(2):
        top, left = HEADER + row * (32 + GAP), 2 * (32 + GAP)
        assert (grid[top : top + 32, left : left + 32] == PALETTE[2]).all()


def test_n_band_images_are_drawn_from_the_chosen_bands():
    """4 normalized channels: the first three by default, `rgb_bands` (data.rgb_bands) picks
    others; an index beyond the channels is a one-line ConfigError."""
    from seglight.errors import ConfigError

    values = torch.tensor([0.2, 0.4, 0.6, 0.8]).view(4, 1, 1).expand(4, 2, 3)  # (C, H, W)
    mean, std = [0.5] * 4, [0.25] * 4
    normalized = (values - 0.5) / 0.25
    first = denormalize(normalized, mean, std)  # (H, W, 3)
    assert first.shape == (2, 3, 3) and first[0, 0].tolist() == [51, 102, 153]
    chosen = denormalize(normalized, mean, std, rgb_bands=[3, 2, 1])
    assert chosen[0, 0].tolist() == [204, 153, 102]
    with pytest.raises(ConfigError, match=r"data.rgb_bands: \[4, 0, 1\], but the images have 4"):
        denormalize(normalized, mean, std, rgb_bands=[4, 0, 1])
