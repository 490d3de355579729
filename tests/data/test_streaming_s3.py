"""Streaming through a real S3 API: moto's server (from PyPI) on loopback in this process,
`convert` writing to it, `fit` streaming from it, and the network to it cut mid-epoch (through
a TCP proxy): one error line, then a resume from the last checkpoint, with the network back,
ends with the weights of an uninterrupted run."""

import sys

import boto3
import lightning as L
import pytest
import torch
from litdata.streaming import downloader

from seglight.cli import main

from seglight_testing import QUICKSTART, one_error_line
from seglight_testing.tcp_proxy import TcpProxy

moto_server = pytest.importorskip("moto.moto_server.threaded_moto_server")

DATA = ["--data.image_size=32", "--data.train_size=12", "--data.val_size=4",
        "--data.num_workers=0"]  # fmt: skip
MODEL = ["--model.model_kwargs={encoder_depth: 3, decoder_channels: [16, 8, 8]}",
         "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
         "--trainer.num_sanity_val_steps=0"]  # fmt: skip


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """(endpoint, storage options flags) of a loopback S3 with a bucket "data"."""
    mp = pytest.MonkeyPatch()
    for key, value in (("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"),
                       ("AWS_DEFAULT_REGION", "us-east-1")):  # fmt: skip
        mp.setenv(key, value)
    mp.setenv("LITDATA_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="data")
    yield endpoint, f"--data.storage_options={{endpoint_url: {endpoint}}}"
    server.stop()
    mp.undo()


def convert_to(endpoint: str, split: str, prefix: str, *extra: str) -> None:
    with pytest.raises(SystemExit) as status:
        main(["convert", "--config", QUICKSTART, *DATA, "--split", split, "--output",
              f"s3://data/{prefix}", f"--storage_options={{endpoint_url: {endpoint}}}",
              "--workers=1", *extra])  # fmt: skip
    assert status.value.code == 0


def test_the_obstore_option_seglight_sets_still_exists():
    # seglight.data.object_store.allow_plain_http sets this private LitData dict
    assert isinstance(downloader._OBSTORE_CLIENT_OPTIONS, dict)


def test_convert_to_s3_then_fit_streams_from_it(s3, in_tmp):
    endpoint, options = s3
    convert_to(endpoint, "train", "quick/train")
    convert_to(endpoint, "val", "quick/val")
    keys = [o["Key"] for o in boto3.client("s3", endpoint_url=endpoint)
            .list_objects_v2(Bucket="data", Prefix="quick/train/")["Contents"]]  # fmt: skip
    assert "quick/train/seglight.json" in keys and "quick/train/index.json" in keys
    cli = main(["fit", "--config", QUICKSTART, "--data=seglight.data.StreamingDataModule",
                "--data.train_dir=s3://data/quick/train", "--data.val_dir=s3://data/quick/val",
                options, "--data.batch_size=4", "--data.num_workers=0", *MODEL,
                "--trainer.max_epochs=1", "--trainer.default_root_dir=run"])  # fmt: skip
    assert cli.trainer.global_step == 3
    assert 0 <= float(cli.trainer.callback_metrics["val/mIoU"]) <= 1


def test_the_endpoint_can_come_from_the_environment(s3, monkeypatch):
    from seglight.data import StreamingDataModule

    endpoint, _ = s3
    convert_to(endpoint, "val", "env/val")
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)  # boto3's variable; no storage_options
    stream = StreamingDataModule(val_dir="s3://data/env/val", batch_size=2, num_workers=0)
    stream.setup("validate")
    assert sum(len(b["name"]) for b in stream.val_dataloader()) == 4


def test_an_unreachable_endpoint_is_one_line(in_tmp, capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--config", QUICKSTART, "--data=seglight.data.StreamingDataModule",
              "--data.train_dir=s3://data/x", "--data.storage_options={endpoint_url: "
              "http://127.0.0.1:9, config: {retries: {max_attempts: 1}}}"])  # fmt: skip
    line = one_error_line(capsys)
    assert "s3://data/x: cannot reach the S3 endpoint http://127.0.0.1:9" in line


class Interrupted(Exception):
    pass


class Interrupt(L.Callback):
    """Ends the run (as a crash would) once `step` optimizer steps are done and checkpointed."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise Interrupted


class CutNetwork(L.Callback):
    """Cuts the network (PROXY) when training starts: the data module has read the manifest
    and the chunk index, and the first chunk is yet to be fetched."""

    def on_train_start(self, trainer, pl_module) -> None:
        PROXY["proxy"].cut()


PROXY: dict = {}


@pytest.mark.slow  # 5 fits: ~16 s
def test_a_network_outage_is_one_line_and_a_resume_loses_nothing(s3, in_tmp, capsys):
    # A fit from S3 (through a TCP proxy that can cut the network) is interrupted mid-epoch;
    # resumed while the network is down it stops with one line and status 1; resumed when the
    # network is back it ends with the weights of the uninterrupted fit. (LitData prefetches
    # chunks eagerly: on data this small everything is cached within the first step, so the
    # outage is made before the resumed run's first fetch, not between two steps.)
    endpoint, _ = s3
    convert_to(endpoint, "train", "cut/train", "--chunk_bytes=1KB", "--data.train_size=24")
    host, port = endpoint.removeprefix("http://").split(":")
    proxy = PROXY["proxy"] = TcpProxy((host, int(port)))
    checkpoint = {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                  "init_args": {"dirpath": "ckpt", "save_last": True,
                                "every_n_train_steps": 1}}  # fmt: skip
    run = ["fit", "--config", QUICKSTART, "--data=seglight.data.StreamingDataModule",
           "--data.train_dir=s3://data/cut/train",
           "--data.storage_options={endpoint_url: " + proxy.url + ", config: {retries: "
           "{max_attempts: 1}, connect_timeout: 2, read_timeout: 5}}",
           "--data.batch_size=2", "--data.num_workers=0", *MODEL, "--trainer.max_epochs=2",
           "--trainer.limit_val_batches=0", f"--trainer.callbacks=[{checkpoint}]",
           "--trainer.logger=false"]  # fmt: skip
    sys.modules.setdefault("test_streaming_s3", sys.modules[__name__])
    # every run with an empty chunk cache of its own: each must fetch what it reads
    reference = main([*run, "--trainer.default_root_dir=full", "--data.cache_dir=cache_full"])
    want = {k: v.clone() for k, v in reference.model.state_dict().items()}
    with pytest.raises(Interrupted):  # epoch 1 (12 steps each), after 5 of its batches
        main([*run, "--data.cache_dir=cache_a", "--trainer.callbacks+=test_streaming_s3.Interrupt",
              "--trainer.callbacks.step=17"])  # fmt: skip
    proxy.cut()  # down before the resumed run reads the manifest: a config-time error, 2
    with pytest.raises(SystemExit) as status:
        main([*run, "--ckpt_path=last", "--data.cache_dir=cache_b"])
    assert status.value.code == 2
    assert "s3://data/cut/train: cannot reach the S3 endpoint http://127.0.0" in one_error_line(
        capsys
    )
    proxy.restore()  # down once training started: the first chunk fetch fails, status 1
    with pytest.raises(SystemExit) as status:
        main([*run, "--ckpt_path=last", "--data.cache_dir=cache_c",
              "--trainer.callbacks+=test_streaming_s3.CutNetwork"])  # fmt: skip
    assert status.value.code == 1
    # LitData prints its prefetch thread's traceback when it dies (its design: a daemon
    # thread's log is easily lost); seglight's one line ends the output
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert sum("seglight: error:" in line for line in err) == 1
    line = err[-1]
    assert line.startswith("seglight: error: ")
    assert "streaming stopped: cannot read a chunk from the object store" in line
    assert "resume with --ckpt_path last" in line
    proxy.restore()  # the network is back; moto kept the bucket
    resumed = main([*run, "--ckpt_path=last", "--data.cache_dir=cache_d"])
    assert resumed.trainer.global_step == 24  # 2 epochs of 24 images in batches of 2
    got = resumed.model.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)
    proxy.cut()
