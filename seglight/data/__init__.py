"""Data modules: one per dataset, all on SegmentationDataModule."""

from seglight.data.base import SegmentationDataModule
from seglight.data.dataset import Sample, SegmentationDataset
from seglight.data.synthetic import SyntheticDataModule

__all__ = ["SegmentationDataModule", "SegmentationDataset", "Sample", "SyntheticDataModule"]
