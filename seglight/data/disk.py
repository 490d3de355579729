"""DiskDataModule: a dataset on disk under `root` with named splits, trained on random crops (VOC,
Cityscapes and ADE20K build on it)."""

from pathlib import Path

from seglight.data.base import SegmentationDataModule
from seglight.data.transforms import TransformSpec, train_preset
from seglight.errors import ConfigError


class DiskDataModule(SegmentationDataModule):
    """A dataset on disk under `root`, with named splits, trained on random crops with the
    benchmark preset (transforms.train_preset). VOC, Cityscapes and ADE20K build on it.

    Args:
        root: the dataset's folder.
        crop_size: (height, width) of the training crops.
        scale_range: (min, max) random rescale factor of training images before cropping.
        train_split, val_split, test_split, predict_split: the dataset's name of each split
            (VOC: null for the default training list).
        **kwargs: loader and transform options of SegmentationDataModule.
    """

    def __init__(
        self,
        root: str,
        crop_size: tuple[int, int],
        scale_range: tuple[float, float],
        train_split: str | None,
        val_split: str,
        test_split: str,
        predict_split: str,
        **kwargs,
    ) -> None:
        h, w = (int(v) for v in crop_size)
        lo, hi = (float(v) for v in scale_range)
        if h < 1 or w < 1:
            raise ConfigError(f"data.crop_size: must be positive (height, width), got {crop_size}")
        if not 0 < lo <= hi:
            raise ConfigError(f"data.scale_range: need 0 < min <= max, got {scale_range}")
        self.root = Path(root).expanduser()
        self.crop_size, self.scale_range = (h, w), (lo, hi)
        self.splits = {"train": train_split, "val": val_split, "test": test_split,
                       "predict": predict_split}  # fmt: skip
        super().__init__(**kwargs)

    def default_train_transforms(self) -> list[TransformSpec]:
        return train_preset(self.crop_size, self.scale_range)
