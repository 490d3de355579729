"""Per-channel mean / std of images in the [0, 1] units Normalize works in (uint8 / 255; 16-bit
and float files as decoded by seglight.data.images, already in [0, 1]): the values for data.mean /
data.std. `seglight audit` measures them during its one pass over a split's files
(seglight.data.audit); `channel_stats` reads a list of files for them.

Each image gives its own float64 sums (pixels, sum of x, sum of x^2 per channel; exact integer
sums for 8-bit pixels); the images' sums are then added in a fixed order, so threads give the
same result as one reader.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seglight.data.images import read_image
from seglight.errors import DataError

_BLOCK = 1 << 20  # pixels converted at a time: bounded memory for large images
_LEVELS = np.arange(256, dtype=np.int64)


@dataclass
class PixelSums:
    """Per-channel sums of one image (or of several, added): pixel count, sum of x and of x^2
    over the pixels, x in [0, 1] units (sums and squares: (C,) float64), image count."""

    pixels: int
    sums: np.ndarray
    squares: np.ndarray
    images: int = 1

    @property
    def channels(self) -> int:
        return len(self.sums)

    def __add__(self, other: "PixelSums") -> "PixelSums":
        return PixelSums(
            self.pixels + other.pixels,
            self.sums + other.sums,
            self.squares + other.squares,
            self.images + other.images,
        )

    def mean_std(self) -> tuple[list[float], list[float]]:
        """Per-channel (mean, std) over all pixels (population std, as Normalize wants)."""
        mean = self.sums / self.pixels
        std = np.sqrt(np.maximum(self.squares / self.pixels - np.square(mean), 0.0))
        return mean.tolist(), std.tolist()


def pixel_sums(pixels: np.ndarray) -> PixelSums:
    """PixelSums of (H, W, C) pixels: uint8 (divided by 255; the sums are exact, from per-channel
    histograms) or float in [0, 1] (summed in float64)."""
    values = pixels.reshape(-1, pixels.shape[-1] if pixels.ndim == 3 else 1)
    count, channels = values.shape
    if values.dtype == np.uint8:
        hist = np.zeros((channels, 256), np.int64)
        for start in range(0, count, _BLOCK):
            block = values[start : start + _BLOCK]
            for c in range(channels):
                hist[c] += np.bincount(block[:, c], minlength=256)
        sums = (hist @ _LEVELS).astype(np.float64) / 255.0
        squares = (hist @ np.square(_LEVELS)).astype(np.float64) / 255.0**2
        return PixelSums(count, sums, squares)
    sums, squares = np.zeros(channels), np.zeros(channels)
    for start in range(0, count, _BLOCK):
        block = values[start : start + _BLOCK].astype(np.float64)
        sums += block.sum(0)
        squares += np.square(block).sum(0)
    return PixelSums(count, sums, squares)


def channels_entry(sums: PixelSums | None) -> dict:
    """The audit report's "channels": channel count, per-channel mean and std in [0, 1] units
    (full precision), and the images and pixels they were measured on (None: no image)."""
    if sums is None:
        return {"count": None, "mean": None, "std": None, "images": 0, "pixels": 0}
    mean, std = sums.mean_std()
    return {
        "count": sums.channels,
        "mean": mean,
        "std": std,
        "images": sums.images,
        "pixels": sums.pixels,
    }


def channel_stats(
    paths: Sequence[str | Path], bands: Sequence[int] | None = None, exif_orientation: bool = True
) -> tuple[list[float], list[float]]:
    """Per-channel (mean, std) over all pixels of the images `paths` read with `bands`, in the
    [0, 1] units Normalize works in (uint8 / 255): what data.mean / data.std should be."""
    total: PixelSums | None = None
    for path in paths:
        sums = pixel_sums(read_image(path, exif_orientation, bands))
        if total is not None and total.channels != sums.channels:
            raise DataError(
                f"{path}: has {sums.channels} channels, the images before it {total.channels}"
            )
        total = sums if total is None else total + sums
    if total is None or not total.pixels:
        raise DataError("channel_stats: no pixels (no image paths given)")
    return total.mean_std()
