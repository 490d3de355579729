"""SegmentationDataModule: what all datasets share — loaders, workers, seeding, transforms, classes.

A subclass sets `class_names` (and optionally `palette`) and implements `build_dataset(split,
transform)`. The CLI links `num_classes`, `ignore_index` and `class_names` from here into the
model, so a config states them once.
"""

import os
import warnings
from collections.abc import Sequence
from functools import partial
from typing import Any, Literal

import cv2
import lightning as L
import torch
from lightning.fabric.utilities.seed import pl_worker_init_function
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader

from seglight._moved import moved
from seglight.data.dataset import FileDataset, SegmentationDataset, collate_padded
from seglight.data.folds import Fold, fold_dataset
from seglight.data.predict import ImageFolderDataset, folder_dataset
from seglight.data.sampling import ResumableSampler
from seglight.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TransformSpec,
    build_pipeline,
    check_normalization,
)
from seglight.errors import ConfigError

Split = Literal["train", "val", "test", "predict"]
Task = Literal["multiclass", "binary", "multilabel"]
TASKS = ("multiclass", "binary", "multilabel")


def default_num_workers() -> int:
    """One worker per usable CPU core, less one for the main process, at most 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    return max(0, min(8, cores - 1))


def seed_worker(worker_id: int) -> None:
    """Seed python/numpy/torch per worker from the run's seed (Lightning's scheme), reseed the
    dataset's albumentations pipeline, and stop OpenCV from starting its own thread pool in
    every worker (N workers x N cores threads).

    Each worker holds a copy of the pipeline with the same RNG state: unless reseeded, all
    workers would apply the same sequence of augmentations. torch.initial_seed() differs per
    worker and per epoch, and follows the run's seed.
    """
    cv2.setNumThreads(0)
    pl_worker_init_function(worker_id)
    dataset = torch.utils.data.get_worker_info().dataset
    if isinstance(dataset, SegmentationDataset):
        dataset.reseed(torch.initial_seed() % 2**32)


class SegmentationDataModule(L.LightningDataModule):
    """Base class of seglight's data modules.

    Args:
        batch_size: training batch size per process.
        eval_batch_size: batch size for validation, test and predict; null = batch_size.
        num_workers: data-loading processes; null = one per CPU core less one, at most 8.
        persistent_workers: keep workers alive between epochs (when num_workers > 0).
        pin_memory: pin batches in page-locked memory; null = only when training on a GPU.
        train_transforms: albumentations transforms for training, as a list of
            {name: <albumentations class>, <argument>: <value>}; null = the dataset's preset.
        eval_transforms: transforms for validation/test/predict; null = the dataset's preset
            (none: evaluation at the original resolution).
        mean: per-channel mean for normalization (of images scaled to [0, 1]).
        std: per-channel standard deviation for normalization.
        predict_dir: a folder of images (jpg, png, ...; no masks needed) for `predict`
            instead of the dataset's predict split.
        exif_orientation: read photos as displayed (EXIF orientation applied, as annotation
            tools show them); false = the stored pixels, for masks drawn on those.
        rgb_bands: the 3 channels (after any band selection) drawn as red, green, blue in
            validation images and overlays; null = the first three.
        task: "multiclass" (one class per pixel, softmax), "binary" (two classes, background
            and foreground: one logit, sigmoid and a threshold) or "multilabel" (one 0/1 mask
            per class, a pixel may carry several or none: one sigmoid per label); linked into
            the model by the CLI.
        fold: k-fold cross-validation (`seglight cv` sets it): train on the other folds of the
            training split, validate and test on fold `index`, e.g. {k: 5, index: 2, seed: 0};
            null = the dataset's own splits (seglight.data.folds).
    """

    class_names: list[str] = []
    palette: list[list[int]] | None = None
    ignore_index: int = 255

    def __init__(
        self,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int | None = None,
        persistent_workers: bool = True,
        pin_memory: bool | None = None,
        train_transforms: list[TransformSpec] | None = None,
        eval_transforms: list[TransformSpec] | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        predict_dir: str | None = None,
        exif_orientation: bool = True,
        rgb_bands: list[int] | None = None,
        task: Task = "multiclass",
        fold: Fold | None = None,
    ) -> None:
        super().__init__()
        self.fold = Fold(**fold) if isinstance(fold, dict) else fold
        if rgb_bands is not None and (len(rgb_bands) != 3 or min(rgb_bands) < 0):
            raise ConfigError(f"data.rgb_bands: 3 channel indices (>= 0), got {rgb_bands}")
        self.rgb_bands = list(rgb_bands) if rgb_bands is not None else None
        if task not in TASKS:
            raise ConfigError(f"data.task: expected one of {', '.join(TASKS)}, got {task!r}")
        self.task = task
        self.exif_orientation = exif_orientation
        self.predict_dir = predict_dir
        for key, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if value is not None and value < 1:
                raise ConfigError(f"data.{key}: must be >= 1, got {value}")
        if num_workers is not None and num_workers < 0:
            raise ConfigError(f"data.num_workers: must be >= 0 (0 = load in the main process), "
                              f"got {num_workers}")  # fmt: skip
        check_normalization(mean, std)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = default_num_workers() if num_workers is None else num_workers
        self.persistent_workers = persistent_workers
        self.pin_memory = pin_memory
        self.train_transforms = train_transforms
        self.eval_transforms = eval_transforms
        self.mean, self.std = tuple(mean), tuple(std)
        self.datasets: dict[str, SegmentationDataset] = {}
        # Seed of the training order and augmentations (see sampling.py): torch.initial_seed()
        # at the first setup, i.e. `seed_everything`'s; a resumed run takes the checkpoint's.
        self.train_seed: int | None = None
        self._resume_position: tuple[int, int] | None = None  # (epoch, batches), from a checkpoint
        # Build the pipelines now so a bad transform in the config fails before training starts.
        self.pipelines = {
            "train": self._pipeline(train_transforms, self.default_train_transforms(), "train"),
            "eval": self._pipeline(eval_transforms, self.default_eval_transforms(), "eval"),
        }

    # --- what a dataset subclass provides ---------------------------------------------------

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def in_channels(self) -> int:
        """Channels of the images the model receives (the CLI links it into
        model.in_channels): 3 (RGB) unless a subclass reads other images."""
        return 3

    def build_dataset(self, split: Split, transform: Any) -> SegmentationDataset:
        raise NotImplementedError

    def default_train_transforms(self) -> list[TransformSpec]:
        return [{"name": "HorizontalFlip", "p": 0.5}]

    def default_eval_transforms(self) -> list[TransformSpec]:
        return []

    # --- LightningDataModule ----------------------------------------------------------------

    def setup(self, stage: str) -> None:
        if self.train_seed is None:
            self.train_seed = torch.initial_seed() % 2**63  # DistributedSampler adds the epoch
        splits: dict[str, list[Split]] = {
            "fit": ["train", "val"],
            "validate": ["val"],
            "test": ["test"],
            "predict": ["predict"],
        }
        for split in splits[stage]:
            if split not in self.datasets:
                pipeline = self.pipelines["train" if split == "train" else "eval"]
                if split == "predict" and self.predict_dir is not None:
                    self.datasets[split] = self.image_folder(self.predict_dir, pipeline)
                elif self.fold is not None and split in self.fold.splits:
                    self.datasets[split] = fold_dataset(self, split, pipeline)
                else:
                    self.datasets[split] = self.prepared_dataset(split, pipeline)

    def prepared_dataset(self, split: Split, transform: Any) -> SegmentationDataset:
        """`build_dataset` with this module's reading options applied (EXIF orientation): what
        setup and `seglight audit` read."""
        dataset = self.build_dataset(split, transform)
        if isinstance(dataset, FileDataset):
            dataset.exif_orientation = self.exif_orientation
            dataset.bands = getattr(self, "bands", None)
        if self.task == "multilabel":
            dataset.num_labels = self.num_classes  # masks (L, H, W), unlabelled too
        return dataset

    def image_folder(self, folder: str, transform: Any) -> ImageFolderDataset:
        """Every image under `folder`, sub-folders included, without masks: for `predict`
        (seglight.data.predict.folder_dataset)."""
        dataset = folder_dataset(folder, transform, max(self.num_classes, 1), self.ignore_index,
                                 self.exif_orientation)  # fmt: skip
        dataset.bands = getattr(self, "bands", None)
        return dataset

    def train_dataloader(self) -> DataLoader:
        # drop_last: a last batch of 1 would break BatchNorm and skew the step's loss.
        return self._loader("train", self.batch_size, shuffle=True, drop_last=True)

    def state_dict(self) -> dict[str, Any]:
        """The training sampler's seed and position, and data.mean / data.std, saved in every
        checkpoint by Lightning.

        The position is saved rather than read from Lightning's loop counters on resume: a
        resumed run builds its training loader (to size the LR schedule, estimated_stepping_
        batches) and with workers already draws from its sampler before Lightning restores
        those counters, but after it restored this."""
        return {
            "train_seed": self.train_seed,
            "train_position": list(_train_position(self.trainer)),
            # what the model's inputs were normalized with: `export` writes it into the graph's
            # metadata (seglight.checkpoints.stored_normalization)
            "normalization": {"mean": list(self.mean), "std": list(self.std)},
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("train_seed") is not None:
            self.train_seed = int(state_dict["train_seed"])
        if state_dict.get("train_position") is not None:
            epoch, batches = state_dict["train_position"]
            self._resume_position = int(epoch), int(batches)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict", self.eval_batch_size)

    # --- helpers ----------------------------------------------------------------------------

    def _pipeline(self, specs, preset, kind: str):
        chosen = preset if specs is None else specs
        return build_pipeline(
            chosen, self.ignore_index, self.mean, self.std, f"data.{kind}_transforms"
        )

    def _loader(
        self, split: Split, batch_size: int, shuffle: bool = False, drop_last: bool = False
    ):
        dataset = self.datasets[split]
        workers = self.num_workers
        train = split == "train"
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=self._train_sampler(batch_size, shuffle) if train else _eval_sampler(dataset),
            # Its own generator: creating an iterator draws a seed for the workers from it, which
            # would otherwise come from torch's global RNG, between a checkpoint and the next
            # step of the original run but not of the resumed one (see seglight/resume.py).
            generator=torch.Generator().manual_seed(self.train_seed or 0) if train else None,
            drop_last=drop_last and len(dataset) > batch_size,
            num_workers=workers,
            persistent_workers=self.persistent_workers and workers > 0,
            pin_memory=self._pin_memory(),
            worker_init_fn=seed_worker if workers > 0 else None,
            # A dataset may bring its own (prediction folders: unreadable files dropped).
            collate_fn=getattr(dataset, "collate_fn", None)
            or partial(collate_padded, ignore_index=self.ignore_index),
        )

    def _train_sampler(self, batch_size: int, shuffle: bool) -> ResumableSampler:
        """The training sampler, placed where Lightning's loops are: on a resumed run, in the
        interrupted epoch after the batches already trained on."""
        if self.train_seed is None:
            self.train_seed = torch.initial_seed() % 2**63
        sampler = ResumableSampler(self.datasets["train"], self.train_seed, shuffle=shuffle)
        position, self._resume_position = self._resume_position, None
        epoch, batches = position or _train_position(self.trainer)
        sampler.resume_at(epoch, batches * batch_size)
        if batches:
            # Lightning warns that a mid-epoch resume "can cause unreliable results" unless the
            # loader has a state_dict; this sampler resumes exactly, from the datamodule's state.
            warnings.filterwarnings("ignore", "You're resuming from a checkpoint that ended before")
            rank_zero_info(
                f"seglight: resuming epoch {epoch} after its first {batches} batches, on the "
                "samples and augmentations the interrupted run would have used"
            )
        return sampler

    def _pin_memory(self) -> bool:
        if self.pin_memory is not None:
            return self.pin_memory
        trainer = self.trainer
        return trainer is not None and trainer.accelerator.__class__.__name__ == "CUDAAccelerator"


def _train_position(trainer) -> tuple[int, int]:
    """(epoch, batches of it already trained on) where Lightning's fit loop stands: where a new
    training loader starts, and what a checkpoint saved now must resume from.

    The epoch counters count epochs ready/started/processed/completed; an epoch whose training
    batches did not all run has started > processed (a checkpoint from `on_train_batch_end`, or
    `on_validation_end` within or at the end of the epoch) and is resumed where it stood:
    `batch_progress.current.processed` batches into it, the same count Lightning resumes its
    batch index from. Otherwise (a new run, a checkpoint from `on_train_epoch_end`, a reload of
    the loaders at an epoch start) the next epoch starts from its first batch.
    """
    if trainer is None:
        return 0, 0
    epochs = trainer.fit_loop.epoch_progress.current
    if epochs.started > epochs.processed:
        return epochs.processed, trainer.fit_loop.epoch_loop.batch_progress.current.processed
    return epochs.processed, 0


def _eval_sampler(dataset: SegmentationDataset):
    """Under DDP, each image of an evaluation split goes to exactly one process.

    Lightning's default DistributedSampler pads the split to a multiple of the world size by
    repeating images, and the repeats would be counted twice in the confusion matrix. This one
    does not pad (processes may run one batch fewer), and Lightning keeps a sampler that is
    already a DistributedSampler. Single process: None, the DataLoader's default order.
    """
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return None
    if torch.distributed.get_world_size() == 1:
        return None
    return UnrepeatedDistributedSampler(dataset, shuffle=False)


__getattr__ = moved(__name__, {"DiskDataModule": "seglight.data.disk"})  # its old path
