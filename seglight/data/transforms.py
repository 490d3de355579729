"""albumentations pipelines built from a readable YAML list, with segmentation-safe defaults.

    train_transforms:
      - {name: RandomResizedCrop, size: [64, 64], scale: [0.5, 1.0]}
      - {name: HorizontalFlip, p: 0.5}
      - {name: OneOf, p: 0.3, transforms: [{name: Blur}, {name: GaussNoise}]}

Why not albumentations' own `A.from_dict`: its format nests `__class_fullname__` records and it
only warns on misspelled arguments. Here a misspelled name or argument is an error naming it,
and every transform that fills masks (pad, rotate, affine, ...) fills them with ignore_index
unless told otherwise: albumentations' default fill_mask=0 would label padding as class 0.
Masks are always resampled with nearest neighbour (albumentations' default for masks).

Images arrive as uint8 (8-bit files) or float32 in [0, 1] (16-bit and float files; see
seglight.data.images): albumentations 2.0 transforms take both, and the final `Normalize` scales
each by its own range (x / 255 or x) before (x - mean) / std, so an 8-bit image and its 16-bit
version give the same input. 8-bit images stay uint8 until then (albumentations' fast paths).

Multi-band images (seglight.data.multiband): mean/std hold one value per channel, and Normalize
refuses images with another channel count (albumentations would broadcast silently). Geometric
transforms work on any number of channels (albumentations 2.0 resamples > 4 channels in chunks
of 4, the same as band by band); the photometric transforms in RGB_ONLY raise on anything but
3 channels in albumentations 2.0.8, so a pipeline whose mean/std do not give 3 channels refuses
them when built, naming them (RandomBrightnessContrast, RandomGamma, GaussNoise, ... work).
"""

import inspect
import math
import random
from collections.abc import Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch

from seglight.errors import ConfigError, DataError, did_you_mean

TransformSpec = dict[str, Any]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Photometric transforms that only take 3-channel (some also 1-channel) images: each raises on
# 4 or more channels in albumentations 2.0.8 (RGBShift: 3 shifts; ToGray/ToSepia: colour).
RGB_ONLY = frozenset(
    "ChromaticAberration CLAHE ColorJitter Equalize HEStain HueSaturationValue ISONoise "
    "PlanckianJitter RandomFog RandomGravel RandomRain RandomSnow RandomSunFlare RGBShift Spatter "
    "ToGray ToSepia".split()
)


def check_normalization(mean: Sequence[float], std: Sequence[float]) -> None:
    """One value per image channel (as many means as stds, at least one), std > 0: else a
    one-line ConfigError. The channel count itself is checked against the images by Normalize."""
    if not len(mean) or len(mean) != len(std):
        raise ConfigError(
            f"data.mean / data.std: one value each per image channel (3 for RGB), got "
            f"{len(mean)} and {len(std)}: {list(mean)}, {list(std)}"
        )
    if not all(s > 0 for s in std):
        raise ConfigError(f"data.std: every value must be > 0, got {list(std)}")


class Normalize(A.ImageOnlyTransform):
    """(x - mean) / std of images scaled to [0, 1] by their type: uint8 / 255, float32 as is
    (A.Normalize divides every image by one max_pixel_value, wrong for one of the two)."""

    def __init__(
        self,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        p: float = 1.0,
    ) -> None:
        super().__init__(p=p)
        self.mean, self.std = tuple(mean), tuple(std)
        self._by_dtype = {  # albumentations' own normalize (a lookup table for uint8)
            np.dtype(np.uint8): A.Normalize(self.mean, self.std, max_pixel_value=255.0),
            np.dtype(np.float32): A.Normalize(self.mean, self.std, max_pixel_value=1.0),
        }
        # (C, 256) float32: albumentations' own output for every uint8 value of every channel,
        # so the planar lookup below gives its very numbers
        ramp = np.broadcast_to(np.arange(256, dtype=np.uint8)[None, :, None], (1, 256, len(mean)))
        lut = self._by_dtype[np.dtype(np.uint8)].apply(np.ascontiguousarray(ramp))
        self._lut = np.ascontiguousarray(lut.reshape(256, len(mean)).T)

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        channels = img.shape[2] if img.ndim == 3 else 1
        if channels != len(self.mean):
            raise DataError(
                f"data.mean / data.std have {len(self.mean)} values, but the images have "
                f"{channels} channels{_band_hint(channels, len(self.mean))}"
            )
        if img.dtype == np.uint8:
            return self._planar_uint8(img)
        normalize = self._by_dtype.get(img.dtype)
        if normalize is None:
            raise TypeError(
                f"Normalize: images must be uint8 or float32 in [0, 1], not {img.dtype}"
            )
        return normalize.apply(img)

    def apply_with_params(self, params: dict[str, Any], *args: Any, **kwargs: Any) -> dict:
        image = kwargs.get("image")
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
            return super().apply_with_params(params, *args, **kwargs)
        # albumentations copies every input and output C-contiguous: the input needs no copy
        # here, and the copy of the output would undo its planar layout
        out = super().apply_with_params(params, *args, **{**kwargs, "image": None})
        return {**out, "image": self.apply(image, **params)}

    def _planar_uint8(self, img: np.ndarray) -> np.ndarray:
        """(H, W, C) uint8 -> (H, W, C) float32 laid out channel by channel in memory: the
        (C, H, W) tensor of the batch is then a free transpose, not a copy (a third of the
        time of this step plus the copy, benchmarks/data.py)."""
        h, w = img.shape[:2]
        out = np.empty((len(self.mean), h, w), np.float32)  # (C, H, W)
        planes = cv2.split(img) if img.ndim == 3 and img.shape[2] > 1 else [img.reshape(h, w)]
        for c, plane in enumerate(planes):  # one pass per channel, written in place
            cv2.LUT(plane, self._lut[c], dst=out[c])
        return out.transpose(1, 2, 0)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("mean", "std")


def _band_hint(channels: int, values: int) -> str:
    hint = ": give one value per channel (seglight.data.audit.channel_stats measures them)"
    if channels != 3 and values == 3:
        hint += ", or select 3 bands with data.bands"
    return hint


def build_transform(
    spec: TransformSpec, ignore_index: int, where: str, channels: int = 3
) -> A.BasicTransform:
    """One albumentations transform from {"name": ClassName, **arguments}; for images of
    `channels` channels (RGB_ONLY transforms refused unless 3)."""
    if not isinstance(spec, dict) or "name" not in spec:
        raise ConfigError(f"{where}: each transform needs a 'name', got {spec!r}")
    args = dict(spec)
    name = args.pop("name")
    cls = getattr(A, str(name), None)
    if not (inspect.isclass(cls) and issubclass(cls, A.BasicTransform | A.BaseCompose)):
        raise ConfigError(
            f"{where}: unknown albumentations transform '{name}'"
            f"{did_you_mean(str(name), _transform_names())}"
        )
    if channels != 3 and name in RGB_ONLY:
        raise ConfigError(
            f"{where}: {name} works on RGB images only, but these have {channels} channels "
            f"(data.mean / data.std values): remove it, or use a per-channel transform "
            f"(RandomBrightnessContrast, RandomGamma, GaussNoise)"
        )
    params = inspect.signature(cls.__init__).parameters
    unknown = [k for k in args if k not in params]
    if unknown:
        raise ConfigError(
            f"{where}: {name} has no argument {', '.join(map(repr, unknown))}"
            f"{did_you_mean(unknown[0], [p for p in params if p != 'self'])}"
        )
    if "transforms" in args:  # OneOf, SomeOf, Sequential: nested lists
        args["transforms"] = [
            build_transform(s, ignore_index, f"{where}.{name}", channels)
            for s in args["transforms"]
        ]
    if "fill_mask" in params and "fill_mask" not in args:
        args["fill_mask"] = ignore_index
    try:
        return cls(**args)
    except (TypeError, ValueError) as e:  # albumentations validates with pydantic (a ValueError)
        detail = " ".join(str(e).split())
        raise ConfigError(f"{where}: bad arguments for {name}: {detail}") from None


def build_pipeline(
    specs: Sequence[TransformSpec] | None,
    ignore_index: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    where: str = "transforms",
) -> A.Compose:
    """Compose the listed transforms, then Normalize (always last, so no pipeline forgets it).

    Input: image (H, W, C) uint8 or float32 in [0, 1], mask (H, W) uint8/int. Output image
    float32 (H', W', C). C = len(mean) (3: RGB): RGB_ONLY transforms are refused for others.
    """
    check_normalization(mean, std)
    transforms = [
        build_transform(s, ignore_index, f"{where}[{i}]", len(mean))
        for i, s in enumerate(specs or [])
    ]
    transforms.append(Normalize(mean=tuple(mean), std=tuple(std)))
    # albumentations keeps its own RNG, untouched by seed_everything and unseeded by default:
    # seed it from torch's seed so a seeded run repeats (workers reseed it, see seed_worker).
    pipeline = A.Compose(transforms)
    seed_pipeline(pipeline, torch.initial_seed() % 2**32)
    return pipeline


def train_preset(
    crop_size: tuple[int, int], scale: tuple[float, float] = (0.5, 2.0), rgb: bool = True
) -> list[TransformSpec]:
    """The usual recipe of the benchmarks (mmsegmentation, torchvision references): random
    rescale by `scale` (on the image's own size), pad to the crop size (masks with ignore_index,
    by build_transform's default), random crop, horizontal flip, photometric jitter (RGB only:
    not `rgb`, multi-band images get the geometric steps alone).

    The first step pads (bottom/right, masks with ignore_index) images with a side so short
    that the smallest scale would round it to 0 pixels: albumentations' RandomScale computes
    int(side * scale) and OpenCV then fails on a 1-pixel-high image at scale 0.5. A no-op for
    any image with sides >= 1 / scale[0]."""
    h, w = crop_size
    min_side = math.ceil(1 / scale[0])
    min_side += min_side * scale[0] < 1  # float rounding: int(min_side * scale) must be >= 1
    preset = [
        {
            "name": "PadIfNeeded",
            "min_height": min_side,
            "min_width": min_side,
            "position": "top_left",
        },
        {"name": "RandomScale", "scale_limit": [scale[0] - 1, scale[1] - 1], "p": 1.0},
        {"name": "PadIfNeeded", "min_height": h, "min_width": w, "position": "top_left"},
        {"name": "RandomCrop", "height": h, "width": w},
        {"name": "HorizontalFlip", "p": 0.5},
    ]
    return preset + [dict(COLOR_JITTER)] if rgb else preset


COLOR_JITTER: TransformSpec = {
    "name": "ColorJitter",
    "brightness": 0.25,
    "contrast": 0.25,
    "saturation": 0.25,
    "hue": 0.0,
    "p": 0.5,
}


def _transform_names() -> list[str]:
    return [n for n, c in vars(A).items() if inspect.isclass(c) and issubclass(c, A.BasicTransform)]


def apply_pipeline(
    pipeline: A.Compose, image: np.ndarray, mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    out = pipeline(image=image, mask=mask)
    return out["image"], out["mask"]


def seed_pipeline(pipeline: A.BaseCompose, seed: int) -> None:
    """Seed every transform of an albumentations pipeline, each with its own stream from `seed`.

    Compose.set_random_seed(seed) gives all transforms the very same seed, so transforms that
    draw alike decide alike: HorizontalFlip(p=0.5) and VerticalFlip(p=0.5) would always flip
    together (albumentations 2.0.8). Here the n-th transform (depth first) gets seed (seed, n).
    Each node is set as its own set_random_seed would (seed, random_generator, py_random) but
    alone: a Compose's set_random_seed also reseeds all its children, which would be seeded
    twice (this runs for every training sample: half the cost, benchmarks/data.py).
    """
    transforms = [pipeline]
    n = 0
    while transforms:
        t = transforms.pop(0)
        node_seed = int(np.random.SeedSequence([seed, n]).generate_state(1)[0])
        t.seed = node_seed
        t.random_generator = np.random.default_rng(node_seed)
        t.py_random = random.Random(node_seed)
        n += 1
        transforms[:0] = [c for c in getattr(t, "transforms", []) if hasattr(c, "set_random_seed")]
