"""A minimal file-based data module for the audit tests, selected by class path
(`data: {class_path: seglight_testing.audit_example.TinyFolders}`): <root>/images/<name>.*
paired with <root>/masks/<name>.png, classes a, b, c stored as values 0-2, 255 = ignore."""

from pathlib import Path

from seglight.data.base import SegmentationDataModule, Split
from seglight.data.dataset import FileDataset
from seglight.data.io import LabelMap
from seglight.errors import DataError


class TinyFolders(SegmentationDataModule):
    """Every split is the whole folder; `predict` has no masks.

    Args:
        root: folder holding images/ and masks/.
        **kwargs: loader and transform options of SegmentationDataModule.
    """

    class_names = ["a", "b", "c"]

    def __init__(self, root: str = "data", **kwargs) -> None:
        super().__init__(**kwargs)
        self.root = Path(root)

    def build_dataset(self, split: Split, transform) -> FileDataset:
        images = self.root / "images"
        if not images.is_dir():
            raise DataError(f"{images}: folder not found")
        pairs = [
            (p, None if split == "predict" else self.root / "masks" / f"{p.stem}.png")
            for p in sorted(images.iterdir())
        ]
        return FileDataset(pairs, LabelMap.identity(len(self.class_names)), transform)
