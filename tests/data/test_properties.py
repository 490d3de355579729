"""Properties of the transform pipelines and the dataset/collate path, for any image/mask pair:
any size (1-pixel sides, odd sizes, smaller than the crop) and any labels (all ignored, one
class, every class). Hypothesis draws the cases; each example seeds albumentations' own RNG.

Alignment is checked by building the image FROM the mask: class c is painted COLOURS[c], the
ignored pixels IGNORE_COLOUR, so after the geometric transforms every pixel's colour must still
decode to its mask value (padding: black image, ignore_index mask).
"""

import cv2
import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seglight.data.dataset import Sample, SegmentationDataset, collate_padded
from seglight.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_pipeline, train_preset

IGNORE = 255
COLOURS = np.array(
    [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [255, 0, 255], [0, 255, 255],
     [128, 128, 128]], np.uint8,
)  # fmt: skip
IGNORE_COLOUR = np.array([255, 255, 255], np.uint8)
PAD_COLOUR = np.array([0, 0, 0], np.uint8)  # PadIfNeeded's default image fill
PROPERTY = settings(max_examples=40, deadline=None)


@st.composite
def labelled_pairs(draw, max_side: int = 64):
    """(mask (H, W) uint8, num_classes): H, W in 1..max_side; labels all ignored, one class,
    every class (each one present when the mask has room), or any mix with ignore."""
    h, w = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    num_classes = draw(st.integers(1, len(COLOURS)))
    kind = draw(st.sampled_from(["ignore", "one", "all", "mixed"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "ignore":
        mask = np.full((h, w), IGNORE, np.uint8)
    elif kind == "one":
        mask = np.full((h, w), draw(st.integers(0, num_classes - 1)), np.uint8)
    else:
        values = np.arange(num_classes) if kind == "all" else [*range(num_classes), IGNORE]
        flat = rng.choice(values, h * w)
        if kind == "all":  # each class at least once where it fits
            flat[: min(h * w, num_classes)] = np.arange(min(h * w, num_classes))
            rng.shuffle(flat)
        mask = flat.reshape(h, w).astype(np.uint8)
    return mask, num_classes


def paint(mask: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 image: each class its colour, ignored pixels IGNORE_COLOUR."""
    image = np.empty((*mask.shape, 3), np.uint8)
    image[mask == IGNORE] = IGNORE_COLOUR
    labelled = mask != IGNORE
    image[labelled] = COLOURS[mask[labelled]]
    return image


def decode(normalized: np.ndarray) -> np.ndarray:
    """(H, W) mask values from a painted image after Normalize (H, W, 3) float32."""
    rgb = np.rint((normalized * IMAGENET_STD + IMAGENET_MEAN) * 255).astype(np.int32)
    out = np.full(rgb.shape[:2], -1, np.int32)  # -1: a colour that is nothing painted
    for value, colour in [*enumerate(COLOURS), (IGNORE, IGNORE_COLOUR), (IGNORE, PAD_COLOUR)]:
        out[(rgb == colour).all(-1)] = value
    return out


def allowed(num_classes: int) -> set[int]:
    return {*range(num_classes), IGNORE}


sizes = st.tuples(st.integers(1, 48), st.integers(1, 48))
scales = st.tuples(st.floats(0.1, 1.0), st.floats(1.0, 2.5))
seeds = st.integers(0, 2**32 - 1)


@PROPERTY
@given(pair=labelled_pairs(), crop=sizes, scale=scales, seed=seeds)
def test_train_preset_gives_crops_with_valid_labels(pair, crop, scale, seed):
    """The benchmark preset as the datasets use it (linear image resampling, colour jitter)."""
    mask, num_classes = pair
    pipeline = build_pipeline(train_preset(crop, scale), IGNORE)
    pipeline.set_random_seed(seed)
    out = pipeline(image=paint(mask), mask=mask)
    assert out["image"].shape == (*crop, 3) and out["image"].dtype == np.float32
    assert out["mask"].shape == crop
    assert np.isfinite(out["image"]).all()
    assert set(np.unique(out["mask"]).tolist()) <= allowed(num_classes)


def geometric_preset(crop, scale) -> list[dict]:
    """train_preset without its photometric jitter, and with the image resampled nearest like
    the mask, so a pixel's colour survives unblended and still names its class."""
    specs = [dict(s) for s in train_preset(crop, scale) if s["name"] != "ColorJitter"]
    for spec in specs:
        if spec["name"] == "RandomScale":
            spec["interpolation"] = cv2.INTER_NEAREST
    return specs


@PROPERTY
@given(pair=labelled_pairs(), crop=sizes, scale=scales, seed=seeds)
def test_geometric_transforms_keep_image_and_mask_aligned(pair, crop, scale, seed):
    mask, _ = pair
    pipeline = build_pipeline(geometric_preset(crop, scale), IGNORE)
    pipeline.set_random_seed(seed)
    out = pipeline(image=paint(mask), mask=mask)
    np.testing.assert_array_equal(decode(out["image"]), out["mask"])


@PROPERTY
@given(pair=labelled_pairs())
def test_eval_pipeline_keeps_size_labels_and_pixels(pair):
    mask, _ = pair
    out = build_pipeline([], IGNORE)(image=paint(mask), mask=mask)
    np.testing.assert_array_equal(out["mask"], mask)
    np.testing.assert_array_equal(decode(out["image"]), mask)


class InMemory(SegmentationDataset):
    """Samples given as arrays: the base class's __getitem__ is what is under test."""

    def __init__(self, masks: list[np.ndarray | None], images: list[np.ndarray], transform):
        super().__init__(transform, IGNORE)
        self.masks, self.images = masks, images

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int) -> Sample:
        return Sample(self.images[index], self.masks[index], f"s{index}")


@PROPERTY
@given(pairs=st.lists(labelled_pairs(max_side=40), min_size=1, max_size=4), crop=sizes,
       scale=scales, seed=seeds, unlabelled=st.booleans())  # fmt: skip
def test_dataset_items_and_padded_batches(pairs, crop, scale, seed, unlabelled):
    """__getitem__: image (3, H, W) float32, mask (H, W) int64, size = (H, W); collate pads
    unequal items bottom/right (images 0, masks ignore) and keeps each item intact."""
    masks = [m for m, _ in pairs]
    images = [paint(m) for m in masks]
    labels = [None, *masks[1:]] if unlabelled else masks  # an unlabelled image: all ignored
    num_classes = max(c for _, c in pairs)

    train = InMemory(labels, images, build_pipeline(train_preset(crop, scale), IGNORE))
    train.reseed(seed)
    for item in (train[i] for i in range(len(train))):
        assert item["image"].dtype == torch.float32 and item["image"].shape == (3, *crop)
        assert item["mask"].dtype == torch.int64 and item["mask"].shape == crop
        assert item["size"].tolist() == list(crop)
        assert set(item["mask"].unique().tolist()) <= allowed(num_classes)

    items = [InMemory(labels, images, build_pipeline([], IGNORE))[i] for i in range(len(masks))]
    batch = collate_padded(items, IGNORE)
    h, w = max(m.shape[0] for m in masks), max(m.shape[1] for m in masks)
    assert batch["image"].shape == (len(items), 3, h, w) and batch["image"].dtype == torch.float32
    assert batch["mask"].shape == (len(items), h, w) and batch["mask"].dtype == torch.int64
    for i, (label, painted) in enumerate(zip(labels, masks, strict=True)):
        ih, iw = painted.shape
        assert batch["size"][i].tolist() == [ih, iw]
        expected = np.full((ih, iw), IGNORE) if label is None else label
        np.testing.assert_array_equal(batch["mask"][i, :ih, :iw].numpy(), expected)
        assert (batch["mask"][i, ih:] == IGNORE).all() and (
            batch["mask"][i, :, iw:] == IGNORE
        ).all()
        assert (batch["image"][i, :, ih:] == 0).all() and (batch["image"][i, :, :, iw:] == 0).all()
        decoded = decode(batch["image"][i, :, :ih, :iw].permute(1, 2, 0).numpy())
        np.testing.assert_array_equal(decoded, painted)  # the image it was painted from
