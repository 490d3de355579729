"""Training-loader throughput from the streamed format vs the file folder, same pipeline.

    .venv/bin/python benchmarks/streaming.py [--images 96] [--workers 1] [--repeats 3]

Generates `--images` VOC-sized photos (500x375 JPEG + palette PNG masks, benchmarks/data.py's
generator) in VOC's layout, converts the train split with `seglight convert`'s writer to a local
folder and to an S3 API on loopback (moto's server, in this process), then times one epoch of
each training loader, batches of 8, crop 512 (VOCDataModule's default augmentation preset, which
the streamed module takes from the manifest):

    files          VOCDataModule's train_dataloader (the baseline)
    stream local   StreamingDataModule on the local folder (read in place, no cache)
    stream s3 cold StreamingDataModule from s3:// with an empty chunk cache (every chunk fetched)
    stream s3 warm the same again with the cache the cold epoch filled

Each repeat runs all four (rotating the order); prints images/s per repeat, medians and each
ratio streamed / files (> 1: streaming is faster). Loopback S3 has no network latency or
bandwidth limit: it measures the format's and LitData's overhead, not a real bucket's. Exits 0
whatever the numbers: a benchmark, not a test.
"""

import argparse
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import boto3
import torch

sys.path.insert(0, str(Path(__file__).parent))
from data import make_voc  # noqa: E402 - benchmarks/data.py's VOC generator

from seglight.data import StreamingDataModule, VOCDataModule  # noqa: E402
from seglight.data.stream_writer import convert_split  # noqa: E402

BATCH, CROP = 8, 512


def epoch_rate(datamodule) -> float:
    """images/s of one pass over the datamodule's training loader."""
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    start, images = time.perf_counter(), 0
    for batch in loader:
        images += batch["image"].shape[0]
    return images / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                      AWS_DEFAULT_REGION="us-east-1")  # fmt: skip
    from moto.moto_server.threaded_moto_server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the server's request lines

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    options = {"endpoint_url": f"http://{host}:{port}"}
    boto3.client("s3", **options).create_bucket(Bucket="bench")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_voc(root / "voc", args.images)
        loader = {"batch_size": BATCH, "num_workers": args.workers, "persistent_workers": False}
        files = VOCDataModule(root=str(root / "voc"), crop_size=(CROP, CROP), **loader)
        start = time.perf_counter()
        convert_split(files, "train", str(root / "stream"), workers=args.workers)
        convert_s = time.perf_counter() - start
        convert_split(files, "train", "s3://bench/voc", workers=args.workers,
                      storage_options=options)  # fmt: skip
        size = sum(p.stat().st_size for p in (root / "stream").glob("*.bin"))
        source = sum(p.stat().st_size for p in (root / "voc").rglob("*") if p.is_file())
        names = ("files", "stream local", "stream s3 cold", "stream s3 warm")
        rows: dict[str, list[float]] = {n: [] for n in names}
        for repeat in range(args.repeats):
            cache = root / f"cache{repeat}"

            def s3(cache=cache):
                return StreamingDataModule(train_dir="s3://bench/voc", storage_options=options,
                                           cache_dir=str(cache), **loader)  # fmt: skip

            runs = [
                (
                    "files",
                    lambda: VOCDataModule(root=str(root / "voc"), crop_size=(CROP, CROP), **loader),
                ),  # fmt: skip
                (
                    "stream local",
                    lambda: StreamingDataModule(train_dir=str(root / "stream"), **loader),
                ),  # fmt: skip
            ]
            runs = runs[repeat % 2 :] + runs[: repeat % 2]
            for name, make in runs:
                torch.manual_seed(repeat)
                rows[name].append(epoch_rate(make()))
            torch.manual_seed(repeat)
            rows["stream s3 cold"].append(epoch_rate(s3()))  # the cold epoch fills `cache`
            torch.manual_seed(repeat)
            rows["stream s3 warm"].append(epoch_rate(s3()))
    server.stop()
    print(f"{args.images} VOC-sized images, crop {CROP}, batch {BATCH}, {args.workers} loader "
          f"workers, 1 torch thread; {platform.processor() or platform.machine()}, torch "
          f"{torch.__version__}")  # fmt: skip
    print(f"converted in {convert_s:.1f} s; streamed chunks {size / 2**20:.1f} MiB vs "
          f"{source / 2**20:.1f} MiB of source files")  # fmt: skip
    base = statistics.median(rows["files"])
    for name, values in rows.items():
        median = statistics.median(values)
        runs = ", ".join(f"{v:.1f}" for v in values)
        print(f"  {name:<15} {median:7.1f} images/s  (runs: {runs})  ratio {median / base:.2f}")


if __name__ == "__main__":
    main()
