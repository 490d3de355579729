"""configs/logger/*.yaml and seglight.loggers, all offline: what a W&B run records is read back
from its transaction log (<run folder>/run-<id>.wandb) with wandb's own protobuf `Record`."""

import io
import json
import socket
import struct
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from wandb.proto import wandb_internal_pb2

from seglight.cli import main
from seglight.errors import ConfigError
from seglight.loggers import DEFAULT_HOST, WandbLogger, choose_mode, find_credentials, run_folder

from seglight_testing import QUICKSTART, TINY

CONFIGS = QUICKSTART.rsplit("/", 1)[0] + "/logger"
MEDIA = ("/per_class", "/confusion_table", "/predictions")  # media keys seglight logs
CREDENTIAL_VARS = ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL")


@pytest.fixture
def wandb_home(tmp_path, monkeypatch):
    """W&B's folders, netrc and settings in tmp_path; every run finished afterwards (a run left
    open would be reused by the next WandbLogger)."""
    for name in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    yield tmp_path
    import wandb

    wandb.finish()


def read_records(path) -> list:
    """The protobuf Records of a .wandb file: a 7-byte header (":W&B", magic, version), then
    LevelDB's log format (32 KiB blocks; each chunk: crc32, length, type; FULL=1, FIRST=2,
    MIDDLE=3, LAST=4). wandb >= 0.18 reads it in Go only, so the framing is parsed here."""
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, buffer, records = 7, 32768, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # block trailer: padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:  # zero padding to the end of the block
            pos += left
            continue
        buffer += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(buffer)
            records.append(record)
            buffer = b""
    return records


def finished_records(folder) -> list:
    """The records of the run in `folder` once its last one, "exit", is on disk: wandb's
    service may still be writing the file when wandb.finish() returns."""
    deadline = time.monotonic() + 60
    while True:
        records = read_records(next(folder.glob("run-*.wandb")))
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            return records
        assert time.monotonic() < deadline, "the run's transaction log never got its exit record"
        time.sleep(0.2)


def history(records) -> list[dict]:
    """Each logged step as {key: decoded value}."""
    rows = []
    for r in records:
        if r.WhichOneof("record_type") == "history":
            # Keys may be stored split (nested_key ["val", "mIoU"]), and a media value's fields
            # as keys of their own ("val/per_class/path"): rebuilt as row["val/per_class"]["path"].
            row: dict = {}
            for item in r.history.item:
                key = item.key or "/".join(item.nested_key)
                value = json.loads(item.value_json)
                parent, _, field = key.rpartition("/")
                if parent.endswith(MEDIA):
                    row.setdefault(parent, {})[field] = value
                else:
                    row[key] = value
            rows.append(row)
    return rows


def last(rows: list[dict], key: str):
    return [row[key] for row in rows if key in row][-1]


def test_wandb_offline_run_records_config_metrics_tables_images_and_checkpoint(
    in_tmp, wandb_home, monkeypatch
):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cli = main(["fit", "--config", QUICKSTART, "--config", f"{CONFIGS}/wandb.yaml", *TINY,
                "--trainer.max_epochs=2", "--trainer.limit_train_batches=1",
                "--trainer.logger.init_args.log_model=true"])  # fmt: skip
    (logger,) = cli.trainer.loggers  # wandb.yaml replaced the quickstart's CSVLogger
    assert isinstance(logger, WandbLogger)
    fit_metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items()}
    val = {k: v.clone() for k, v in cli.model.last_metrics["val"].items()}
    cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
    folder = in_tmp / run_folder(logger.experiment)  # relative to the working directory
    assert logger.experiment.name != "logs"  # not the quickstart CSVLogger's `name`
    import wandb

    wandb.finish()

    # The run lives under the config's save_dir and is also the trainer's log dir.
    assert folder.parent == in_tmp / "outputs/quickstart/wandb"
    assert folder.name.startswith("offline-run-")
    assert (folder / "config.yaml").is_file() and (folder / "images/val_epoch1.png").is_file()
    records = finished_records(folder)

    # The resolved CLI config, nested as in config.yaml.
    config = {}
    for r in records:
        if r.WhichOneof("record_type") == "config":
            config.update({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                           for i in r.config.update})  # fmt: skip
    model = config["model"]["init_args"]
    assert model["arch"] == "Unet" and model["optimizer"]["init_args"]["lr"] == 0.002
    assert config["data"]["init_args"]["image_size"] == 32
    assert config["trainer"]["logger"]["class_path"] == "seglight.loggers.WandbLogger"

    # Metrics: the values Lightning computed.
    rows = history(records)
    assert len([row for row in rows if "val/mIoU" in row]) == 2
    assert last(rows, "val/mIoU") == pytest.approx(fit_metrics["val/mIoU"], abs=1e-6)
    assert last(rows, "train/loss_epoch") == pytest.approx(fit_metrics["train/loss_epoch"], 1e-6)
    assert last(rows, "train/loss_step") == pytest.approx(fit_metrics["train/loss_step"], 1e-6)

    # Per-class table and confusion matrix of the last validation, from the module's numbers.
    table = json.loads((folder / "files" / last(rows, "val/per_class")["path"]).read_text())
    assert table["columns"] == ["class", "IoU", "acc", "pixels"]
    assert [row[0] for row in table["data"]] == cli.model.class_names
    iou = [np.nan if row[1] is None else row[1] for row in table["data"]]
    np.testing.assert_allclose(iou, val["IoU"].numpy(), atol=1e-9)
    assert [row[3] for row in table["data"]] == val["confmat"].sum(1).tolist()
    cells = json.loads((folder / "files" / last(rows, "val/confusion_table")["path"]).read_text())
    counts = torch.zeros_like(val["confmat"])
    names = cli.model.class_names
    for actual, predicted, n in cells["data"]:
        counts[names.index(actual), names.index(predicted)] = n
    assert torch.equal(counts, val["confmat"])
    test_table = json.loads((folder / "files" / last(rows, "test/per_class")["path"]).read_text())
    test_pixels = cli.model.last_metrics["test"]["confmat"].sum(1).tolist()
    assert [row[3] for row in test_table["data"]] == test_pixels
    assert "test/confusion_table" in set().union(*rows)

    # Prediction images with their ground-truth and prediction masks: 4 (the whole val set).
    images = last(rows, "val/predictions")
    assert images["_type"] == "images/separated" and images["count"] == 4
    assert set(images["all_masks"][0]) == {"ground_truth", "prediction"}

    # log_model: the best checkpoint as a model artifact (uploaded by `wandb sync`).
    artifacts = [r.artifact for r in records if r.WhichOneof("record_type") == "artifact"]
    assert any(a.type == "model" and "best" in a.aliases for a in artifacts)


def test_without_credentials_it_runs_offline_says_so_and_never_prompts(
    wandb_home, monkeypatch, capsys
):
    for name in CREDENTIAL_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(wandb_home))
    closed = io.StringIO()
    closed.close()
    monkeypatch.setattr(sys, "stdin", closed)  # a prompt would fail on the closed stdin
    logger = WandbLogger(save_dir=str(wandb_home / "runs"))
    logger.log_metrics({"x": 1.0}, step=0)
    folder = run_folder(logger.experiment)
    out = capsys.readouterr().out
    assert out.count("no W&B credentials") == 1
    assert f"wandb sync {folder}\n" in out
    assert folder.parent == wandb_home / "runs" / "wandb" and any(folder.glob("*.wandb"))
    assert logger.save_dir == str(folder)  # trainer.log_dir: the run's own folder
    logger.log_metrics({"x": 2.0}, step=1)
    assert "no W&B credentials" not in capsys.readouterr().out  # said once


def test_wandb_mode_disabled_writes_nothing(wandb_home, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.chdir(wandb_home)
    save_dir = wandb_home / "runs"
    logger = WandbLogger(save_dir=str(save_dir))
    logger.log_hyperparams({"lr": 0.1})
    logger.log_metrics({"val/mIoU": 0.5}, step=0)
    assert logger.save_dir == str(save_dir)
    assert list(wandb_home.iterdir()) == []  # not save_dir, not WANDB_DIR, nothing
    assert "wandb sync" not in capsys.readouterr().out


def test_mode_follows_wandb_mode_credentials_and_reachability(tmp_path, monkeypatch):
    for name in CREDENTIAL_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    monkeypatch.setenv("WANDB_MODE", "dryrun")
    assert choose_mode(False, 1.0)[0] == "offline"
    monkeypatch.setenv("WANDB_MODE", "sometimes")
    with pytest.raises(ConfigError, match="WANDB_MODE"):
        choose_mode(False, 1.0)
    monkeypatch.delenv("WANDB_MODE")

    # Credentials from a netrc file, as `wandb login` writes them.
    assert find_credentials(DEFAULT_HOST) is None
    (tmp_path / "netrc").write_text(f"machine api.wandb.ai\n  login user\n  password {'k' * 40}\n")
    assert find_credentials(DEFAULT_HOST) == "netrc"

    # With a key: online if the server answers, offline if not (both on this machine only).
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{server.getsockname()[1]}")
        assert choose_mode(False, 2.0) == ("online", "")
        assert choose_mode(True, 2.0)[0] == "offline"  # offline: true in the config
    mode, reason = choose_mode(False, 2.0)  # the port is closed now: refused at once
    assert mode == "offline" and "did not answer" in reason


def test_tensorboard_yaml_writes_scalars_images_and_config(in_tmp):
    cli = main(["fit", "--config", QUICKSTART, "--config", f"{CONFIGS}/tensorboard.yaml", *TINY,
                "--trainer.max_epochs=2", "--trainer.limit_train_batches=1"])  # fmt: skip
    log_dir = in_tmp / "outputs/quickstart/tb/version_0"
    assert in_tmp / cli.trainer.log_dir == log_dir
    events = EventAccumulator(str(log_dir), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    miou = events.Scalars("val/mIoU")
    assert len(miou) == 2
    assert miou[-1].value == pytest.approx(float(cli.trainer.callback_metrics["val/mIoU"]), 1e-6)
    (image,) = events.Images("val/predictions")  # every 2 epochs: epoch 1 only
    png = Image.open(log_dir / "images/val_epoch1.png")
    assert (image.width, image.height) == png.size
    decoded = Image.open(io.BytesIO(image.encoded_image_string)).convert("RGB")
    np.testing.assert_array_equal(np.asarray(decoded), np.asarray(png.convert("RGB")))
    assert any(tag.startswith("config") for tag in events.Tags()["tensors"])
