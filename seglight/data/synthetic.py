"""The built-in dataset: procedurally generated shapes, no download, no files.

Each image is a pure function of (seed, split, index): the same on every machine, in every worker,
in any order. Colour is a cue but not the answer: each class's objects take hues within 35 degrees
of the class's own (classes are 90 degrees apart) with any saturation and brightness, in solid,
striped or speckled textures, while the background (a colour gradient, thin lines and blobs, pixel
noise) takes any colour, so a model must use extent and borders too. Objects overlap. The band
of `border_ignore` pixels on each side of every object border is labelled ignore_index, as
PASCAL VOC labels its boundaries. With `task: binary` the classes are background and "shape":
every object is foreground, the same images and ignore bands. With `task: multilabel` the labels
are the four shapes, objects are drawn translucent (alpha OVERLAP_ALPHA) instead of occluding,
so where two overlap the pixel carries both labels and shows both colours; each label's mask has
its own ignore band along its own borders.
"""

import cv2
import numpy as np

from seglight.data.base import SegmentationDataModule, Split
from seglight.data.dataset import Sample, SegmentationDataset
from seglight.data.transforms import TransformSpec
from seglight.errors import ConfigError

CLASS_NAMES = ["background", "circle", "square", "triangle", "cross"]
CLASS_HUES = [0, 0, 90, 180, 270]  # degrees; index 0 (background) unused
PALETTE = [[0, 0, 0], [230, 25, 75], [60, 180, 75], [0, 130, 200], [255, 225, 25]]
SPLIT_IDS = {"train": 0, "val": 1, "test": 2, "predict": 3}
BINARY_NAMES = ["background", "shape"]
MULTILABEL_NAMES = CLASS_NAMES[1:]  # one label per shape; no background label
OVERLAP_ALPHA = 0.6  # opacity of a multi-label object over what lies beneath
# Extra bands (extra_bands > 0): the level of each class's objects (background: noise).
BAND_LEVELS = [0.0, 0.15, 0.38, 0.62, 0.85]


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    """Vertices (N, 2) int32 of a shape of radius r centred at (cx, cy), rotated by angle."""
    if kind == "circle":
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        pts = np.stack([np.cos(t), np.sin(t)], 1)
    elif kind == "square":
        pts = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]]) * 0.78
    elif kind == "triangle":
        t = np.array([0.0, 2 * np.pi / 3, 4 * np.pi / 3]) - np.pi / 2
        pts = np.stack([np.cos(t), np.sin(t)], 1) * 1.1
    else:  # cross: a plus sign with arms a third of its width
        a, b = 1.0, 0.33
        pts = np.array(
            [
                [b, a],
                [-b, a],
                [-b, b],
                [-a, b],
                [-a, -b],
                [-b, -b],
                [-b, -a],
                [b, -a],
                [b, -b],
                [a, -b],
                [a, b],
                [b, b],
            ]
        )
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return np.round(pts @ rot.T * r + [cx, cy]).astype(np.int32)


def _class_colour(rng: np.random.Generator, cls: int) -> np.ndarray:
    """An RGB colour (3,) float whose hue lies within +-35 degrees of the class's own hue
    (classes 90 degrees apart); saturation and brightness vary freely within a range."""
    hue = (CLASS_HUES[cls] + rng.uniform(-35, 35)) % 360
    hsv = np.array(
        [[[hue / 2, rng.uniform(110, 255), rng.uniform(90, 255)]]], np.uint8
    )  # OpenCV hue: 0-180
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def _texture(rng: np.random.Generator, h: int, w: int, base: np.ndarray) -> np.ndarray:
    """(h, w, 3) float fill: solid `base`, stripes of `base` and a darker shade, or speckles."""
    kind = rng.integers(3)
    if kind == 0:
        return np.broadcast_to(base, (h, w, 3)).astype(np.float32)
    if kind == 1:
        other = base * rng.uniform(0.35, 0.7)
        period = rng.integers(3, 7)
        yy, xx = np.mgrid[0:h, 0:w]
        direction = rng.uniform(0, np.pi)
        phase = (np.cos(direction) * xx + np.sin(direction) * yy) // period % 2
        return np.where(phase[..., None] == 0, base, other).astype(np.float32)
    return (base + rng.normal(0, 25, (h, w, 3))).astype(np.float32)


def generate(
    rng: np.random.Generator,
    size: int,
    min_objects: int,
    max_objects: int,
    noise: float,
    border: int,
    ignore_index: int = 255,
    extra_bands: int = 0,
    multilabel: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """One (image, mask (size, size) uint8) pair (`multilabel`: mask (size, size, 4), 0/1 per
    shape, objects translucent instead of occluding): image (size, size, 3) uint8, or with
    `extra_bands` (size, size, 3 + extra_bands) float32 in [0, 1], where each extra band holds a
    class-specific level inside objects (plus noise) and uniform noise elsewhere, and the
    objects' colours no longer follow their class: the extra bands carry the class."""
    # Background: a colour gradient in a random direction.
    yy, xx = np.mgrid[0:size, 0:size] / size
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    t = rng.uniform(-1, 1) * xx + rng.uniform(-1, 1) * yy
    t = (t - t.min()) / (np.ptp(t) + 1e-6)
    image = (c0 + (c1 - c0) * t[..., None]).astype(np.float32)
    # Clutter that is background too: thin lines and small blobs of any colour.
    for _ in range(rng.integers(2, 7)):
        p, q = rng.integers(0, size, 2), rng.integers(0, size, 2)
        colour = tuple(float(c) for c in rng.uniform(0, 255, 3))
        if rng.random() < 0.6:
            cv2.line(image, tuple(map(int, p)), tuple(map(int, q)), colour, 1)
        else:
            cv2.circle(image, tuple(map(int, p)), int(rng.integers(1, 3)), colour, -1)
    mask = np.zeros((size, size), np.uint8)
    layers = np.zeros((size, size, len(MULTILABEL_NAMES)), np.uint8)  # multilabel: 0/1 per shape
    for _ in range(rng.integers(min_objects, max_objects + 1)):
        cls = int(rng.integers(1, len(CLASS_NAMES)))
        r = rng.uniform(0.1, 0.24) * size
        cx, cy = rng.uniform(0.1, 0.9, 2) * size
        shape = np.zeros((size, size), np.uint8)
        cv2.fillPoly(shape, [_polygon(CLASS_NAMES[cls], cx, cy, r, rng.uniform(0, 2 * np.pi))], 1)
        inside = shape.astype(bool)
        hue_of = cls if not extra_bands else int(rng.integers(1, len(CLASS_NAMES)))
        fill = _texture(rng, size, size, _class_colour(rng, hue_of))[inside]
        if multilabel:  # translucent: an overlap shows (and carries) both shapes
            image[inside] = OVERLAP_ALPHA * fill + (1 - OVERLAP_ALPHA) * image[inside]
            layers[inside, cls - 1] = 1
        else:
            image[inside] = fill
        mask[inside] = cls  # later objects occlude earlier ones
    image = cv2.GaussianBlur(image, (3, 3), 0.6)
    image = np.clip(image + rng.normal(0, noise, image.shape), 0, 255).astype(np.uint8)
    if multilabel:
        mask = layers
    if border > 0:  # pixels within `border` of a label change (per label: of its own mask)
        kernel = np.ones((2 * border + 1, 2 * border + 1), np.uint8)
        edge = cv2.dilate(mask, kernel) != cv2.erode(mask, kernel)
        mask[edge] = ignore_index
    if extra_bands:
        return _with_extra_bands(rng, image, mask, extra_bands), mask
    return image, mask


def _with_extra_bands(
    rng: np.random.Generator, image: np.ndarray, mask: np.ndarray, count: int
) -> np.ndarray:
    """(H, W, 3 + count) float32 in [0, 1]: the RGB image / 255, then `count` bands holding,
    inside objects of class c, the level BAND_LEVELS[c] (shifted per band) plus noise, and
    uniform noise on the background and the ignore band."""
    rgb = image.astype(np.float32) / 255.0
    levels = np.asarray(BAND_LEVELS, np.float32)  # (C,) one level per class; background unused
    bands = []
    for j in range(count):
        noise = rng.normal(0.0, 0.06, mask.shape).astype(np.float32)
        band = rng.uniform(0.0, 1.0, mask.shape).astype(np.float32)
        objects = (mask > 0) & (mask < len(CLASS_NAMES))
        shifted = (levels[mask[objects]] + 0.1 * j) % 1.0  # each band its own level per class
        band[objects] = shifted + noise[objects]
        bands.append(np.clip(band, 0.0, 1.0))
    return np.concatenate([rgb, np.stack(bands, -1)], -1)


class SyntheticDataset(SegmentationDataset):
    """`length` generated samples of one split; sample i is generated from (seed, split, i)."""

    def __init__(
        self,
        split: Split,
        length: int,
        seed: int,
        options: dict,
        transform,
        ignore_index=255,
        binary: bool = False,
    ):
        super().__init__(transform, ignore_index)
        self.split, self.length, self.seed, self.options = split, length, seed, options
        self.binary = binary  # every object class -> 1 (foreground); ignore stays
        self.multilabel = bool(options.get("multilabel"))
        self.num_labels = len(MULTILABEL_NAMES) if self.multilabel else None
        self.bands: list[int] | None = None  # channels kept, in order; None = all

    def __len__(self) -> int:
        return self.length

    def load(self, index: int) -> Sample:
        if not 0 <= index < self.length:
            raise IndexError(index)
        rng = np.random.default_rng([self.seed, SPLIT_IDS[self.split], index])
        image, mask = generate(rng, ignore_index=self.ignore_index, **self.options)
        if self.binary:
            mask = np.where(mask == self.ignore_index, mask, mask > 0).astype(np.uint8)
        if self.bands is not None:
            image = np.ascontiguousarray(image[..., self.bands])
        return Sample(image, mask, f"{self.split}_{index:05d}")


class SyntheticDataModule(SegmentationDataModule):
    """Generated shapes (circle, square, triangle, cross) on cluttered backgrounds; with
    `task: binary`, shape vs background; with `task: multilabel`, one label per shape, the
    shapes translucent so that they overlap.

    Args:
        image_size: height and width of every image, in pixels.
        train_size: number of training images.
        val_size: number of validation images.
        test_size: number of test images.
        predict_size: number of images for `predict`.
        min_objects: fewest objects per image.
        max_objects: most objects per image.
        noise: standard deviation of the Gaussian pixel noise (0-255 scale).
        border_ignore: width in pixels of the ignore band on each side of object borders.
        seed: seed of the generator; the data depends on nothing else.
        extra_bands: bands beyond RGB (a multispectral variant): each holds a level per class
            inside objects, and colours no longer follow the class; images become float in
            [0, 1] with 3 + extra_bands channels (mean/std need as many values).
        bands: channels to keep, in order (e.g. [0, 1, 2]: RGB only); null = all.
        **kwargs: loader and transform options of SegmentationDataModule.
    """

    class_names = CLASS_NAMES
    palette = PALETTE

    def __init__(
        self,
        image_size: int = 64,
        train_size: int = 1024,
        val_size: int = 128,
        test_size: int = 256,
        predict_size: int = 8,
        min_objects: int = 2,
        max_objects: int = 5,
        noise: float = 10.0,
        border_ignore: int = 1,
        seed: int = 0,
        extra_bands: int = 0,
        bands: list[int] | None = None,
        **kwargs,
    ) -> None:
        if extra_bands < 0:
            raise ConfigError(f"data.extra_bands: must be >= 0, got {extra_bands}")
        channels = 3 + extra_bands
        if bands is not None and (not bands or not all(0 <= b < channels for b in bands)):
            raise ConfigError(f"data.bands: indices in [0, {channels}) of the {channels} "
                              f"generated channels, got {bands}")  # fmt: skip
        self.extra_bands, self.bands = extra_bands, list(bands) if bands is not None else None
        if image_size < 16:
            raise ConfigError(f"data.image_size: must be >= 16, got {image_size}")
        sizes = {"train": train_size, "val": val_size, "test": test_size, "predict": predict_size}
        for split, n in sizes.items():
            if n < 1:
                raise ConfigError(f"data.{split}_size: must be >= 1 image, got {n}")
        if not noise >= 0:  # also refuses nan
            raise ConfigError(f"data.noise: must be >= 0 (a standard deviation), got {noise}")
        if seed < 0 or border_ignore < 0:
            key, value = ("seed", seed) if seed < 0 else ("border_ignore", border_ignore)
            raise ConfigError(f"data.{key}: must be >= 0, got {value}")
        if not 0 <= min_objects <= max_objects:
            raise ConfigError(
                f"data.min_objects: need 0 <= min_objects <= max_objects, "
                f"got {min_objects} and {max_objects}"
            )
        self.image_size = image_size
        self.sizes = sizes
        self.seed = seed
        self.options = dict(
            size=image_size,
            min_objects=min_objects,
            max_objects=max_objects,
            noise=noise,
            border=border_ignore,
            extra_bands=extra_bands,
        )
        super().__init__(**kwargs)
        if len(self.mean) != self.in_channels:
            raise ConfigError(
                f"data.mean / data.std: {len(self.mean)} values for {self.in_channels} channels "
                f"(3 + data.extra_bands, after data.bands): give one value per channel"
            )
        if self.task == "binary":
            self.class_names, self.palette = BINARY_NAMES, PALETTE[:2]
        if self.task == "multilabel":
            if extra_bands:
                raise ConfigError("data.extra_bands: the multilabel variant has RGB images only; "
                                  "set data.extra_bands: 0")  # fmt: skip
            self.class_names, self.palette = MULTILABEL_NAMES, PALETTE[1:]
            self.options["multilabel"] = True

    @property
    def in_channels(self) -> int:
        return len(self.bands) if self.bands is not None else 3 + self.extra_bands

    def default_train_transforms(self) -> list[TransformSpec]:
        return [
            {"name": "HorizontalFlip", "p": 0.5},
            {"name": "VerticalFlip", "p": 0.5},
            {"name": "RandomRotate90", "p": 0.5},
        ]

    def build_dataset(self, split: Split, transform) -> SyntheticDataset:
        dataset = SyntheticDataset(split, self.sizes[split], self.seed, self.options, transform,
                                   self.ignore_index, binary=self.task == "binary")  # fmt: skip
        dataset.bands = self.bands
        return dataset
