"""albumentations pipelines from YAML lists: built as written, safe for masks, errors named."""

import numpy as np
import pytest
import torch

from seglight.data.transforms import build_pipeline
from seglight.errors import ConfigError


def run(specs, image, mask, ignore_index=255):
    out = build_pipeline(specs, ignore_index)(image=image, mask=mask)
    return out["image"], out["mask"]


def test_pipeline_as_written_then_normalize():
    image = np.full((20, 30, 3), 128, np.uint8)
    mask = np.zeros((20, 30), np.uint8)
    out_image, out_mask = run([{"name": "Resize", "height": 10, "width": 15}], image, mask)
    assert out_image.shape == (10, 15, 3) and out_image.dtype == np.float32
    assert out_mask.shape == (10, 15)
    assert abs(float(out_image.mean())) < 1  # 128 normalized with ImageNet stats is ~0.1


def test_masks_are_resampled_nearest_so_no_new_labels_appear():
    rng = np.random.default_rng(0)
    mask = rng.choice(np.array([0, 3, 7, 255], np.uint8), (33, 41))
    image = rng.integers(0, 255, (33, 41, 3), dtype=np.uint8)
    specs = [
        {"name": "RandomScale", "scale_limit": [-0.5, 1.0], "p": 1.0},
        {"name": "Rotate", "limit": 30, "p": 1.0},
    ]
    for _ in range(5):
        _, out = run(specs, image, mask)
        assert set(np.unique(out)) <= {0, 3, 7, 255}


def test_padding_fills_masks_with_ignore_index_by_default():
    image = np.zeros((10, 10, 3), np.uint8)
    mask = np.ones((10, 10), np.uint8)
    _, out = run(
        [{"name": "PadIfNeeded", "min_height": 16, "min_width": 16, "position": "top_left"}],
        image,
        mask,
    )
    assert (out[:10, :10] == 1).all() and (out[10:] == 255).all() and (out[:, 10:] == 255).all()
    _, out = run(
        [
            {
                "name": "PadIfNeeded",
                "min_height": 16,
                "min_width": 16,
                "fill_mask": 0,
                "position": "top_left",
            }
        ],
        image,
        mask,
    )
    assert (out[10:] == 0).all()  # an explicit fill_mask wins


def test_nested_one_of():
    specs = [{"name": "OneOf", "p": 1.0, "transforms": [{"name": "HorizontalFlip", "p": 1.0}]}]
    image = np.zeros((4, 4, 3), np.uint8)
    mask = np.arange(16, dtype=np.uint8).reshape(4, 4)
    _, out = run(specs, image, mask)
    np.testing.assert_array_equal(out, mask[:, ::-1])


@pytest.mark.parametrize(
    ("specs", "match"),
    [
        (
            [{"name": "HorizontalFlp"}],
            r"\[0\]: unknown albumentations transform 'HorizontalFlp' "
            r"\(did you mean 'HorizontalFlip'\?\)",
        ),
        (
            [{"name": "HorizontalFlip", "pp": 0.5}],
            r"HorizontalFlip has no argument 'pp' "
            r"\(did you mean 'p'\?\)",
        ),
        ([{"p": 0.5}], "needs a 'name'"),
        ([{"name": "Resize", "height": "tall", "width": 3}], "bad arguments for Resize"),
    ],
)
def test_bad_transform_specs_are_named(specs, match):
    with pytest.raises(ConfigError, match=match):
        build_pipeline(specs, 255)


def test_transforms_of_a_pipeline_draw_independently():
    # albumentations' Compose(seed=s) gives every transform the same seed, so two flips with
    # p=0.5 would always flip together; build_pipeline gives each its own stream.
    torch.manual_seed(0)
    pipeline = build_pipeline(
        [{"name": "HorizontalFlip", "p": 0.5}, {"name": "VerticalFlip", "p": 0.5}],
        255, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), "data.train_transforms",
    )  # fmt: skip
    mask = np.arange(4, dtype=np.uint8).reshape(2, 2)  # [[0, 1], [2, 3]]
    image = np.zeros((2, 2, 3), dtype=np.uint8)
    # The top-left value tells which flips happened: 0 none, 1 horizontal, 2 vertical, 3 both.
    seen = {int(pipeline(image=image, mask=mask)["mask"][0, 0]) for _ in range(40)}
    assert seen == {0, 1, 2, 3}


def test_seeding_each_node_alone_equals_albumentations_own_seeding():
    """seed_pipeline sets each node as its own set_random_seed would, without a Compose's
    reseeding of its children: every node ends in the state set_random_seed((seed, n)) gives."""
    import random as pyrandom

    from seglight.data.transforms import build_pipeline, seed_pipeline, train_preset

    pipeline = build_pipeline(train_preset((32, 32)) + [{"name": "OneOf", "transforms": [
        {"name": "Blur"}, {"name": "GaussNoise"}]}], 255)  # fmt: skip
    seed_pipeline(pipeline, 1234)
    nodes, queue = [], [pipeline]
    while queue:
        node = queue.pop(0)
        nodes.append(node)
        queue[:0] = [c for c in getattr(node, "transforms", []) if hasattr(c, "set_random_seed")]
    assert len(nodes) > 8
    for n, node in enumerate(nodes):
        expected = int(np.random.SeedSequence([1234, n]).generate_state(1)[0])
        reference = np.random.default_rng(expected)
        assert node.seed == expected
        assert node.random_generator.bit_generator.state == reference.bit_generator.state
        assert node.py_random.getstate() == pyrandom.Random(expected).getstate()


@pytest.mark.parametrize("channels", [1, 3, 5])
def test_normalize_gives_albumentations_numbers_laid_out_for_the_batch(channels):
    """uint8 images: exactly A.Normalize's values (seglight looks up its table plane by plane),
    after crops and flips (views albumentations would copy); the (H, W, C) result is the
    transposed view of a C-contiguous (C, H, W) array, so the batch tensor needs no copy."""
    import albumentations as A

    mean = tuple(np.linspace(0.3, 0.6, channels))
    std = tuple(np.linspace(0.2, 0.3, channels))
    rng = np.random.default_rng(channels)
    image = rng.integers(0, 256, (40, 70, channels), dtype=np.uint8)
    mask = np.zeros((40, 70), np.uint8)
    reference = A.Normalize(mean, std, max_pixel_value=255.0)
    specs = [{"name": "Crop", "x_min": 3, "y_min": 5, "x_max": 50, "y_max": 35},
             {"name": "HorizontalFlip", "p": 1.0}]  # fmt: skip
    for steps in (specs[:1], specs):
        out = build_pipeline(steps, 255, mean, std)(image=image, mask=mask)
        expected = reference.apply(np.ascontiguousarray(image[5:35, 3:50]))
        expected = expected[:, ::-1] if len(steps) == 2 else expected
        assert out["image"].dtype == np.float32 and out["image"].shape == (30, 47, channels)
        np.testing.assert_array_equal(out["image"], expected)
        assert out["image"].transpose(2, 0, 1).flags.c_contiguous
        assert out["mask"].shape == (30, 47)
    floats = build_pipeline([], 255, mean, std)(image=image.astype(np.float32) / 255, mask=mask)
    np.testing.assert_allclose(floats["image"], reference.apply(image), rtol=1e-5, atol=1e-5)
