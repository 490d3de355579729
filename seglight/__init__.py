"""seglight: semantic segmentation research template on PyTorch Lightning."""

from seglight.data import SegmentationDataModule, SyntheticDataModule
from seglight.module import SegmentationModule

__all__ = ["SegmentationModule", "SegmentationDataModule", "SyntheticDataModule"]
__version__ = "0.1.0"
