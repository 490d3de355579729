"""Writing one split of any seglight data module in the streamed format (seglight.data.
stream_format) with litdata.optimize: parallel over CPU processes, to a folder or s3://.

Every sample goes through its dataset's own `load` (decoding, label map, size and value checks),
so what is streamed is what the file-based module trains on. Each writer process also appends a
fixed-size record per sample (index, pixel sums per channel, pixels per class) to a file of its
own; the records are added in index order for the manifest (band mean/std, class pixels) and to
check that every sample was written exactly once. The manifest is written last: a folder without
seglight.json is an unfinished conversion, which the reader refuses.
"""

import json
import os
import sys
import tempfile
import traceback
from datetime import datetime, timezone
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from seglight.data import object_store
from seglight.data.dataset import FileDataset, SegmentationDataset
from seglight.data.pixel_stats import PixelSums, channels_entry, pixel_sums
from seglight.data.stream_format import FORMAT, MANIFEST, VERSION, encode_item
from seglight.errors import ConfigError, DataError


def _record_size(channels: int, classes: int) -> int:
    return 2 + 2 * channels + classes + 1  # index, pixels, sums, squares, per class, ignored


def _encode_one(
    dataset: SegmentationDataset, options: dict[str, Any], records: str, index: int
) -> dict[str, Any] | None:
    """litdata.optimize's fn: the item of sample `index`, and its record appended to this
    process's file. Nothing may raise here (litdata.optimize then waits for the dead worker
    forever): a failure is written to this process's error file, and this and later samples
    return None (litdata writes nothing for them); the main process reports the first error."""
    folder = Path(records)
    if any(folder.glob("errors-*.txt")):  # another sample failed: the conversion is void
        return None
    try:
        sample = dataset.load(index)
        source = dataset.pairs[index][0] if isinstance(dataset, FileDataset) else None
        item = encode_item(index, sample, source and Path(source),
                           options["exif_orientation"], options["bands"])  # fmt: skip
        sums = pixel_sums(sample.image)
        if sums.channels != options["channels"]:
            raise DataError(f"{sample.name}: {sums.channels} channels where the split's first "
                            f"image has {options['channels']}; convert one kind of image per "
                            "split")  # fmt: skip
        counts = _class_pixels(sample.mask, options["classes"], options["ignore_index"])
    except Exception as e:  # noqa: BLE001 - reported by the main process as one line
        message = str(e) if isinstance(e, DataError) else "".join(traceback.format_exception(e))
        with open(folder / f"errors-{os.getpid()}.txt", "a") as f:
            f.write(message.strip().replace("\n", " | ") + "\n")
        return None
    record = np.concatenate([[index, sums.pixels], sums.sums, sums.squares, counts])
    with open(folder / f"{os.getpid()}.bin", "ab") as f:
        f.write(record.astype(np.float64).tobytes())
    return item


def _class_pixels(mask: np.ndarray | None, classes: int, ignore_index: int) -> np.ndarray:
    """(classes + 1,) pixels of each class (multilabel: carrying each label), then unlabelled."""
    if mask is None:
        return np.zeros(classes + 1)
    if mask.ndim == 3:  # (H, W, L) 0/1, ignore_index where unlabelled
        labelled = mask != ignore_index
        return np.append((mask == 1).sum((0, 1)), (~labelled).all(-1).sum()).astype(np.float64)
    counts = np.bincount(mask.ravel(), minlength=256).astype(np.float64)
    return np.append(counts[:classes], counts[ignore_index])


def _gather_records(records: Path, length: int, channels: int, classes: int) -> np.ndarray:
    """(length, record) in index order; every index exactly once, or a DataError."""
    size = _record_size(channels, classes)
    rows = [np.fromfile(p, np.float64).reshape(-1, size) for p in sorted(records.glob("*.bin"))]
    table = np.concatenate(rows) if rows else np.zeros((0, size))
    order = table[:, 0].astype(np.int64)
    if len(order) != length or not np.array_equal(np.sort(order), np.arange(length)):
        distinct = len(set(order.tolist()))
        raise DataError(f"the conversion wrote {len(order)} samples of {length} ({distinct} "
                        "distinct); convert again with --overwrite")  # fmt: skip
    return table[np.argsort(order)]


def _raise_first_error(records: Path, output: str, otherwise: str | None) -> None:
    """A DataError with the first failure a writer process recorded (else `otherwise`, if
    given): the conversion is void, and without a manifest no reader takes it."""
    errors = sorted(records.glob("errors-*.txt"))
    first = errors[0].read_text().splitlines()[0] if errors else otherwise
    if first is not None:
        raise DataError(f"convert stopped, nothing usable written to {output} (no {MANIFEST}): "
                        f"{first}")  # fmt: skip


def check_output(output: str, overwrite: bool, storage_options) -> None:
    """Refuse an output that already holds files, unless `overwrite` (then its manifest is
    deleted first, so a conversion cut short can never pass for a finished one)."""
    existing = object_store.list_names(output, storage_options)
    if not existing:
        return
    if not overwrite:
        what = ("a converted dataset" if MANIFEST in existing
                else f"files ({', '.join(existing[:3])}{', ...' if len(existing) > 3 else ''}): "
                     "an unfinished conversion or other data")  # fmt: skip
        raise ConfigError(f"--output: {output} already holds {what}; pass --overwrite to "
                          "replace it, or choose another --output")  # fmt: skip
    object_store.delete_file(output, MANIFEST, storage_options)


def convert_split(
    datamodule, split: str, output: str, *, workers: int = 1, chunk_bytes: str = "64MB",
    storage_options: dict[str, Any] | None = None, overwrite: bool = False,
    source: dict[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Write `split` of `datamodule` to `output` (folder or s3://bucket/prefix); returns the
    manifest written beside the chunks."""
    import litdata  # only the converting and streaming code needs it

    output = object_store.check_location(output, "--output")
    if workers < 1:
        raise ConfigError(f"--workers: must be >= 1, got {workers}")
    check_output(output, overwrite, storage_options)
    dataset = datamodule.prepared_dataset(split, datamodule.pipelines["eval"])
    length = len(dataset)
    if length == 0:
        raise DataError(f"the {split} split of {type(datamodule).__name__} has no samples")
    channels, classes = datamodule.in_channels, datamodule.num_classes
    options = {
        "exif_orientation": datamodule.exif_orientation,
        "bands": getattr(datamodule, "bands", None),
        "channels": channels, "classes": classes, "ignore_index": datamodule.ignore_index,
    }  # fmt: skip
    object_store.allow_plain_http(storage_options)
    with tempfile.TemporaryDirectory(prefix="seglight-convert-") as scratch:
        records = Path(scratch) / "records"
        records.mkdir()
        # litdata deletes these folders at every run: this run's own, not the shared /tmp ones
        os.environ["DATA_OPTIMIZER_CACHE_FOLDER"] = str(Path(scratch) / "chunks")
        os.environ["DATA_OPTIMIZER_DATA_CACHE_FOLDER"] = str(Path(scratch) / "data")
        try:
            litdata.optimize(
                fn=partial(_encode_one, dataset, options, str(records)),
                inputs=list(range(length)), output_dir=output, chunk_bytes=chunk_bytes,
                num_workers=workers, keep_data_ordered=True, reorder_files=False,
                mode="overwrite" if overwrite else None, start_method="fork",
                storage_options=object_store.boto_options(storage_options),
                verbose=sys.stderr.isatty(),
            )  # fmt: skip
        except (Exception, SystemExit) as e:
            _raise_first_error(records, output, f"{type(e).__name__}: {e}")
        _raise_first_error(records, output, None)
        table = _gather_records(records, length, channels, classes)
    manifest = _manifest(datamodule, split, output, table, options, source)
    object_store.write_file(output, MANIFEST, json.dumps(manifest, indent=2).encode(),
                            storage_options)  # fmt: skip
    return manifest


def _manifest(datamodule, split, output, table, options, source) -> dict[str, Any]:
    channels = options["channels"]
    sums = PixelSums(int(table[:, 1].sum()), table[:, 2 : 2 + channels].sum(0),
                     table[:, 2 + channels : 2 + 2 * channels].sum(0), len(table))  # fmt: skip
    per_class = table[:, 2 + 2 * channels :].sum(0).astype(np.int64).tolist()
    return {
        "format": FORMAT,
        "version": VERSION,
        "split": split,
        "samples": len(table),
        "task": datamodule.task,
        "class_names": list(datamodule.class_names),
        "palette": datamodule.palette,
        "ignore_index": datamodule.ignore_index,
        "in_channels": channels,
        "exif_orientation": options["exif_orientation"],
        "bands": options["bands"],
        "channels": channels_entry(sums),  # mean / std per band, [0, 1] units: data.mean / std
        # what the source module trained with: StreamingDataModule's defaults
        "train_transforms": _plain(
            datamodule.train_transforms or datamodule.default_train_transforms()
        ),
        "eval_transforms": _plain(
            datamodule.eval_transforms or datamodule.default_eval_transforms()
        ),
        "normalization": {"mean": list(datamodule.mean), "std": list(datamodule.std)},
        "class_pixels": dict(zip([*datamodule.class_names, "unlabelled"], per_class, strict=True)),
        "source": {
            "data_module": f"{type(datamodule).__module__}.{type(datamodule).__name__}",
            "config": source,
        },  # fmt: skip
        "output": output,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seglight": metadata.version("seglight"),
        "litdata": metadata.version("litdata"),
    }


def _plain(value: Any) -> Any:
    """A transform list as JSON values (tuples to lists, anything else to its string)."""
    return json.loads(json.dumps(value, default=str))
