"""Cityscapes (gtFine): 19 training classes, the official labelId -> trainId mapping.

    python -m seglight fit --config configs/cityscapes.yaml

Layout (unzip leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip into one folder):

    <root>/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    <root>/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png

Masks are read from `*_gtFine_labelTrainIds.png` when every image of the split has one (the files
cityscapesScripts' createTrainIdLabelImgs writes: values 0-18 and 255), otherwise from
`*_gtFine_labelIds.png` through the table below, the one of cityscapesScripts'
`helpers/labels.py`. Predictions go back to labelIds through `native_ids` (see MaskWriter), which
is what the official evaluation script reads.
"""

from pathlib import Path

from seglight.data.base import Split
from seglight.data.dataset import FileDataset
from seglight.data.disk import DiskDataModule
from seglight.data.io import LabelMap
from seglight.errors import DataError

DOWNLOAD_URL = "https://www.cityscapes-dataset.com/downloads/"
IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_IDS_SUFFIX = "_gtFine_labelIds.png"
TRAIN_IDS_SUFFIX = "_gtFine_labelTrainIds.png"
LAYOUT = (
    "expected the Cityscapes layout:\n"
    "  <root>/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png\n"
    "  <root>/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png\n"
    f"Download leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip from {DOWNLOAD_URL} "
    "(free registration) and unzip both into <root>"
)

# cityscapesScripts, cityscapesscripts/helpers/labels.py (the official table, all 35 rows):
# (name, id, trainId, category, colour). id is the value stored in *_gtFine_labelIds.png;
# trainId 255 = ignored in training and evaluation; 'license plate' (id -1) is never stored.
LABELS: list[tuple[str, int, int, str, tuple[int, int, int]]] = [
    ("unlabeled", 0, 255, "void", (0, 0, 0)),
    ("ego vehicle", 1, 255, "void", (0, 0, 0)),
    ("rectification border", 2, 255, "void", (0, 0, 0)),
    ("out of roi", 3, 255, "void", (0, 0, 0)),
    ("static", 4, 255, "void", (0, 0, 0)),
    ("dynamic", 5, 255, "void", (111, 74, 0)),
    ("ground", 6, 255, "void", (81, 0, 81)),
    ("road", 7, 0, "flat", (128, 64, 128)),
    ("sidewalk", 8, 1, "flat", (244, 35, 232)),
    ("parking", 9, 255, "flat", (250, 170, 160)),
    ("rail track", 10, 255, "flat", (230, 150, 140)),
    ("building", 11, 2, "construction", (70, 70, 70)),
    ("wall", 12, 3, "construction", (102, 102, 156)),
    ("fence", 13, 4, "construction", (190, 153, 153)),
    ("guard rail", 14, 255, "construction", (180, 165, 180)),
    ("bridge", 15, 255, "construction", (150, 100, 100)),
    ("tunnel", 16, 255, "construction", (150, 120, 90)),
    ("pole", 17, 5, "object", (153, 153, 153)),
    ("polegroup", 18, 255, "object", (153, 153, 153)),
    ("traffic light", 19, 6, "object", (250, 170, 30)),
    ("traffic sign", 20, 7, "object", (220, 220, 0)),
    ("vegetation", 21, 8, "nature", (107, 142, 35)),
    ("terrain", 22, 9, "nature", (152, 251, 152)),
    ("sky", 23, 10, "sky", (70, 130, 180)),
    ("person", 24, 11, "human", (220, 20, 60)),
    ("rider", 25, 12, "human", (255, 0, 0)),
    ("car", 26, 13, "vehicle", (0, 0, 142)),
    ("truck", 27, 14, "vehicle", (0, 0, 70)),
    ("bus", 28, 15, "vehicle", (0, 60, 100)),
    ("caravan", 29, 255, "vehicle", (0, 0, 90)),
    ("trailer", 30, 255, "vehicle", (0, 0, 110)),
    ("train", 31, 16, "vehicle", (0, 80, 100)),
    ("motorcycle", 32, 17, "vehicle", (0, 0, 230)),
    ("bicycle", 33, 18, "vehicle", (119, 11, 32)),
    ("license plate", -1, -1, "vehicle", (0, 0, 142)),
]

# The 19 training classes in trainId order, derived from the table.
_TRAIN = sorted((t, name, i, colour) for name, i, t, _, colour in LABELS if 0 <= t < 255)
CLASS_NAMES = [name for _, name, _, _ in _TRAIN]
PALETTE = [list(colour) for _, _, _, colour in _TRAIN]
NATIVE_IDS = [i for _, _, i, _ in _TRAIN]  # trainId -> labelId, e.g. 0 -> 7 (road)
# Every stored labelId (0..33) -> trainId; other stored values are errors.
LABEL_ID_TO_TRAIN_ID = {i: t for _, i, t, _, _ in LABELS if i >= 0}


class CityscapesDataModule(DiskDataModule):
    """Cityscapes, fine annotations (gtFine): 19 classes at 2048x1024.

    The public test split's labels are withheld (its gtFine files are placeholders), so `test`
    evaluates on `val` by default; test-set scores come from the benchmark server, which takes
    predictions written as labelIds (`MaskWriter` with `native_ids: true`).

    Args:
        root: folder holding `leftImg8bit/` and `gtFine/` (from leftImg8bit_trainvaltest.zip and
            gtFine_trainvaltest.zip, https://www.cityscapes-dataset.com/downloads/).
        crop_size: (height, width) of the training crops.
        scale_range: (min, max) random rescale factor of training images before cropping.
        train_split: split folder used for training.
        val_split: split folder used for validation.
        test_split: split folder used by `test`; "val", because the public test split has no
            labels.
        predict_split: split folder whose images `predict` segments (labels not needed).
        **kwargs: loader and transform options of SegmentationDataModule.
    """

    class_names = CLASS_NAMES
    palette = PALETTE
    native_ids: list[int] = NATIVE_IDS

    def __init__(
        self,
        root: str,
        crop_size: tuple[int, int] = (512, 1024),
        scale_range: tuple[float, float] = (0.5, 2.0),
        train_split: str = "train",
        val_split: str = "val",
        test_split: str = "val",
        predict_split: str = "val",
        **kwargs,
    ) -> None:
        super().__init__(root, crop_size, scale_range, train_split, val_split, test_split,
                         predict_split, **kwargs)  # fmt: skip

    def build_dataset(self, split: Split, transform) -> FileDataset:
        pairs, label_map = split_pairs_and_labels(self.root, self.splits[split], split != "predict")
        return FileDataset(pairs, label_map, transform)


def split_pairs_and_labels(
    root: Path, split: str, labelled: bool = True
) -> tuple[list[tuple[Path, Path | None]], LabelMap]:
    """(image, label file) pairs of one split, sorted, and how to decode the label files.

    labelTrainIds files are used when every image has one, labelIds otherwise; every image must
    have its label file (unless `labelled` is False: then the label is None).
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"data.root: Cityscapes folder {show_path(root)} does not exist; {LAYOUT}")
    image_dir = root / "leftImg8bit" / split
    if not image_dir.is_dir():
        raise DataError(
            f"data.root: no split folder {show_path(image_dir)}"
            f"{list_folders(root / 'leftImg8bit')}; {LAYOUT}"
        )
    images = sorted(image_dir.glob(f"*/*{IMAGE_SUFFIX}"))
    if not images:
        raise DataError(
            f"{show_path(image_dir)}: no images (<city>/*{IMAGE_SUFFIX}) in this split folder; "
            f"{LAYOUT}"
        )
    if not labelled:
        return [(p, None) for p in images], LabelMap.identity(len(CLASS_NAMES))
    label_dir = root / "gtFine" / split
    if not label_dir.is_dir():
        raise DataError(f"data.root: no label folder {show_path(label_dir)}; {LAYOUT}")

    def label(image: Path, suffix: str) -> Path:
        prefix = image.name[: -len(IMAGE_SUFFIX)]
        return label_dir / image.parent.name / f"{prefix}{suffix}"

    train_ids = [label(p, TRAIN_IDS_SUFFIX) for p in images]
    if all(p.is_file() for p in train_ids):
        return list(zip(images, train_ids, strict=True)), LabelMap.identity(len(CLASS_NAMES))
    label_ids = [label(p, LABEL_IDS_SUFFIX) for p in images]
    for image, path in zip(images, label_ids, strict=True):
        if not path.is_file():
            raise DataError(
                f"{image}: label file not found: expected {path} (or the same name ending in "
                f"{TRAIN_IDS_SUFFIX}); is gtFine_trainvaltest.zip unzipped into {show_path(root)}?"
            )
    return list(zip(images, label_ids, strict=True)), LabelMap(
        LABEL_ID_TO_TRAIN_ID, len(CLASS_NAMES)
    )


def show_path(path: Path) -> str:
    """The path as given, and where it resolves when relative (configs use relative roots)."""
    return str(path) if path.is_absolute() else f"{path} (= {path.resolve()})"


def list_folders(folder: Path) -> str:
    if not folder.is_dir():
        return f" (and no {folder.name}/ folder at all)"
    names = sorted(p.name for p in folder.iterdir() if p.is_dir())
    return f" (found: {', '.join(names)})" if names else ""
