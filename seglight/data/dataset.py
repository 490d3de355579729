"""SegmentationDataset: (image, mask) samples -> transformed tensors in the batch-dict format."""

import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import albumentations as A
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, get_worker_info

from seglight.data.images import check_same_size, decode_image
from seglight.data.io import LabelMap, read_mask_values
from seglight.data.sampling import SampleKey
from seglight.data.transforms import seed_pipeline
from seglight.errors import DataError


@dataclass
class Sample:
    """A decoded sample: image (H, W, C), uint8 or float32 in [0, 1] (see
    seglight.data.images), mask (H, W) uint8 class ids, or for multi-label data (H, W, L) uint8
    0/1 per label (None when the split has no labels, e.g. prediction on new images; 255 =
    ignore_index where unlabelled), and a name for output files."""

    image: np.ndarray
    mask: np.ndarray | None
    name: str


class SegmentationDataset(Dataset):
    """Base of every dataset: subclasses implement `__len__` and `load(index) -> Sample`.

    __getitem__ returns {"image": (C, H, W) float32, "mask": (H, W) int64, or (L, H, W) int64
    when `num_labels` is set (multi-label: 0/1 per label), all ignore_index when unlabelled,
    "name": str, "size": (2,) int64 = (H, W) after transforms}.
    """

    def __init__(self, transform: A.Compose, ignore_index: int = 255) -> None:
        self.transform = transform
        self.ignore_index = ignore_index
        self.num_labels: int | None = None  # multi-label data: L, masks (H, W, L); else None

    def load(self, index: int) -> Sample:
        raise NotImplementedError

    def reseed(self, seed: int) -> None:
        """Reseed the augmentation pipeline's own RNGs (albumentations ignores global seeds)."""
        seed_pipeline(self.transform, seed)

    def __getitem__(self, index: "int | SampleKey") -> dict:
        """Sample `index`; given a SampleKey (index, seed) from the training sampler, its
        randomness (augmentations, and python/numpy/torch RNGs while loading) comes from `seed`
        alone, whichever process loads it and whatever it loaded before."""
        if isinstance(index, SampleKey):
            with _seeded_rngs(index.seed):
                self.reseed(index.seed)
                return self._get(index.index)
        return self._get(index)

    def _get(self, index: int) -> dict:
        return self.transform_sample(self.load(index))

    def transform_seeded(self, sample: Sample, seed: int) -> dict:
        """transform_sample with its randomness from `seed` alone (as a SampleKey's): for
        samples decoded elsewhere, e.g. streamed (seglight.data.streaming)."""
        with _seeded_rngs(seed):
            self.reseed(seed)
            return self.transform_sample(sample)

    def transform_sample(self, sample: Sample) -> dict:
        """A decoded sample -> the batch-dict item (the transform applied, masks checked)."""
        mask = sample.mask
        labels = () if self.num_labels is None else (self.num_labels,)
        if mask is None:
            mask = np.full((*sample.image.shape[:2], *labels), self.ignore_index, dtype=np.uint8)
        elif mask.shape[2:] != labels:
            raise DataError(_mask_shape_error(sample.name, mask.shape, labels))
        # albumentations resamples an (H, W, L) mask channel by channel, like the image
        out = self.transform(image=sample.image, mask=mask)
        image = torch.from_numpy(np.ascontiguousarray(out["image"].transpose(2, 0, 1)))
        mask = torch.from_numpy(
            np.ascontiguousarray(np.moveaxis(out["mask"], -1, 0) if labels else out["mask"])
        ).long()
        return {
            "image": image.float(),
            "mask": mask,
            "name": sample.name,
            "size": torch.tensor(mask.shape[-2:], dtype=torch.long),
        }


def _mask_shape_error(name: str, shape: tuple[int, ...], labels: tuple[int, ...]) -> str:
    if labels:
        return (f"{name}: mask of shape {shape} for data.task: multilabel, which needs "
                f"(H, W, {labels[0]}): one 0/1 channel per class")  # fmt: skip
    return (f"{name}: mask of shape {shape} has a channel per label, but data.task is not "
            f"multilabel: set data.task: multilabel, or give one class id per pixel")  # fmt: skip


class FileDataset(SegmentationDataset):
    """Samples read from (image path, mask path or None) pairs: each file decoded once, mask
    values mapped to training ids by `label_map` and checked, sizes checked.

    Args:
        pairs: (image file, mask file) per sample; mask None for unlabelled images.
        label_map: stored mask value -> training id, and which values are valid.
        transform: the albumentations pipeline.
        palette: for colour-coded masks, the colour of each class (enables "RGB" masks).
        ignore_colour: for colour-coded masks, the colour of unlabelled pixels.
        exif_orientation: apply photos' EXIF orientation (see seglight.data.images); false =
            the stored pixels, for masks drawn on them.
    """

    def __init__(
        self,
        pairs: Sequence[tuple[Path, Path | None]],
        label_map: LabelMap,
        transform: A.Compose,
        palette: list[list[int]] | None = None,
        ignore_colour: list[int] | None = None,
        exif_orientation: bool = True,
    ) -> None:
        super().__init__(transform, label_map.ignore_index)
        self.exif_orientation = exif_orientation
        self.bands: list[int] | None = None  # channels kept, in order (data.bands); None = all
        self.pairs = list(pairs)
        self.label_map = label_map
        self.palette = palette
        self.ignore_colour = ignore_colour

    def __len__(self) -> int:
        return len(self.pairs)

    def read_mask(self, path: Path) -> np.ndarray:
        """(H, W) uint8 training ids of one mask file (colour-coded masks: colours -> ids
        first, then the same validity check)."""
        raw = read_mask_values(path, self.palette, self.ignore_colour, self.ignore_index)
        return self.label_map.apply(raw, path)

    def load(self, index: int) -> Sample:
        image_path, mask_path = self.pairs[index]
        decoded = decode_image(image_path, self.exif_orientation, self.bands)
        mask = None
        if mask_path is not None:
            mask = self.read_mask(mask_path)
            check_same_size(decoded, mask, image_path, mask_path)
        return Sample(decoded.pixels, mask, Path(image_path).stem)


@contextmanager
def _seeded_rngs(seed: int) -> Iterator[None]:
    """Seed python's, numpy's and torch's (CPU) global RNGs for the body, then put back their
    states: without workers the body runs in the training process, whose RNG streams (dropout)
    must not depend on data loading. torch.random.fork_rng would also fork every CUDA device.
    In a DataLoader worker nothing else draws from them, and every sample seeds them anew: the
    states are left as they are (numpy's save + restore alone is ~0.1 ms per sample)."""
    states = None
    if get_worker_info() is None:
        states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    random.seed(seed)
    np.random.seed(seed)
    torch.random.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        if states is not None:
            random.setstate(states[0])
            np.random.set_state(states[1])
            torch.set_rng_state(states[2])


def collate_padded(samples: list[dict], ignore_index: int = 255) -> dict:
    """Stack samples; images of unequal size are padded bottom/right to the largest (images
    with 0, masks with ignore_index so padding never counts). "size" keeps each one's own."""
    h = max(int(s["size"][0]) for s in samples)
    w = max(int(s["size"][1]) for s in samples)

    def pad(t: torch.Tensor, value: float) -> torch.Tensor:
        return F.pad(t, (0, w - t.shape[-1], 0, h - t.shape[-2]), value=value)

    return {
        "image": torch.stack([pad(s["image"], 0.0) for s in samples]),
        "mask": torch.stack([pad(s["mask"], ignore_index) for s in samples]),
        "name": [s["name"] for s in samples],
        "size": torch.stack([s["size"] for s in samples]),
    }
