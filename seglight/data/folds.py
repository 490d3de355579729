"""K-fold cross-validation folds of a data module's training split (`data.fold`, `seglight cv`).

With `data.fold: {k: 5, index: 2, seed: 0}` the training split's samples are dealt into k seeded
folds; `train` is the other k-1 folds, read with the training pipeline, and `val` and `test` are
fold `index`, read with the evaluation pipeline (`test: split` keeps the dataset's own test
split). The dataset's own validation split is not used.

Dealing: a seeded shuffle, then round-robin (fold sizes differ by at most one); or, stratified
by class presence (`stratify`, default for datasets read from files), the iterative
stratification of Sechidis et al. (2011): each image's present classes are read from its mask
once, then the class in the fewest unassigned images is dealt first, each of its images to the
fold that still wants that class most (ties: the fold that wants most images, then seeded), so
a rare class lands in as many folds as it has images, up to k.
"""

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from seglight.data.dataset import FileDataset, Sample, SegmentationDataset
from seglight.errors import ConfigError


@dataclass
class Fold:
    """One fold of k-fold cross-validation (seglight.data.folds).

    Args:
        k: number of folds (>= 2).
        index: the held-out fold, 0 <= index < k: validated and tested on.
        seed: seed of the assignment of images to folds (the same seed, the same folds).
        stratify: deal by class presence (Sechidis et al. iterative stratification); null =
            yes for datasets read from files, a plain seeded shuffle otherwise (synthetic).
        test: "fold" = test on the held-out fold; "split" = on the dataset's own test split.
    """

    k: int = 5
    index: int = 0
    seed: int = 0
    stratify: bool | None = None
    test: Literal["fold", "split"] = "fold"

    def __post_init__(self) -> None:
        if self.k < 2:
            raise ConfigError(f"data.fold.k: cross-validation needs at least 2 folds, got {self.k}")
        if not 0 <= self.index < self.k:
            raise ConfigError(f"data.fold.index: must be in 0..{self.k - 1}, got {self.index}")
        if self.test not in ("fold", "split"):
            raise ConfigError(f"data.fold.test: 'fold' or 'split', got {self.test!r}")

    @property
    def splits(self) -> tuple[str, ...]:
        """The splits this fold replaces."""
        return ("train", "val", "test") if self.test == "fold" else ("train", "val")


class FoldSubset(SegmentationDataset):
    """The samples `indices` of `dataset`, in that order (its transform, labels and files)."""

    def __init__(self, dataset: SegmentationDataset, indices: Any) -> None:
        super().__init__(dataset.transform, dataset.ignore_index)
        self.dataset, self.indices = dataset, [int(i) for i in indices]
        self.num_labels = dataset.num_labels

    def __len__(self) -> int:
        return len(self.indices)

    def load(self, index: int) -> Sample:
        return self.dataset.load(self.indices[index])

    @property
    def pairs(self) -> list:
        """The files of these samples (file datasets: label checks and audits read them)."""
        return [self.dataset.pairs[i] for i in self.indices]

    def __getattr__(self, name: str) -> Any:  # read_mask, label_map, palette, ...
        if name == "dataset":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)


def fold_dataset(datamodule: Any, split: str, transform: Any) -> FoldSubset:
    """`split` ("train", "val" or "test") of `datamodule.fold`: a FoldSubset of the training split
    built with `transform`. The assignment is computed once per data module."""
    fold: Fold = datamodule.fold
    dataset = datamodule.prepared_dataset("train", transform)
    assignment = getattr(datamodule, "_fold_assignment", None)
    if assignment is None or len(assignment) != len(dataset):
        stratify = fold.stratify
        if stratify is None:
            stratify = isinstance(dataset, FileDataset)
        presence = class_presence(dataset, datamodule.num_classes) if stratify else None
        assignment = assign_folds(len(dataset), fold.k, fold.seed, presence)
        datamodule._fold_assignment = assignment
    held_out = assignment == fold.index
    return FoldSubset(dataset, np.flatnonzero(~held_out if split == "train" else held_out))


def assign_folds(n: int, k: int, seed: int, presence: np.ndarray | None = None) -> np.ndarray:
    """(n,) fold of each sample, 0..k-1: seeded round-robin, or with `presence` ((n, C) bool:
    which classes each sample holds) iterative stratification. Every fold gets a sample."""
    if n < k:
        raise ConfigError(f"data.fold.k: {k} folds of {n} training images; use k <= {n}")
    rng = np.random.default_rng(seed)
    if presence is None:
        folds = np.empty(n, np.int64)
        folds[rng.permutation(n)] = np.arange(n) % k
        return folds
    folds = _stratified(np.asarray(presence, bool), k, rng)
    if len(np.unique(folds)) < k:  # pathological class layouts: fall back to equal sizes
        return assign_folds(n, k, seed)
    return folds


def _stratified(presence: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Sechidis et al. (2011), iterative stratification: the rarest class first."""
    n = len(presence)
    wanted = np.outer(np.full(k, 1.0 / k), presence.sum(0))  # (k, C) images of each class
    wanted_total = np.full(k, n / k)
    folds = np.full(n, -1, np.int64)
    while (folds < 0).any():
        left = folds < 0
        counts = presence[left].sum(0)
        if counts.any():
            rarest = np.flatnonzero(counts == counts[counts > 0].min())
            c = int(rng.choice(rarest))
            batch, want = np.flatnonzero(left & presence[:, c]), wanted[:, c]
        else:  # images holding no class
            batch, want = np.flatnonzero(left), wanted_total
        for i in rng.permutation(batch):
            best = np.flatnonzero(want == want.max())
            best = best[wanted_total[best] == wanted_total[best].max()]
            f = int(rng.choice(best))
            folds[i] = f
            wanted[f] -= presence[i]
            wanted_total[f] -= 1
    return folds


def class_presence(dataset: SegmentationDataset, num_classes: int) -> np.ndarray:
    """(n, C) bool: the classes (multilabel: labels) with a pixel in each sample's mask, each
    mask read once (file datasets: the mask file alone, on threads)."""
    pairs = getattr(dataset, "pairs", None)
    by_file = pairs is not None and dataset.num_labels is None and hasattr(dataset, "read_mask")

    def present(i: int) -> np.ndarray:
        if by_file:
            mask = None if pairs[i][1] is None else dataset.read_mask(pairs[i][1])
        else:
            mask = dataset.load(i).mask
        out = np.zeros(num_classes, bool)
        if mask is None:
            return out
        if mask.ndim == 3:  # (H, W, L) 0/1 per label
            return (mask == 1).any(axis=(0, 1))[:num_classes]
        values = np.unique(mask)
        out[values[values < num_classes]] = True  # ignore_index dropped
        return out

    with ThreadPoolExecutor(max_workers=4) as pool:
        rows = list(pool.map(present, range(len(dataset))))
    return np.stack(rows) if rows else np.zeros((0, num_classes), bool)
