"""Your own images: <root>/images/<stem>.<jpg|png|...> with <root>/masks/<stem>.png.

Masks hold class indices ("P"/"L" PNG, mask_format: index) or class colours (mask_format: rgb,
mapped through `colors`). Classes come from the config or a YAML/JSON file:

    classes: [background, road, car]
    classes_file: classes.yaml   # or: [background, road] / [{name: road, color: [128, 64, 128]}]

Splits come from list files of stems or a seeded random validation fraction.
"""

import json
import random
from pathlib import Path
from typing import Literal

import yaml

from seglight.data.base import SegmentationDataModule, Split
from seglight.data.dataset import FileDataset
from seglight.data.io import IMAGE_EXTENSIONS, LabelMap
from seglight.data.transforms import TransformSpec, train_preset
from seglight.errors import ConfigError, DataError

MASK_EXTENSIONS = (".png", ".bmp", ".tif", ".tiff")  # lossless: JPEG would invent labels


class FolderDataModule(SegmentationDataModule):
    """A folder of images and masks with matching file stems.

    Args:
        root: folder holding `image_dir` and `mask_dir`.
        classes: class names in index order; or give `classes_file`.
        classes_file: YAML or JSON file with the class names (a list of names, or a list of
            {name, color}); relative paths are taken from `root`.
        colors: one [R, G, B] per class, for colour-coded masks and predictions.
        mask_format: "index" (pixel value = class id) or "rgb" (pixel colour = class colour).
        ignore_index: mask value (index masks) of unlabelled pixels.
        ignore_color: colour of unlabelled pixels in rgb masks, e.g. [255, 255, 255].
        image_dir: sub-folder of the images.
        mask_dir: sub-folder of the masks.
        train_list: file of training stems, one per line; null = a random split.
        val_list: file of validation stems; null = a random split.
        test_list: file of test stems; null = the validation images.
        val_fraction: share of images for validation when no list files are given.
        split_seed: seed of the random split (the same seed gives the same split).
        crop_size: (height, width) of random training crops; null = train on whole images
            (flip and photometric jitter only).
        scale_range: range of the random rescale before cropping (with crop_size).
        **kwargs: loader and transform options of SegmentationDataModule.
    """

    def __init__(
        self,
        root: str = "data/folder",
        classes: list[str] | None = None,
        classes_file: str | None = None,
        colors: list[list[int]] | None = None,
        mask_format: Literal["index", "rgb"] = "index",
        ignore_index: int = 255,
        ignore_color: list[int] | None = None,
        image_dir: str = "images",
        mask_dir: str = "masks",
        train_list: str | None = None,
        val_list: str | None = None,
        test_list: str | None = None,
        val_fraction: float = 0.2,
        split_seed: int = 0,
        crop_size: tuple[int, int] | None = None,
        scale_range: tuple[float, float] = (0.5, 2.0),
        **kwargs,
    ) -> None:
        self.root = Path(root).expanduser()
        names, file_colors = _load_classes(classes, classes_file, self.root)
        colors = colors or file_colors
        if colors is not None and len(colors) != len(names):
            raise ConfigError(f"data.colors: {len(colors)} colours for {len(names)} classes")
        if mask_format == "rgb" and colors is None:
            raise ConfigError("data.mask_format: rgb masks need a colour per class (data.colors)")
        if not 0 < val_fraction < 1:
            raise ConfigError(f"data.val_fraction: must be in (0, 1), got {val_fraction}")
        self.class_names = names
        self.palette = colors
        self.ignore_index = ignore_index
        self.mask_format = mask_format
        self.ignore_color = ignore_color
        self.dirs = (self.root / image_dir, self.root / mask_dir)
        self.lists = {"train": train_list, "val": val_list, "test": test_list}
        self.val_fraction, self.split_seed = val_fraction, split_seed
        self.crop_size = tuple(crop_size) if crop_size else None
        self.scale_range = tuple(scale_range)
        self.label_map = LabelMap.identity(len(names), ignore_index)
        super().__init__(**kwargs)

    def default_train_transforms(self) -> list[TransformSpec]:
        if self.crop_size:
            return train_preset(self.crop_size, self.scale_range)
        return [
            {"name": "HorizontalFlip", "p": 0.5},
            {"name": "ColorJitter", "brightness": 0.2, "contrast": 0.2, "saturation": 0.2,
             "hue": 0.0, "p": 0.5},
        ]  # fmt: skip

    def build_dataset(self, split: Split, transform) -> FileDataset:
        pairs = self.find_pairs()
        stems = self.split_stems(split, sorted(pairs))
        palette = self.palette if self.mask_format == "rgb" else None
        return FileDataset([pairs[s] for s in stems], self.label_map, transform,
                           palette=palette, ignore_colour=self.ignore_color)  # fmt: skip

    def find_pairs(self) -> dict[str, tuple[Path, Path]]:
        """stem -> (image, mask); every image needs its mask and every mask its image."""
        image_dir, mask_dir = self.dirs
        for folder in self.dirs:
            if not folder.is_dir():
                raise DataError(
                    f"data.root: {folder} not found. Expected {self.root}/images/<name>.jpg "
                    f"(or .png, ...) with {self.root}/masks/<name>.png"
                )
        images = _by_stem(image_dir, IMAGE_EXTENSIONS)
        masks = _by_stem(mask_dir, MASK_EXTENSIONS)
        lonely = sorted(set(images) ^ set(masks))
        if lonely:
            where = [str(images.get(s) or masks.get(s)) for s in lonely[:5]]
            raise DataError(
                f"{len(lonely)} files have no partner with the same name in "
                f"{image_dir.name}/ and {mask_dir.name}/, e.g. {where}"
            )
        if not images:
            raise DataError(f"{image_dir}: no images ({', '.join(IMAGE_EXTENSIONS)})")
        return {s: (images[s], masks[s]) for s in images}

    def split_stems(self, split: Split, stems: list[str]) -> list[str]:
        key = "val" if split == "predict" else split
        if key == "test" and not self.lists["test"]:
            key = "val"
        listed = self.lists[key]
        if listed:
            path = Path(listed) if Path(listed).is_absolute() else self.root / listed
            if not path.is_file():
                raise DataError(f"data.{key}_list: {path} not found")
            wanted = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
            unknown = [s for s in wanted if s not in set(stems)]
            if unknown:
                raise DataError(f"{path}: names images that are not in {self.dirs[0]}, "
                                f"e.g. {unknown[:3]}")  # fmt: skip
            return wanted
        shuffled = list(stems)
        random.Random(self.split_seed).shuffle(shuffled)
        n_val = max(1, round(len(stems) * self.val_fraction))
        chosen = shuffled[:n_val] if key == "val" else shuffled[n_val:]
        return sorted(chosen)


def _by_stem(folder: Path, extensions: tuple[str, ...]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in extensions:
            continue
        if path.stem in found:
            raise DataError(f"{folder}: two files named {path.stem!r}: "
                            f"{found[path.stem].name} and {path.name}")  # fmt: skip
        found[path.stem] = path
    return found


def _load_classes(
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
