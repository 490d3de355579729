"""Your own images: <root>/images/<stem>.<jpg|png|tif|npy|...> with <root>/masks/<stem>.png.

Images may have any number of bands (multi-band TIFF / GeoTIFF, .npy: seglight.data.multiband);
`bands` selects and orders them, and `in_channels` (the model's input channels) is read from
the first training image's header. mean/std then need one value per channel.

Masks hold class indices ("P"/"L" PNG or 1-bit, mask_format: index) or class colours
(mask_format: rgb, mapped through `colors`). Stored values that are not the class indices are
mapped with `mask_map` (binary masks saved as 0/255: `mask_map: {0: 0, 255: 1}`). Masks named
after their image with a suffix (`name.jpg` <-> `name_mask.png`, in another folder or the same
one) are found with `mask_suffix: _mask`. Classes come from the config or a YAML/JSON file:

    classes: [background, road, car]
    classes_file: classes.yaml   # or: [background, road] / [{name: road, color: [128, 64, 128]}]

With `task: multilabel` each class is a label with its own 0/1 mask, stored either as one
binary mask per label, masks/<label>/<name>.png (a folder per class name), or as one
multi-channel file per image, masks/<name>.tif|.npy of (H, W, L) or (L, H, W); the layout is
detected (seglight.data.folder_multilabel). 0 = absent, 1 = present, 255 = unlabelled; 0/255
files need `mask_map: {0: 0, 255: 1}`.

Splits come from list files of stems or a seeded random validation fraction. When `fit` starts
the training and validation masks are decoded once (no images) to check that every class occurs,
and so are the evaluation masks at `validate` and `test` (warnings only): see `label_check`.
"""

import random
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from lightning.pytorch.utilities import rank_zero_only

from seglight.data.audit import channel_stats
from seglight.data.base import SegmentationDataModule, Split
from seglight.data.dataset import FileDataset
from seglight.data.folder_labels import (
    BandFileDataset,
    label_map_of,
    load_classes,
    stored_value_counts,
)
from seglight.data.folder_multilabel import (
    MultilabelFileDataset,
    label_counts,
    missing_labels,
    multilabel_pairs,
)
from seglight.data.images import decode_image
from seglight.data.io import IMAGE_EXTENSIONS, missing_classes
from seglight.data.multiband import image_channels
from seglight.data.transforms import TransformSpec, train_preset
from seglight.errors import ConfigError, DataError

MASK_EXTENSIONS = (".png", ".bmp", ".tif", ".tiff")  # lossless: JPEG would invent labels
# Splits whose masks `label_check` scans when a stage starts (errors for train only).
CHECKED_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}


class FolderDataModule(SegmentationDataModule):
    """A folder of images and masks with matching file stems (the mask's stem may add
    `mask_suffix`: images/a.jpg <-> masks/a_mask.png, or both in one folder).

    Args:
        root: folder holding `image_dir` and `mask_dir`.
        classes: class names in index order; or give `classes_file`.
        classes_file: YAML or JSON file with the class names (a list of names, or a list of
            {name, color}); relative paths are taken from `root`.
        colors: one [R, G, B] per class, for colour-coded masks and predictions.
        mask_format: "index" (pixel value = class id) or "rgb" (pixel colour = class colour).
        mask_map: stored mask value -> class index (or ignore_index) for index masks, e.g.
            {0: 0, 255: 1} for 0/255 binary masks; other values are errors; null = identity.
            task multilabel: stored value -> 0/1 (or ignore_index) of each label's mask.
        ignore_index: mask value (index masks) of unlabelled pixels.
        ignore_color: colour of unlabelled pixels in rgb masks, e.g. [255, 255, 255].
        image_dir: sub-folder of the images.
        mask_dir: sub-folder of the masks; may equal image_dir when mask_suffix is set.
        mask_suffix: end of a mask's stem after its image's stem: "_mask" pairs a.jpg with
            a_mask.png; "" = same stem.
        train_list: file of training stems, one per line; null = a random split.
        val_list: file of validation stems; null = a random split.
        test_list: file of test stems; null = the validation images.
        val_fraction: share of images for validation when no list files are given.
        split_seed: seed of the random split (the same seed gives the same split).
        crop_size: (height, width) of random training crops; null = train on whole images
            (flip and photometric jitter only).
        scale_range: range of the random rescale before cropping (with crop_size).
        label_check: at the start of fit, a class absent from every training mask, or masks
            holding only 0 and ignore_index, is an "error", a "warn"ing, or not checked ("off");
            in val/test masks (at fit, validate, test), a warning unless "off". multilabel: a
            label without a positive pixel, or holding only 0 and ignore_index.
        bands: 0-based channels of each image to keep, in this order, e.g. [3, 2, 1, 7] of a
            multi-band TIFF or [2, 1, 0] (BGR) of an RGB image; null = all (RGB images: 3).
            mean/std need one value per kept channel.
        **kwargs: loader and transform options of SegmentationDataModule.
    """

    def __init__(
        self,
        root: str = "data/folder",
        classes: list[str] | None = None,
        classes_file: str | None = None,
        colors: list[list[int]] | None = None,
        mask_format: Literal["index", "rgb"] = "index",
        mask_map: dict[int, int] | None = None,
        ignore_index: int = 255,
        ignore_color: list[int] | None = None,
        image_dir: str = "images",
        mask_dir: str = "masks",
        mask_suffix: str = "",
        train_list: str | None = None,
        val_list: str | None = None,
        test_list: str | None = None,
        val_fraction: float = 0.2,
        split_seed: int = 0,
        crop_size: tuple[int, int] | None = None,
        scale_range: tuple[float, float] = (0.5, 2.0),
        label_check: Literal["error", "warn", "off"] = "error",
        bands: list[int] | None = None,
        **kwargs,
    ) -> None:
        self.root = Path(root).expanduser()
        if bands is not None and (
            not bands or not all(isinstance(b, int) and not isinstance(b, bool) for b in bands)
        ):
            raise ConfigError(f"data.bands: a list of 0-based band indices, got {bands!r}")
        if bands is not None and min(bands) < 0:
            raise ConfigError(f"data.bands: indices count from 0, got {list(bands)}")
        self.bands = list(bands) if bands is not None else None
        self._in_channels: int | None = None
        names, file_colors = load_classes(classes, classes_file, self.root)
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
        if self.dirs[0].resolve() == self.dirs[1].resolve() and not mask_suffix:
            raise ConfigError(
                f"data.mask_suffix: images and masks share the folder {self.dirs[0]}; set how "
                "mask names end, e.g. data.mask_suffix: _mask for a.jpg <-> a_mask.png"
            )
        if label_check not in ("error", "warn", "off"):
            raise ConfigError(f"data.label_check: error, warn or off, got {label_check!r}")
        self.mask_suffix = mask_suffix
        self.label_check = label_check
        self._labels_checked: set[str] = set()
        self.lists = {"train": train_list, "val": val_list, "test": test_list}
        self.val_fraction, self.split_seed = val_fraction, split_seed
        self.crop_size = tuple(crop_size) if crop_size else None
        self.scale_range = tuple(scale_range)
        multilabel = kwargs.get("task") == "multilabel"  # self.task: set by super().__init__
        if multilabel and mask_format == "rgb":
            raise ConfigError(
                "data.mask_format: rgb masks hold one class per pixel; data.task: multilabel "
                "reads 0/1 masks (mask_format: index)"
            )
        targets = 2 if multilabel else len(names)  # multilabel: each label's mask is 0/1
        self.label_map = label_map_of(mask_map, targets, ignore_index, mask_format)
        super().__init__(**kwargs)

    @property
    def in_channels(self) -> int:
        """Channels of the images after `bands`: the model's input channels, from the header of
        the first training image (read once)."""
        if self._in_channels is None:
            if not self.dirs[0].is_dir():  # no images here (a predict_dir run, a config check):
                return len(self.bands) if self.bands else len(self.mean)  # setup checks files
            pairs = self.find_pairs()
            stems = self.split_stems("train", sorted(pairs)) or sorted(pairs)
            first = pairs[stems[0]][0]
            if first.suffix.lower() in (".tif", ".tiff"):  # a header can mislead (e.g. a stack
                # of pages): decode it, so a file seglight cannot read fails here, by name
                pixels = decode_image(first, self.exif_orientation, self.bands).pixels
                self._in_channels = int(pixels.shape[2])
            else:
                self._in_channels = image_channels(first, self.bands)
        return self._in_channels

    def channel_stats(self) -> tuple[list[float], list[float]]:
        """Per-channel (mean, std) of the training images after `bands`, in [0, 1] units: the
        values for data.mean / data.std (reads every training image once)."""
        pairs = self.find_pairs()
        images = [pairs[s][0] for s in self.split_stems("train", sorted(pairs))]
        return channel_stats(images, self.bands, self.exif_orientation)

    def default_train_transforms(self) -> list[TransformSpec]:
        rgb = len(self.mean) == 3  # one mean per channel: photometric jitter for RGB only
        if self.crop_size:
            return train_preset(self.crop_size, self.scale_range, rgb=rgb)
        jitter = {"name": "ColorJitter", "brightness": 0.2, "contrast": 0.2, "saturation": 0.2,
                  "hue": 0.0, "p": 0.5}  # fmt: skip
        return [{"name": "HorizontalFlip", "p": 0.5}] + ([jitter] if rgb else [])

    def build_dataset(self, split: Split, transform) -> FileDataset:
        pairs = self.find_pairs()
        stems = self.split_stems(split, sorted(pairs))
        palette = self.palette if self.mask_format == "rgb" else None
        if self.task == "multilabel":
            return MultilabelFileDataset([pairs[s] for s in stems], self.label_map, transform,
                                         bands=self.bands, channels=self.in_channels,
                                         num_labels=len(self.class_names))  # fmt: skip
        return BandFileDataset([pairs[s] for s in stems], self.label_map, transform,
                               palette=palette, ignore_colour=self.ignore_color,
                               bands=self.bands, channels=self.in_channels)  # fmt: skip

    def check_channels(self) -> None:
        """mean/std hold one value per image channel (after `bands`): else one ConfigError."""
        if len(self.mean) != self.in_channels:
            how = " after data.bands" if self.bands else ""
            raise ConfigError(
                f"data.mean / data.std have {len(self.mean)} values, but the images have "
                f"{self.in_channels} channels{how} (first training image): give one value per "
                f"channel (seglight.data.audit.channel_stats measures them)"
                + (", or select 3 bands with data.bands" if len(self.mean) == 3 else "")
            )

    def find_pairs(self) -> dict[str, tuple[Path, Path]]:
        """stem -> (image, mask); every image needs its mask and every mask its image."""
        image_dir, mask_dir = self.dirs
        suffix = self.mask_suffix
        for folder in self.dirs:
            if not folder.is_dir():
                raise DataError(
                    f"data.root: {folder} not found. Expected {image_dir}/<name>.jpg "
                    f"(or .png, ...) with {mask_dir}/<name>{suffix}.png"
                )
        same = image_dir.resolve() == mask_dir.resolve()
        # In a shared folder, files named <stem><suffix>.<ext> are masks, never images.
        images, _ = _by_stem(image_dir, IMAGE_EXTENSIONS, suffix if same else "", strip=False)
        if self.task == "multilabel":  # a folder per label, or a multi-channel file per image
            if not images:
                raise DataError(f"{image_dir}: no images ({', '.join(IMAGE_EXTENSIONS)})")
            return multilabel_pairs(images, image_dir, mask_dir, self.class_names, suffix)
        masks, strays = _by_stem(mask_dir, MASK_EXTENSIONS, suffix)  # strays: no suffix
        strays = [] if same else strays  # there, they are the images
        lonely = [images.get(s) or masks[s] for s in sorted(set(images) ^ set(masks))] + strays
        if lonely:
            raise DataError(
                f"{len(lonely)} files have no partner: image {image_dir.name}/<name>.jpg (or "
                f".png, ...) pairs with mask {mask_dir.name}/<name>{suffix}.png (or .tif, .bmp), "
                f"e.g. {[str(p) for p in lonely[:5]]}{_naming_hint(images, masks, strays, suffix)}"
            )
        if not images:
            raise DataError(f"{image_dir}: no images ({', '.join(IMAGE_EXTENSIONS)})")
        return {s: (images[s], masks[s]) for s in images}

    def setup(self, stage: str) -> None:
        if stage != "predict" or self.predict_dir is None:  # predict_dir: needs no training data
            self.check_channels()
        super().setup(stage)
        if self.label_check == "off":
            return
        splits = [s for s in CHECKED_SPLITS.get(stage, ()) if s not in self._labels_checked]
        self.check_labels(splits)
        self._labels_checked.update(splits)

    def check_labels(self, splits: Sequence[Split] = ("train", "val")) -> None:
        """Decode the masks (not the images) of `splits` once, on threads, and check that every
        class occurs (multilabel: has a positive pixel): a class absent from all training masks,
        or training masks holding only 0 and ignore_index (0/255 binary masks), raise DataError
        ("warn": a warning); in an evaluation split (which may lack a rare class) either is a
        warning."""
        for split in splits:
            dataset = self.datasets.get(split)
            if dataset is None:
                dataset = self.build_dataset(split, self.pipelines["eval"])
            where = f"data: the {len(dataset)} {split} masks"
            if self.task == "multilabel":
                found = missing_labels(label_counts(dataset), self.label_map, self.class_names,
                                       where)  # fmt: skip
            else:
                stored = stored_value_counts(dataset)
                found = missing_classes(stored, self.label_map, self.class_names, where)
            if found is None:
                continue
            kind, message = found
            if split == "train" and self.label_check == "error":
                if kind == "absent_class":
                    message += " (data.label_check: warn trains anyway)"
                raise DataError(message)
            warn(message)

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


def _by_stem(
    folder: Path, extensions: tuple[str, ...], suffix: str = "", strip: bool = True
) -> tuple[dict[str, Path], list[Path]]:
    """(name -> file, strays) for the files of `folder` with one of `extensions`. Without a
    `suffix`, the name is the stem. With one, `strip`: files whose stem ends with it are named
    by the stem less it, the others are strays; not `strip`: they are left out (masks beside the
    images), the others are named by their stem."""
    found: dict[str, Path] = {}
    strays: list[Path] = []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in extensions:
            continue
        stem = path.stem
        if suffix:
            suffixed = stem.endswith(suffix) and len(stem) > len(suffix)
            if not strip and suffixed:
                continue
            if strip and not suffixed:
                strays.append(path)
                continue
            if strip:
                stem = stem[: -len(suffix)]
        if stem in found:
            raise DataError(f"{folder}: two files named {stem!r}: "
                            f"{found[stem].name} and {path.name}")  # fmt: skip
        found[stem] = path
    return found, strays


def _naming_hint(
    images: dict[str, Path], masks: dict[str, Path], strays: list[Path], suffix: str
) -> str:
    """'; the masks look named ...' when lonely masks' stems are lonely images' stems plus a
    common ending (a.jpg, a_mask.png), or equal to them while a suffix is set; else ''."""
    lonely_images = set(images) - set(masks)
    if suffix and lonely_images & {p.stem for p in strays}:
        return f"; the masks have their images' names: remove data.mask_suffix ({suffix!r})"
    lonely_masks = [masks[k].stem for k in set(masks) - set(images)] + [p.stem for p in strays]
    endings = Counter(
        stem[k:] for stem in lonely_masks for k in range(1, len(stem)) if stem[:k] in lonely_images
    )
    if not endings:
        return ""
    ending = endings.most_common(1)[0][0]
    return f"; the masks look named <name>{ending}: set data.mask_suffix: {ending}"


@rank_zero_only
def warn(message: str) -> None:
    """A warning on stderr that no warnings filter hides (once, from the first process)."""
    print(f"seglight: warning: {message}", file=sys.stderr, flush=True)
