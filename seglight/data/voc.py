"""PASCAL VOC 2012 segmentation, optionally with the SBD-augmented training set (10,582 images).

    VOCdevkit/VOC2012/JPEGImages/<id>.jpg
    VOCdevkit/VOC2012/SegmentationClass/<id>.png         palette PNG: indices 0..20, 255 = border
    VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val,trainval}.txt
    VOCdevkit/VOC2012/SegmentationClassAug/<id>.png      (augmented: SBD masks as index PNGs)
    VOCdevkit/VOC2012/ImageSets/Segmentation/train_aug.txt  (or mmsegmentation's aug.txt)

Masks are read as indices (PIL "P"/"L" mode), never converted to RGB: a mask saved as RGB is an
error, because its colours are not class ids.
"""

from pathlib import Path

from seglight.data.base import Split
from seglight.data.dataset import FileDataset
from seglight.data.disk import DiskDataModule
from seglight.data.io import LabelMap
from seglight.errors import DataError
from seglight.render import voc_palette

VOC_CLASSES = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
]  # fmt: skip
DOWNLOAD = (
    "VOC 2012: http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar; "
    "SBD-augmented masks (SegmentationClassAug) and train_aug.txt as used by DeepLab and "
    "mmsegmentation: http://home.bharathh.info/pubs/codes/SBD/download.html"
)
AUG_LISTS = ("train_aug.txt", "aug.txt")


class VOCDataModule(DiskDataModule):
    """PASCAL VOC 2012 semantic segmentation (21 classes, 255 = object borders / unlabelled).

    Args:
        root: folder holding VOCdevkit/ (or VOCdevkit/ or VOCdevkit/VOC2012/ itself).
        augmented: train on the SBD-augmented set (SegmentationClassAug + train_aug.txt,
            10,582 images) instead of the 1,464 images of the official train split.
        crop_size: (height, width) of training crops.
        scale_range: range of the random rescale before cropping.
        train_split: list file for training; null = "train", or the aug list when augmented.
        val_split: list file (ImageSets/Segmentation/<name>.txt) for validation.
        test_split: list file for `test`; the VOC test set has no public labels, so "val".
        predict_split: list file whose images `predict` runs on.
        **kwargs: loader and transform options of SegmentationDataModule.
    """

    class_names = VOC_CLASSES
    palette = voc_palette(len(VOC_CLASSES))

    def __init__(
        self,
        root: str = "data/voc",
        augmented: bool = False,
        crop_size: tuple[int, int] = (512, 512),
        scale_range: tuple[float, float] = (0.5, 2.0),
        train_split: str | None = None,
        val_split: str = "val",
        test_split: str = "val",
        predict_split: str = "val",
        **kwargs,
    ) -> None:
        self.augmented = augmented
        self.label_map = LabelMap.identity(len(VOC_CLASSES))
        super().__init__(root, crop_size, scale_range, train_split, val_split, test_split,
                         predict_split, **kwargs)  # fmt: skip

    def voc_dir(self) -> Path:
        for candidate in (self.root / "VOCdevkit" / "VOC2012", self.root / "VOC2012", self.root):
            if (candidate / "JPEGImages").is_dir():
                return candidate
        raise DataError(
            f"data.root: no PASCAL VOC 2012 under {self.root}. Expected "
            f"{self.root}/VOCdevkit/VOC2012/{{JPEGImages, SegmentationClass, "
            f"ImageSets/Segmentation/train.txt, val.txt}}. Download: {DOWNLOAD}"
        )

    def build_dataset(self, split: Split, transform) -> FileDataset:
        voc = self.voc_dir()
        list_file, mask_dir = self._list_and_masks(voc, split)
        stems = _read_list(list_file)
        pairs = [(voc / "JPEGImages" / f"{s}.jpg", mask_dir / f"{s}.png") for s in stems]
        missing = [str(p) for pair in pairs for p in pair if not p.is_file()]
        if missing:
            raise DataError(
                f"{list_file} names {len(missing)} files that do not exist, e.g. {missing[:3]}"
            )
        return FileDataset(pairs, self.label_map, transform)

    def _list_and_masks(self, voc: Path, split: Split) -> tuple[Path, Path]:
        lists = voc / "ImageSets" / "Segmentation"
        name = self.splits[split]
        if split == "train" and self.augmented:
            mask_dir = voc / "SegmentationClassAug"
            candidates = [lists / f"{name}.txt"] if name else [lists / n for n in AUG_LISTS]
            found = [c for c in candidates if c.is_file()]
            if not found or not mask_dir.is_dir():
                raise DataError(
                    f"data.augmented: needs {mask_dir} and one of "
                    f"{', '.join(str(c) for c in candidates)}. Download: {DOWNLOAD}"
                )
            return found[0], mask_dir
        list_file = lists / f"{name or 'train'}.txt"
        if not list_file.is_file():
            raise DataError(f"data.{split}_split: list file {list_file} not found. "
                            f"Download: {DOWNLOAD}")  # fmt: skip
        return list_file, voc / "SegmentationClass"


def _read_list(path: Path) -> list[str]:
    """Image ids, one per line. DeepLab's lists ("/JPEGImages/x.jpg /SegmentationClassAug/x.png")
    give the id as the first path's stem."""
    stems = [Path(line.split()[0]).stem for line in path.read_text().splitlines() if line.strip()]
    if not stems:
        raise DataError(f"{path}: the split list is empty")
    return stems
