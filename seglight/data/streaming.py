"""StreamingDataModule: train, validate and test from splits written by `seglight convert`, in a
local folder or an S3 bucket, streamed by LitData (chunks fetched ahead and cached, each process
and loader worker reading its own share).

What stays as with files: the class table, task, ignore index and channels (from the
manifest), the augmentation pipeline, and each sample's augmentation, which follows from
(run seed, epoch, the sample's index in the source split) as with the file-based modules
(seglight.data.sampling): a streamed sample is the file-based one with the same index, whatever
order LitData reads the chunks in. Training order is LitData's (chunks shuffled, then samples
within a window), not the file-based sampler's.

Exact resume: the training loader's LitData state is saved in the data module's state (every
checkpoint) and restored when a resumed run builds its loader. Under DDP each evaluation image
goes to exactly one process (processes may run a batch fewer); training drops the last
incomplete batches so every process runs the same number of steps.
"""

from functools import partial
from typing import Any

import torch
from torch.utils.data import DataLoader

from seglight.data import object_store
from seglight.data.base import SegmentationDataModule, Split, _train_position
from seglight.data.dataset import SegmentationDataset, collate_padded
from seglight.data.stream_format import MANIFEST, parse_manifest
from seglight.errors import ConfigError, DataError

# What the manifests of a module's splits must agree on (and what the module takes from them).
SHARED = ("task", "class_names", "ignore_index", "in_channels", "exif_orientation", "bands")


def read_manifest(location: str, storage_options=None) -> dict[str, Any]:
    """The manifest of a converted split, or a one-line DataError saying what is missing."""
    data = object_store.read_file(location, MANIFEST, storage_options)
    if data is None:
        raise DataError(
            f"{location}: no {MANIFEST}: not a split written by `seglight convert`, or its "
            "conversion did not finish; run convert again (with --overwrite)"
        )
    return parse_manifest(data, f"{location}/{MANIFEST}")


class StreamingDataModule(SegmentationDataModule):
    """Splits written by `seglight convert`, streamed from a folder or s3://bucket/prefix.

    Args:
        train_dir: the converted training split (folder or s3://...); null: no training.
        val_dir: the converted validation split; null: no validation.
        test_dir: the converted test split; null: no test.
        storage_options: boto3 client arguments for s3:// (endpoint_url, region_name,
            aws_access_key_id, ...); null: boto3's environment variables and ~/.aws.
        cache_dir: where streamed chunks are cached; null: $LITDATA_CACHE_DIR, else
            ~/.lightning/chunks (local folders are read in place, not cached).
        max_cache_size: cache budget per node, e.g. "50GB"; null: LitData's default (75% of
            the free disk, keeping 50 GB free).
        shuffle: shuffle the training chunks and the samples within a window every epoch.
        **kwargs: the base module's options (batch_size, num_workers, ...); task comes from
            the manifest, and by default the transforms, mean and std the source module used.
    """

    def __init__(
        self,
        train_dir: str | None = None,
        val_dir: str | None = None,
        test_dir: str | None = None,
        storage_options: dict[str, Any] | None = None,
        cache_dir: str | None = None,
        max_cache_size: str | None = None,
        shuffle: bool = True,
        **kwargs: Any,
    ) -> None:
        self.dirs: dict[str, str] = {
            split: object_store.check_location(location, f"data.{split}_dir")
            for split, location in (("train", train_dir), ("val", val_dir), ("test", test_dir))
            if location is not None
        }
        if not self.dirs:
            raise ConfigError("data: give at least one of train_dir, val_dir, test_dir (the "
                              "outputs of `seglight convert`)")  # fmt: skip
        self.storage_options = dict(storage_options or {})
        self.cache_dir, self.max_cache_size, self.shuffle = cache_dir, max_cache_size, shuffle
        self.manifests = {s: read_manifest(d, storage_options) for s, d in self.dirs.items()}
        first_split, first = next(iter(self.manifests.items()))
        for split, manifest in self.manifests.items():
            for key in SHARED:
                if manifest[key] != first[key]:
                    raise ConfigError(
                        f"data.{split}_dir: its {key} {manifest[key]!r} differs from "
                        f"data.{first_split}_dir's {first[key]!r}; convert the splits from one "
                        "data config"
                    )
        given_task = kwargs.pop("task", None)
        if given_task not in (None, first["task"]):
            raise ConfigError(f"data.task: {given_task!r}, but the streamed splits were "
                              f"converted for {first['task']!r}; leave data.task out")  # fmt: skip
        self.class_names = list(first["class_names"])
        self.palette = first.get("palette")
        self.ignore_index = int(first["ignore_index"])
        self.manifest = first
        for key in ("mean", "std"):  # default: what the source module normalized with
            kwargs.setdefault(key, first["normalization"][key])
        self._train_loader = None
        self._stream_state: dict[str, Any] | None = None
        super().__init__(task=first["task"], **kwargs)
        if self.fold is not None:  # folds select files of one split; a stream is read whole
            raise ConfigError("data.fold: StreamingDataModule cannot split a stream into folds; "
                              "run `seglight cv` on the source data config")  # fmt: skip

    @property
    def in_channels(self) -> int:
        return int(self.manifest["in_channels"])

    def default_train_transforms(self) -> list:
        return self.manifest["train_transforms"]  # the source module's, recorded by convert

    def default_eval_transforms(self) -> list:
        return self.manifest["eval_transforms"]

    def build_dataset(self, split: Split, transform: Any):
        raise ConfigError(
            "StreamingDataModule: `audit` and `convert` read a data module's files; run them on "
            "the source data config (the stream's counts and band statistics are in its "
            f"{MANIFEST})"
        )

    def setup(self, stage: str) -> None:
        # Built here, after DDP started: LitData reads the rank and world size when a streamed
        # dataset is created.
        if self.train_seed is None:
            self.train_seed = _initial_seed()
        splits = {"fit": ["train", "val"], "validate": ["val"], "test": ["test"],
                  "predict": ["predict"]}[stage]  # fmt: skip
        for split in splits:
            if split in self.datasets:
                continue
            if split == "predict":
                if self.predict_dir is None:
                    raise ConfigError("data.predict_dir: StreamingDataModule has no predict "
                                      "split; give a folder of images to predict")  # fmt: skip
                self.datasets[split] = self.image_folder(self.predict_dir, self.pipelines["eval"])
            elif split in self.dirs:
                self.datasets[split] = self._streamed(split)
            elif not (stage == "fit" and split == "val"):
                raise ConfigError(f"data.{split}_dir: not given, and `{stage}` needs the "
                                  f"{split} split; convert it with `seglight convert --split "
                                  f"{split}`")  # fmt: skip

    def _streamed(self, split: Split):
        from seglight.data.stream_dataset import StreamedSplit  # imports litdata

        object_store.allow_plain_http(self.storage_options)
        train = split == "train"
        samples = SegmentationDataset(self.pipelines["train" if train else "eval"],
                                      self.ignore_index)  # fmt: skip
        if self.task == "multilabel":
            samples.num_labels = self.num_classes
        return StreamedSplit(
            self.dirs[split], self.manifests[split], samples,
            seed=self.train_seed if train else None, shuffle=self.shuffle and train,
            drop_last=train, storage_options=object_store.boto_options(self.storage_options),
            cache_dir=self.cache_dir,
            max_cache_size=self.max_cache_size,
        )  # fmt: skip

    def train_dataloader(self):
        if "train" not in self.datasets:
            raise ConfigError("data.train_dir: not given; `fit` needs the converted train split")
        loader = self._stream_loader("train", self.batch_size, drop_last=True)
        position, self._resume_position = self._resume_position, None
        state, self._stream_state = self._stream_state, None
        epoch, batches = position or _train_position(self.trainer)
        if batches and state is not None:
            # mid-epoch: where the saved loader stood. The chunk cache may have moved (another
            # cache_dir, node or machine); the data's identity is its URL, checked by LitData.
            dataset_state = state["dataset"]
            if dataset_state.get("input_dir_url"):
                dataset_state["input_dir_path"] = self.datasets["train"].input_dir.path
            loader.load_state_dict(state)
        else:
            loader.current_epoch = epoch  # LitData counts epochs from 1; its next is epoch + 1
        self._train_loader = loader
        return loader

    def val_dataloader(self):
        if "val" not in self.datasets:
            return []  # no validation split: Lightning skips validation
        return self._stream_loader("val", self.eval_batch_size)

    def test_dataloader(self):
        return self._stream_loader("test", self.eval_batch_size)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict", self.eval_batch_size)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        epoch, batches = _train_position(self.trainer)
        if batches and self._train_loader is not None:  # mid-epoch: the loader's own state
            state["stream"] = self._train_loader.state_dict()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._stream_state = state_dict.get("stream")

    def _stream_loader(self, split: Split, batch_size: int, drop_last: bool = False):
        from litdata import StreamingDataLoader

        workers = self.num_workers
        return StreamingDataLoader(
            self.datasets[split], batch_size=batch_size, num_workers=workers,
            drop_last=drop_last, shuffle=self.shuffle and split == "train",
            pin_memory=self._pin_memory(),
            collate_fn=partial(collate_padded, ignore_index=self.ignore_index),
            persistent_workers=False,  # LitData restarts its workers at every epoch
        )  # fmt: skip


def _initial_seed() -> int:
    return torch.initial_seed() % 2**63
