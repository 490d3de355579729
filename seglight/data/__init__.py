"""Data modules: one per dataset, all on SegmentationDataModule."""

from seglight.data.ade20k import ADE20KDataModule
from seglight.data.base import SegmentationDataModule
from seglight.data.cityscapes import CityscapesDataModule
from seglight.data.dataset import FileDataset, Sample, SegmentationDataset
from seglight.data.folder import FolderDataModule
from seglight.data.streaming import StreamingDataModule
from seglight.data.synthetic import SyntheticDataModule
from seglight.data.voc import VOCDataModule

__all__ = [
    "SegmentationDataModule",
    "SegmentationDataset",
    "FileDataset",
    "Sample",
    "SyntheticDataModule",
    "VOCDataModule",
    "FolderDataModule",
    "CityscapesDataModule",
    "ADE20KDataModule",
    "StreamingDataModule",
]
