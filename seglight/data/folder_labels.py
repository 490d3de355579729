"""A folder dataset's class table and stored mask values: classes from the config or a YAML/JSON
file, `mask_map` checked into a LabelMap, the pixel count of each stored value over a split
(what `label_check` reads); and its dataset, which reads the chosen `bands` of each image."""

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import yaml

from seglight.data.base import default_num_workers
from seglight.data.dataset import FileDataset, Sample
from seglight.data.images import DecodedImage, check_same_size, decode_image
from seglight.data.io import LabelMap, read_mask_values
from seglight.errors import ConfigError, DataError


def load_classes(
    classes: list[str] | None, classes_file: str | None, root: Path
) -> tuple[list[str], list[list[int]] | None]:
    if (classes is None) == (classes_file is None):
        raise ConfigError("data: give either data.classes or data.classes_file")
    if classes is not None:
        names, colors = list(classes), None
    else:
        path = Path(classes_file).expanduser()
        path = path if path.is_absolute() or path.exists() else root / path
        if not path.is_file():
            raise ConfigError(f"data.classes_file: {path} not found")
        text = path.read_text()
        entries = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        if not isinstance(entries, list) or not entries:
            raise ConfigError(f"data.classes_file: {path} must hold a list of classes")
        if all(isinstance(e, dict) for e in entries):
            names = [str(e["name"]) for e in entries]
            colors = (
                [list(e["color"]) for e in entries] if all("color" in e for e in entries) else None
            )
        else:
            names, colors = [str(e) for e in entries], None
    if len(names) < 2 or len(set(names)) != len(names):
        raise ConfigError(f"data.classes: need 2 or more distinct names, got {names}")
    return names, colors


def label_map_of(
    mask_map: dict[int, int] | None, num_classes: int, ignore_index: int, mask_format: str
) -> LabelMap:
    """The LabelMap of `mask_map` (stored value -> class index or ignore_index), checked; the
    stored value ignore_index stays unlabelled unless the map gives it a class."""
    if mask_map is None:
        return LabelMap.identity(num_classes, ignore_index)
    if mask_format == "rgb":
        raise ConfigError(
            "data.mask_map: applies to index masks; rgb masks map colours to classes through "
            "data.colors (set data.mask_map: null)"
        )
    if not mask_map:
        raise ConfigError("data.mask_map: empty; give stored value -> class, e.g. {0: 0, 255: 1}")
    for value, index in mask_map.items():
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
            raise ConfigError(
                f"data.mask_map: key {value!r} is not a stored 8-bit mask value (0-255)"
            )
        if (
            isinstance(index, bool)
            or not isinstance(index, int)
            or not (0 <= index < num_classes or index == ignore_index)
        ):
            raise ConfigError(
                f"data.mask_map: {value} -> {index!r} is not a class index (0-{num_classes - 1}) "
                f"nor data.ignore_index ({ignore_index})"
            )
    return LabelMap({ignore_index: ignore_index} | dict(mask_map), num_classes, ignore_index)


def stored_value_counts(dataset: FileDataset, workers: int | None = None) -> np.ndarray:
    """(256,) int64 pixel count of each stored mask value over the dataset's masks, each mask
    decoded once on `workers` threads (default: one per core, at most 8). A mask with values
    that are not labels raises the same DataError as training would."""
    label_map = dataset.label_map

    def count(pair: tuple[Path, Path | None]) -> np.ndarray:
        path = pair[1]
        if path is None:
            return np.zeros(256, np.int64)
        raw = read_mask_values(path, dataset.palette, dataset.ignore_colour, dataset.ignore_index)
        counts = label_map.counts(raw)
        if label_map.invalid_values(counts):
            label_map.apply(raw, path)  # raises, naming the file and its values
        return counts

    workers = workers or max(1, default_num_workers())
    total = np.zeros(256, np.int64)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for counts in pool.map(count, dataset.pairs):
            total += counts
    return total


class BandFileDataset(FileDataset):
    """A FileDataset reading `bands` of each image; every image must then give `channels`
    channels (those of the first training image), else a DataError naming the file."""

    def __init__(self, *args, bands: list[int] | None = None, channels: int | None = None,
                 **kwargs) -> None:  # fmt: skip
        super().__init__(*args, **kwargs)
        self.bands, self.channels = bands, channels

    def read_image(self, image_path: Path) -> DecodedImage:
        """The image's `bands` (pixels (H, W, C)), checked to give `channels` channels."""
        decoded = decode_image(image_path, self.exif_orientation, self.bands)
        found = decoded.pixels.shape[2]
        if self.channels is not None and found != self.channels:
            raise DataError(
                f"{image_path}: gives {found} channels{' (data.bands)' * bool(self.bands)}, "
                f"the first training image {self.channels}: all images need the same bands"
            )
        return decoded

    def load(self, index: int) -> Sample:
        image_path, mask_path = self.pairs[index]
        decoded = self.read_image(image_path)
        mask = None
        if mask_path is not None:
            mask = self.read_mask(mask_path)
            check_same_size(decoded, mask, image_path, mask_path)
        return Sample(decoded.pixels, mask, Path(image_path).stem)
