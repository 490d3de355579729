"""`seglight convert`: one split of any configured dataset into the streamed format
(seglight.data.stream_format), for seglight.data.StreamingDataModule to train from a folder or
a bucket.

    python -m seglight convert --config configs/voc.yaml --split train --output /data/voc_train
    python -m seglight convert --config configs/voc.yaml --split val \
        --output s3://my-bucket/voc/val --storage_options '{endpoint_url: http://minio:9000}'
"""

import json
import sys
from collections.abc import Sequence

from jsonargparse import ActionConfigFile

from seglight.cli.audit import IGNORED_SECTIONS
from seglight.cli.parser import DEFAULT_DATA, SeglightArgumentParser
from seglight.data.base import SegmentationDataModule, default_num_workers
from seglight.data.stream_writer import convert_split

SPLITS = ("train", "val", "test")


def build_parser():
    """Takes fit's config files and flags; only the data section is used."""
    parser = SeglightArgumentParser(
        prog="seglight convert",
        description=(
            "Write one split of the configured dataset (labels mapped to training ids, every "
            "file checked) as LitData chunks plus a manifest (seglight.json), to a folder or "
            "s3://bucket/prefix, for data.class_path: seglight.data.StreamingDataModule. Takes "
            "the config files of `fit`; only the data section is used."
        ),
    )
    add = parser.add_argument
    add("-c", "--config", action=ActionConfigFile, help="Path to a configuration file (YAML).")
    parser.add_subclass_arguments(
        SegmentationDataModule, "data", required=False, fail_untyped=False
    )
    parser.set_defaults({"data": {"class_path": DEFAULT_DATA}})
    add("--split", choices=SPLITS, default="train", help="Split to convert.")
    add("--output", type=str, required=True, help="A folder, or s3://bucket/prefix.")
    add("--storage_options", type=dict | None, default=None,
        help="boto3 client arguments for s3:// (endpoint_url, region_name, ...); default: "
        "boto3's environment variables and ~/.aws.")  # fmt: skip
    add("--workers", type=int | None, default=None,
        help="Processes decoding and writing; default: one per core less one.")  # fmt: skip
    add("--chunk_bytes", type=str, default="64MB", help="Size of each chunk file.")
    add("--overwrite", type=bool, default=False,
        help="Replace what --output already holds (else convert refuses).")  # fmt: skip
    for name in IGNORED_SECTIONS:  # fit's other sections parse and are ignored (see audit)
        add(f"--{name}", type=dict | bool | int | str | None, default=None, help="Ignored.")
    return parser


def run_convert(argv: Sequence[str]) -> int:
    parser = build_parser()
    cfg = parser.parse_args(list(argv))
    data = parser.instantiate_classes(cfg).data
    manifest = convert_split(
        data, cfg.split, cfg.output, workers=cfg.workers or max(1, default_num_workers()),
        chunk_bytes=cfg.chunk_bytes, storage_options=cfg.storage_options,
        overwrite=cfg.overwrite, source=json.loads(json.dumps(cfg.data.as_dict(), default=str)),
    )  # fmt: skip
    channels = manifest["channels"]
    print(
        f"converted {manifest['samples']} {cfg.split} samples of "
        f"{manifest['source']['data_module']} ({manifest['task']}, "
        f"{len(manifest['class_names'])} classes, "
        f"{manifest['in_channels']} channels) to {manifest['output']}\n"
        f"  band mean {[round(v, 4) for v in channels['mean']]}, std "
        f"{[round(v, 4) for v in channels['std']]}\n"
        f"  train from it: --data.class_path seglight.data.StreamingDataModule "
        f"--data.{cfg.split}_dir {manifest['output']}"
    )
    sys.stdout.flush()
    return 0
