"""The training sampler: a shuffle and per-sample augmentation seeds that a resumed run repeats.

Lightning's checkpoints hold neither the sampler's position inside an epoch nor the state of the
augmentation RNGs, so a resumed run would silently train on other samples, differently augmented.
Here both are pure functions of (run seed, epoch, sample index):

- the order of epoch e is DistributedSampler's permutation seeded with seed + e (and its shard of
  it per process under DDP, so Lightning's `use_distributed_sampler` leaves the sampler alone);
- each sample comes with its own augmentation seed, drawn from (seed, e) for every index of the
  dataset, which SegmentationDataset.__getitem__ reseeds its pipeline with: whichever worker
  loads a sample, however many batches came before, it is augmented alike;
- `resume_at(epoch, samples)` skips the samples already trained on in an interrupted epoch.
"""

from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler


class SampleKey(NamedTuple):
    """What the sampler yields and SegmentationDataset.__getitem__ accepts besides an int."""

    index: int
    seed: int  # 0 <= seed < 2**32: seeds the augmentation pipeline and the RNGs of loading


def sample_seeds(seed: int, epoch: int, length: int) -> np.ndarray:
    """(length,) uint32 augmentation seeds of epoch `epoch`, one per dataset index."""
    return np.random.default_rng([seed, epoch]).integers(0, 2**32, size=length, dtype=np.uint32)


class ResumableSampler(DistributedSampler):
    """Shuffled SampleKeys, the same on every run with the same seed; resumable mid-epoch.

    Args:
        dataset: the training dataset (its length is all the sampler needs).
        seed: the run's seed (SegmentationDataModule takes torch.initial_seed(), which follows
            `seed_everything`, and keeps it in its checkpoints).
        num_replicas: processes sharing the epoch; null = the world size under
            torch.distributed, else 1.
        rank: this process's rank; null = from torch.distributed, else 0.
        shuffle: shuffle the order of every epoch.
    """

    def __init__(
        self,
        dataset: Dataset,
        seed: int,
        num_replicas: int | None = None,
        rank: int | None = None,
        shuffle: bool = True,
    ) -> None:
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if not distributed:  # DistributedSampler would raise without a process group
            num_replicas, rank = num_replicas or 1, rank or 0
        super().__init__(dataset, num_replicas, rank, shuffle=shuffle, seed=seed)
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        # A skip belongs to the epoch it was set for: Lightning calls set_epoch(e) at every
        # epoch start, also when the interrupted epoch never drew from this sampler.
        if epoch != self.epoch:
            self._skip = 0
        super().set_epoch(epoch)

    def resume_at(self, epoch: int, samples: int) -> None:
        """Start at epoch `epoch`, leaving out the first `samples` keys of this process's shard
        (those trained on before the interruption); the skip applies to one pass only."""
        self.set_epoch(epoch)
        self._skip = samples

    def __iter__(self):
        # A generator: nothing runs before the first key is asked for. A DataLoader without
        # workers asks after Lightning's set_epoch; one with workers asks when its iterator is
        # created, which Lightning does before set_epoch on the first epoch of a run (hence
        # SegmentationDataModule calls resume_at before handing the loader over).
        indices = list(super().__iter__())  # this shard of the permutation of self.epoch
        skip, self._skip = self._skip, 0
        seeds = sample_seeds(self.seed, self.epoch, len(self.dataset))
        for index in indices[skip:]:
            yield SampleKey(index, int(seeds[index]))
