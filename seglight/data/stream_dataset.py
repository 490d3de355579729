"""StreamedSplit: a LitData StreamingDataset whose items are seglight's batch-dict samples.

Kept apart from seglight.data.streaming so that importing seglight.data never imports litdata."""

from typing import Any

import numpy as np
from litdata import StreamingDataset

from seglight.data.dataset import SegmentationDataset
from seglight.data.sampling import sample_seeds
from seglight.data.stream_format import decode_item


class StreamedSplit(StreamingDataset):
    """One converted split, streamed. Each item is decoded (seglight.data.stream_format) and
    transformed by `samples` (a SegmentationDataset holding the pipeline, ignore index and label
    count); with a `seed` (training), sample i of 0-based epoch e is augmented with the seed
    the file-based sampler gives it, sample_seeds(seed, e, length)[i].

    Args:
        location: folder or s3://bucket/prefix written by `seglight convert`.
        manifest: its seglight.json.
        samples: the transform and mask options.
        seed: the run's seed for per-sample augmentation seeds; None: no augmentation seeds
            (evaluation).
        shuffle, drop_last, storage_options, cache_dir, max_cache_size: LitData's.
    """

    def __init__(
        self, location: str, manifest: dict[str, Any], samples: SegmentationDataset,
        seed: int | None, shuffle: bool, drop_last: bool, storage_options: dict[str, Any],
        cache_dir: str | None, max_cache_size: str | None,
    ) -> None:  # fmt: skip
        options: dict[str, Any] = {}
        if max_cache_size is not None:
            options["max_cache_size"] = max_cache_size
        super().__init__(
            location, cache_dir=cache_dir, shuffle=shuffle, drop_last=drop_last,
            seed=(seed or 0) % 2**31, storage_options=storage_options, **options,
        )  # fmt: skip
        self.manifest, self.samples, self.seed = manifest, samples, seed
        self.length = int(manifest["samples"])
        self._seeds: tuple[int, np.ndarray] | None = None  # (epoch, its seeds), computed once

    def __getitem__(self, index: Any) -> dict:
        source_index, sample = decode_item(super().__getitem__(index), self.manifest)
        if self.seed is None:
            return self.samples.transform_sample(sample)
        return self.samples.transform_seeded(sample, int(self._epoch_seeds()[source_index]))

    def _epoch_seeds(self) -> np.ndarray:
        epoch = max(int(self.current_epoch) - 1, 0)  # LitData counts epochs from 1
        if self._seeds is None or self._seeds[0] != epoch:
            self._seeds = (epoch, sample_seeds(self.seed, epoch, self.length))
        return self._seeds[1]
