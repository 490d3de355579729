"""Prediction over a folder of the user's images (`--data.predict_dir`): found recursively, named
so that no two outputs collide, and a file that cannot be read is skipped and reported, not fatal.

A file that fails travels through the DataLoader as data (workers or not): the dataset returns
{"failed": path, "reason": text}, `collate_predict` drops it from the batch and lists it in
batch["failed"], and seglight.callbacks.PredictionFailures collects the lists (over all DDP
processes) and prints them at the end; `seglight predict` then exits with status 1.
"""

import os
from collections import defaultdict
from collections.abc import Sequence
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any

import albumentations as A
import torch
from lightning.pytorch.utilities import rank_zero_info
from PIL import Image

from seglight.data.dataset import FileDataset, Sample, collate_padded
from seglight.data.io import IMAGE_EXTENSIONS, LabelMap
from seglight.errors import DataError

# What reading or transforming one bad file raises (DataError is a ValueError); anything else
# is a bug or a broken setup, and stops the run.
READ_ERRORS = (ValueError, OSError, Image.DecompressionBombError)


def find_images(root: Path) -> tuple[list[PurePosixPath], list[PurePosixPath]]:
    """(images, other files) under `root`, recursively, as paths relative to it sorted by path.
    Hidden files and folders (".DS_Store", ".ipynb_checkpoints", "._x.jpg") are skipped; images
    are recognised by extension (IMAGE_EXTENSIONS, any case). Symlinked folders are followed
    once each."""
    images, others, seen = [], [], set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        key = os.stat(folder)
        if (key.st_dev, key.st_ino) in seen:  # a symlink loop or a folder linked twice
            dirs[:] = []
            continue
        seen.add((key.st_dev, key.st_ino))
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        relative = PurePosixPath(Path(folder).relative_to(root).as_posix())
        for name in files:
            if name.startswith("."):
                continue
            is_image = os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS
            (images if is_image else others).append(relative / name)
    return sorted(images), sorted(others)


def output_names(files: Sequence[PurePosixPath]) -> list[str]:
    """The output path of each input, relative and without the ".png" the writer adds.

    The input tree is mirrored and the extension dropped (a/b/x.jpg -> a/b/x), except where
    that would collide: inputs in one folder whose names differ only by extension (or by case,
    for case-insensitive disks) keep it (photo.jpg -> photo.jpg, photo.png -> photo.png, written
    as photo.jpg.png and photo.png.png)."""
    names = [str(f.with_suffix("")) for f in files]
    while True:  # keeping an extension can collide with another stem (x.jpg vs x.jpg.png)
        groups = defaultdict(list)
        for i, name in enumerate(names):
            groups[name.lower()].append(i)
        clashes = [i for group in groups.values() if len(group) > 1 for i in group]
        changed = [i for i in clashes if names[i] != str(files[i])]
        if not changed:
            return names
        for i in changed:
            names[i] = str(files[i])


class ImageFolderDataset(FileDataset):
    """The images of a folder and its sub-folders, without masks, for `predict`.

    Each sample's "name" is its path relative to the folder ("a/b/x.jpg") and "output" where its
    prediction goes, relative and without extension (see `output_names`). A file that cannot be
    read or transformed gives {"failed": <path>, "reason": <what is wrong>} instead of raising,
    and `collate_fn` (this dataset's, used by SegmentationDataModule's loaders) drops it from the
    batch and lists it in batch["failed"] as (path, reason) pairs; a batch of failures only is
    empty (0 images).

    Args:
        root: the folder.
        files: image paths relative to `root` (see `find_images`).
        label_map: for FileDataset (no masks are read).
        transform: the albumentations pipeline.
    """

    def __init__(
        self,
        root: Path,
        files: Sequence[PurePosixPath],
        label_map: LabelMap,
        transform: A.Compose,
    ) -> None:
        super().__init__([(root / f, None) for f in files], label_map, transform)
        self.root = root
        self.names = [str(f) for f in files]
        self.outputs = output_names(files)
        self.collate_fn = partial(collate_predict, ignore_index=label_map.ignore_index)

    def load(self, index: int) -> Sample:
        sample = super().load(index)
        sample.name = self.names[index]
        return sample

    def _get(self, index: int) -> dict:
        try:
            item = super()._get(index)
        except READ_ERRORS as e:
            path = str(self.pairs[index][0])
            reason = str(e).removeprefix(f"{path}: ") or type(e).__name__
            return {"failed": path, "reason": reason}
        item["output"] = self.outputs[index]
        return item


def collate_predict(samples: list[dict], ignore_index: int = 255) -> dict:
    """collate_padded over the samples that were read, plus "output" (their output names) and
    "failed" ((path, reason) of the others). No sample read: a batch of 0 images (0, 3, 1, 1)."""
    good = [s for s in samples if "failed" not in s]
    if good:
        batch = collate_padded(good, ignore_index)
    else:
        batch = {
            "image": torch.zeros(0, 3, 1, 1),
            "mask": torch.zeros(0, 1, 1, dtype=torch.long),
            "name": [],
            "size": torch.zeros(0, 2, dtype=torch.long),
        }
    batch["output"] = [s["output"] for s in good]
    batch["failed"] = [(s["failed"], s["reason"]) for s in samples if "failed" in s]
    return batch


def folder_dataset(
    folder: str, transform: Any, num_classes: int, ignore_index: int, exif_orientation: bool
) -> "ImageFolderDataset":
    """Every image under `folder`, sub-folders included (hidden ones skipped), without masks:
    for `predict`. Outputs mirror the folder's tree; a file that cannot be read is reported and
    skipped (ImageFolderDataset)."""
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise DataError(f"data.predict_dir: {path} is not a folder")
    images, others = find_images(path)
    if not images:
        raise DataError(
            f"data.predict_dir: no images ({', '.join(IMAGE_EXTENSIONS)}) in {path} or its "
            "sub-folders; point it at the folder that holds them"
        )
    if others:  # said, not silently dropped: e.g. .heic photos or .gif files
        shown = ", ".join(str(f) for f in others[:5]) + (", ..." if len(others) > 5 else "")
        rank_zero_info(
            f"seglight: data.predict_dir: {len(others)} file(s) in {path} are not images by "
            f"their extension ({', '.join(IMAGE_EXTENSIONS)}) and are left out: {shown}"
        )
    label_map = LabelMap.identity(num_classes, ignore_index)
    dataset = ImageFolderDataset(path, images, label_map, transform)
    dataset.exif_orientation = exif_orientation
    return dataset
