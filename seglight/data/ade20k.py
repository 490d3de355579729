"""ADE20K, the SceneParsing benchmark (ADEChallengeData2016): 150 classes.

    python -m seglight fit --config configs/ade20k.yaml

Layout (unzip ADEChallengeData2016.zip into <root>; <root> may also be that folder itself):

    <root>/ADEChallengeData2016/images/{training,validation}/<name>.jpg
    <root>/ADEChallengeData2016/annotations/{training,validation}/<name>.png

Annotations store 0 for "other / unlabelled" and k = 1..150 for the classes of objectInfo150;
training ids are k - 1 and 0 becomes ignore (mmsegmentation's `reduce_zero_label`). Values above
150 are errors. `native_ids` maps predictions back to 1..150, the benchmark's submission format.
"""

from pathlib import Path

from seglight.data.base import Split
from seglight.data.cityscapes import list_folders, show_path
from seglight.data.dataset import FileDataset
from seglight.data.disk import DiskDataModule
from seglight.data.io import LabelMap
from seglight.errors import DataError

DOWNLOAD_URL = "http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip"
FOLDER = "ADEChallengeData2016"
SPLIT_ALIASES = {"train": "training", "val": "validation"}
LAYOUT = (
    "expected the ADE20K SceneParsing layout:\n"
    f"  <root>/{FOLDER}/images/{{training,validation}}/<name>.jpg\n"
    f"  <root>/{FOLDER}/annotations/{{training,validation}}/<name>.png\n"
    f"Download {DOWNLOAD_URL} (the SceneParsing benchmark, http://sceneparsing.csail.mit.edu/) "
    "and unzip it into <root>"
)

# The 150 classes in training-id order (stored value = id + 1): objectInfo150's order, named
# as mmsegmentation's ADE20KDataset names them ("bed " there has a stray trailing space, dropped
# here). Colours: mmsegmentation's ADE20K palette, exactly (it gives ids 6 "road" and 48
# "skyscraper" the same grey; kept, so colour-coded outputs match mmsegmentation's).
# fmt: off
CLASS_NAMES = [  # training id: the first on each line is given at its end
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed",             # 0
    "windowpane", "grass", "cabinet", "sidewalk", "person", "earth", "door",          # 8
    "table", "mountain", "plant", "curtain", "chair", "car", "water", "painting",     # 15
    "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat",    # 23
    "fence", "desk", "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion",     # 32
    "base", "box", "column", "signboard", "chest of drawers", "counter", "sand",      # 40
    "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path",          # 47
    "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway",    # 53
    "river", "bridge", "bookcase", "blind", "coffee table", "toilet", "flower",       # 60
    "book", "hill", "bench", "countertop", "stove", "palm", "kitchen island",         # 67
    "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",      # 74
    "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight",        # 81
    "booth", "television receiver", "airplane", "dirt track", "apparel", "pole",      # 88
    "land", "bannister", "escalator", "ottoman", "bottle", "buffet", "poster",        # 94
    "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer",          # 101
    "plaything", "swimming pool", "stool", "barrel", "basket", "waterfall", "tent",   # 108
    "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank",              # 115
    "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher",      # 123
    "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light",      # 130
    "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor",                # 137
    "bulletin board", "shower", "radiator", "glass", "clock", "flag",                 # 144
]
PALETTE = [
    [120, 120, 120], [180, 120, 120], [6, 230, 230], [80, 50, 50], [4, 200, 3],       # 0
    [120, 120, 80], [140, 140, 140], [204, 5, 255], [230, 230, 230], [4, 250, 7],     # 5
    [224, 5, 255], [235, 255, 7], [150, 5, 61], [120, 120, 70], [8, 255, 51],         # 10
    [255, 6, 82], [143, 255, 140], [204, 255, 4], [255, 51, 7], [204, 70, 3],         # 15
    [0, 102, 200], [61, 230, 250], [255, 6, 51], [11, 102, 255], [255, 7, 71],        # 20
    [255, 9, 224], [9, 7, 230], [220, 220, 220], [255, 9, 92], [112, 9, 255],         # 25
    [8, 255, 214], [7, 255, 224], [255, 184, 6], [10, 255, 71], [255, 41, 10],        # 30
    [7, 255, 255], [224, 255, 8], [102, 8, 255], [255, 61, 6], [255, 194, 7],         # 35
    [255, 122, 8], [0, 255, 20], [255, 8, 41], [255, 5, 153], [6, 51, 255],           # 40
    [235, 12, 255], [160, 150, 20], [0, 163, 255], [140, 140, 140], [250, 10, 15],    # 45
    [20, 255, 0], [31, 255, 0], [255, 31, 0], [255, 224, 0], [153, 255, 0],           # 50
    [0, 0, 255], [255, 71, 0], [0, 235, 255], [0, 173, 255], [31, 0, 255],            # 55
    [11, 200, 200], [255, 82, 0], [0, 255, 245], [0, 61, 255], [0, 255, 112],         # 60
    [0, 255, 133], [255, 0, 0], [255, 163, 0], [255, 102, 0], [194, 255, 0],          # 65
    [0, 143, 255], [51, 255, 0], [0, 82, 255], [0, 255, 41], [0, 255, 173],           # 70
    [10, 0, 255], [173, 255, 0], [0, 255, 153], [255, 92, 0], [255, 0, 255],          # 75
    [255, 0, 245], [255, 0, 102], [255, 173, 0], [255, 0, 20], [255, 184, 184],       # 80
    [0, 31, 255], [0, 255, 61], [0, 71, 255], [255, 0, 204], [0, 255, 194],           # 85
    [0, 255, 82], [0, 10, 255], [0, 112, 255], [51, 0, 255], [0, 194, 255],           # 90
    [0, 122, 255], [0, 255, 163], [255, 153, 0], [0, 255, 10], [255, 112, 0],         # 95
    [143, 255, 0], [82, 0, 255], [163, 255, 0], [255, 235, 0], [8, 184, 170],         # 100
    [133, 0, 255], [0, 255, 92], [184, 0, 255], [255, 0, 31], [0, 184, 255],          # 105
    [0, 214, 255], [255, 0, 112], [92, 255, 0], [0, 224, 255], [112, 224, 255],       # 110
    [70, 184, 160], [163, 0, 255], [153, 0, 255], [71, 255, 0], [255, 0, 163],        # 115
    [255, 204, 0], [255, 0, 143], [0, 255, 235], [133, 255, 0], [255, 0, 235],        # 120
    [245, 0, 255], [255, 0, 122], [255, 245, 0], [10, 190, 212], [214, 255, 0],       # 125
    [0, 204, 255], [20, 0, 255], [255, 255, 0], [0, 153, 255], [0, 41, 255],          # 130
    [0, 255, 204], [41, 0, 255], [41, 255, 0], [173, 0, 255], [0, 245, 255],          # 135
    [71, 0, 255], [122, 0, 255], [0, 255, 184], [0, 92, 255], [184, 255, 0],          # 140
    [0, 133, 255], [255, 214, 0], [25, 194, 194], [102, 255, 0], [92, 0, 255],        # 145
]
# fmt: on
NATIVE_IDS = list(range(1, len(CLASS_NAMES) + 1))  # training id k -> stored value k + 1
# Stored 0 ("other") -> ignore, k -> k - 1; other stored values are errors.
STORED_TO_TRAIN_ID = {0: 255} | {k: k - 1 for k in range(1, len(CLASS_NAMES) + 1)}


class ADE20KDataModule(DiskDataModule):
    """ADE20K SceneParsing (ADEChallengeData2016): 150 classes, images of varied sizes.

    20,210 training and 2,000 validation images. The challenge's test images have no public
    labels, so `test` evaluates on "validation" by default. Evaluation is at each image's
    original size (mmsegmentation resizes to a short side of 512 and scores the prediction
    resized back to the original size).

    Args:
        root: folder holding ADEChallengeData2016/ (or that folder itself), from
            http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip.
        crop_size: (height, width) of the training crops.
        scale_range: (min, max) random rescale factor of training images before cropping.
        train_split: split used for training: "training" (alias "train").
        val_split: split used for validation: "validation" (alias "val").
        test_split: split used by `test`; "validation", because the challenge's test set has no
            public labels.
        predict_split: split whose images `predict` segments (labels not needed).
        **kwargs: loader and transform options of SegmentationDataModule.
    """

    class_names = CLASS_NAMES
    palette = PALETTE
    native_ids: list[int] = NATIVE_IDS

    def __init__(
        self,
        root: str,
        crop_size: tuple[int, int] = (512, 512),
        scale_range: tuple[float, float] = (0.5, 2.0),
        train_split: str = "training",
        val_split: str = "validation",
        test_split: str = "validation",
        predict_split: str = "validation",
        **kwargs,
    ) -> None:
        super().__init__(root, crop_size, scale_range, train_split, val_split, test_split,
                         predict_split, **kwargs)  # fmt: skip

    def build_dataset(self, split: Split, transform) -> FileDataset:
        pairs = split_pairs(self.root, self.splits[split], split != "predict")
        return FileDataset(pairs, LabelMap(STORED_TO_TRAIN_ID, len(CLASS_NAMES)), transform)


def dataset_folder(root: Path) -> Path:
    """The ADEChallengeData2016 folder: inside `root`, or `root` itself."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"data.root: ADE20K folder {show_path(root)} does not exist; {LAYOUT}")
    if (root / FOLDER).is_dir():
        return root / FOLDER
    if (root / "images").is_dir() or root.name == FOLDER:
        return root
    raise DataError(f"data.root: no {FOLDER}/ folder in {show_path(root)}; {LAYOUT}")


def split_pairs(root: Path, split: str, labelled: bool = True) -> list[tuple[Path, Path | None]]:
    """(image, annotation) pairs of one split, sorted by name; every image must have its
    annotation (unless `labelled` is False: then the annotation is None)."""
    base = dataset_folder(root)
    folder = SPLIT_ALIASES.get(split, split)
    image_dir = base / "images" / folder
    if not image_dir.is_dir():
        raise DataError(
            f"data.root: no split folder {show_path(image_dir)}"
            f"{list_folders(base / 'images')}; {LAYOUT}"
        )
    images = sorted(image_dir.glob("*.jpg"))
    if not images:
        raise DataError(f"{show_path(image_dir)}: no images (*.jpg) in this split folder; {LAYOUT}")
    if not labelled:
        return [(p, None) for p in images]
    label_dir = base / "annotations" / folder
    if not label_dir.is_dir():
        raise DataError(f"data.root: no annotation folder {show_path(label_dir)}; {LAYOUT}")
    pairs = [(p, label_dir / f"{p.stem}.png") for p in images]
    for image, label in pairs:
        if not label.is_file():
            raise DataError(f"{image}: annotation file not found: expected {label}")
    return pairs
