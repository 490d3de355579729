"""`seglight convert` and StreamingDataModule on a local folder: the manifest against numpy, the
streamed samples equal to the file-based module's (augmentations included), fit / test from the
streamed copy, and one-line errors. S3, DDP and resume: test_streaming_s3.py,
test_streaming_runs.py."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from seglight.cli import main
from seglight.data import FolderDataModule, StreamingDataModule, SyntheticDataModule
from seglight.data.sampling import ResumableSampler
from seglight.errors import ConfigError, DataError

from seglight_testing import QUICKSTART, one_error_line
from seglight_testing.datasets import make_folder

SYNTHETIC = {"image_size": 32, "train_size": 12, "val_size": 5, "test_size": 4,
             "batch_size": 4, "num_workers": 0}  # fmt: skip
DATA = [f"--data.{k}={v}" for k, v in SYNTHETIC.items()]


def convert(split: str, output, *extra: str) -> int:
    """`seglight convert` of the tiny quickstart data; its exit status."""
    with pytest.raises(SystemExit) as status:
        main(["convert", "--config", QUICKSTART, *DATA, "--split", split, "--output",
              str(output), "--workers", "1", *extra])  # fmt: skip
    return status.value.code


@pytest.fixture(scope="module")
def streamed(tmp_path_factory) -> Path:
    """The quickstart's tiny train / val / test splits, converted."""
    root = tmp_path_factory.mktemp("streamed")
    for split in ("train", "val", "test"):
        assert convert(split, root / split) == 0
    return root


def test_manifest_counts_equal_numpy(streamed):
    manifest = json.loads((streamed / "train" / "seglight.json").read_text())
    files = SyntheticDataModule(**SYNTHETIC)
    dataset = files.prepared_dataset("train", files.pipelines["eval"])
    samples = [dataset.load(i) for i in range(len(dataset))]
    assert manifest["samples"] == 12 and manifest["task"] == "multiclass"
    assert manifest["class_names"] == files.class_names and manifest["in_channels"] == 3
    masks = np.stack([s.mask for s in samples])
    expected = [int((masks == c).sum()) for c in range(5)] + [int((masks == 255).sum())]
    assert list(manifest["class_pixels"].values()) == expected
    pixels = np.stack([s.image for s in samples]).reshape(-1, 3) / 255.0
    np.testing.assert_allclose(manifest["channels"]["mean"], pixels.mean(0), rtol=1e-9)
    np.testing.assert_allclose(manifest["channels"]["std"], pixels.std(0), rtol=1e-9)
    assert manifest["channels"]["pixels"] == 12 * 32 * 32


def test_first_epoch_samples_equal_the_file_modules(streamed):
    # Same run seed: each streamed sample is the file-based sample with its index, augmented
    # alike (the quickstart's training flips and rotations), though LitData's order differs.
    torch.manual_seed(3)
    files = SyntheticDataModule(**SYNTHETIC)
    files.setup("fit")
    dataset = files.datasets["train"]
    keys = {k.index: k for k in ResumableSampler(dataset, files.train_seed)}
    expected = {dataset.load(i).name: dataset[keys[i]] for i in keys}
    torch.manual_seed(3)
    stream = StreamingDataModule(train_dir=str(streamed / "train"), batch_size=4, num_workers=0)
    stream.setup("fit")
    assert stream.train_seed == files.train_seed
    seen = {}
    for batch in stream.train_dataloader():
        for i, name in enumerate(batch["name"]):
            seen[name] = (batch["image"][i], batch["mask"][i])
    assert seen.keys() == expected.keys()  # 12 samples, 3 full batches: none dropped
    for name, (image, mask) in seen.items():
        assert torch.equal(image, expected[name]["image"]), name
        assert torch.equal(mask, expected[name]["mask"]), name
    unaugmented = files.prepared_dataset("train", files.pipelines["eval"])
    flipped = sum(not torch.equal(seen[n][1], unaugmented[i]["mask"])
                  for i, n in enumerate(sorted(seen)))  # fmt: skip
    assert flipped > 0  # the comparison covered augmented samples


def test_validation_samples_equal_in_order(streamed):
    files = SyntheticDataModule(**SYNTHETIC)
    files.setup("validate")
    stream = StreamingDataModule(val_dir=str(streamed / "val"), batch_size=4, num_workers=0)
    stream.setup("validate")
    batches = list(stream.val_dataloader())
    assert [len(b["name"]) for b in batches] == [4, 1]
    for got, want in zip(batches, files.val_dataloader(), strict=True):
        assert got["name"] == want["name"]
        assert torch.equal(got["image"], want["image"]) and torch.equal(got["mask"], want["mask"])


def test_fit_and_test_from_the_streamed_copy(streamed, in_tmp):
    stream = [
        "--data=seglight.data.StreamingDataModule", f"--data.train_dir={streamed / 'train'}",
        f"--data.val_dir={streamed / 'val'}", f"--data.test_dir={streamed / 'test'}",
        "--data.batch_size=4", "--data.num_workers=0", "--trainer.enable_progress_bar=false",
        "--model.model_kwargs={encoder_depth: 3, decoder_channels: [16, 8, 8]}",
    ]  # fmt: skip
    cli = main(["fit", "--config", QUICKSTART, *stream, "--trainer.max_epochs=1",
                "--trainer.default_root_dir=run"])  # fmt: skip
    assert cli.trainer.global_step == 3
    assert cli.model.num_classes == 5 and cli.model.class_names[1] == "circle"
    test = main(["test", "--config", QUICKSTART, *stream, "--ckpt_path=run/checkpoints/last.ckpt",
                 "--trainer.default_root_dir=run"])  # fmt: skip
    assert 0 <= float(test.trainer.callback_metrics["test/mIoU"]) <= 1


def test_a_folder_dataset_keeps_its_file_bytes_and_labels(tmp_path):
    # JPEG images and palette masks of a folder dataset: the JPEG bytes are stored as they are
    # (they decode to the training pixels), the masks as training ids after the label map.
    make_folder(tmp_path / "src", n=6, rgb=False)
    folder = FolderDataModule(root=str(tmp_path / "src"), classes=["a", "b", "c"],
                              batch_size=2, num_workers=0)  # fmt: skip
    from seglight.data.stream_writer import convert_split

    manifest = convert_split(folder, "train", str(tmp_path / "out"))
    assert manifest["samples"] == len(folder.prepared_dataset("train", None))
    stream = StreamingDataModule(train_dir=str(tmp_path / "out"), batch_size=2, num_workers=0,
                                 train_transforms=[])  # fmt: skip
    stream.setup("fit")
    dataset = folder.prepared_dataset("train", folder.pipelines["eval"])
    want = {dataset.load(i).name: dataset[i] for i in range(len(dataset))}
    for batch in stream.train_dataloader():
        for i, name in enumerate(batch["name"]):
            assert torch.equal(batch["image"][i], want[name]["image"])
            assert torch.equal(batch["mask"][i], want[name]["mask"])


def test_a_second_convert_refuses_and_overwrite_replaces(streamed, tmp_path, capsys):
    out = tmp_path / "again"
    assert convert("val", out) == 0
    assert convert("val", out) == 2
    line = one_error_line(capsys)
    assert "already holds a converted dataset; pass --overwrite" in line
    assert convert("val", out, "--overwrite=true", "--data.val_size=3") == 0
    assert json.loads((out / "seglight.json").read_text())["samples"] == 3


def test_unfinished_or_missing_conversions_are_one_line(tmp_path):
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "chunk-0-0.bin").write_bytes(b"x")
    with pytest.raises(DataError, match="half: no seglight.json: not a split written by"):
        StreamingDataModule(train_dir=str(tmp_path / "half"))
    with pytest.raises(ConfigError, match="give at least one of train_dir"):
        StreamingDataModule()
    with pytest.raises(ConfigError, match="expected a local folder or s3://bucket/prefix"):
        StreamingDataModule(train_dir="gs://bucket/x")


def test_a_corrupt_file_stops_convert_with_one_line(tmp_path, capsys):
    make_folder(tmp_path / "src", n=4, rgb=False)
    victim = sorted((tmp_path / "src" / "images").iterdir())[1]
    victim.write_bytes(b"not an image")
    with pytest.raises(SystemExit):
        main(["convert", "--data=seglight.data.FolderDataModule",
              f"--data.root={tmp_path / 'src'}", "--data.classes=[a, b, c]",
              "--output", str(tmp_path / "out"), "--workers=1"])  # fmt: skip
    line = one_error_line(capsys)
    assert victim.name in line and "cannot decode image" in line and "no seglight.json" in line
    assert not (tmp_path / "out" / "seglight.json").exists()


def test_what_a_stream_cannot_do_is_one_line(streamed):
    with pytest.raises(ConfigError, match="data.fold: StreamingDataModule cannot split a stream"):
        StreamingDataModule(train_dir=str(streamed / "train"), fold={"k": 3, "index": 0})
    stream = StreamingDataModule(train_dir=str(streamed / "train"))
    with pytest.raises(ConfigError, match="`audit` and `convert` read a data module's files"):
        stream.prepared_dataset("train", None)
    with pytest.raises(ConfigError, match="data.task: 'binary', but the streamed splits"):
        StreamingDataModule(train_dir=str(streamed / "train"), task="binary")
    with pytest.raises(ConfigError, match="data.test_dir: not given, and `test` needs"):
        stream.setup("test")


def test_two_writer_processes_write_what_one_does(streamed, tmp_path):
    assert convert("train", tmp_path / "two", "--workers=2") == 0
    one = json.loads((streamed / "train" / "seglight.json").read_text())
    two = json.loads((tmp_path / "two" / "seglight.json").read_text())
    for key in ("output", "created", "source"):
        one.pop(key), two.pop(key)
    assert one == two  # counts, class pixels, band statistics, transforms
    names = set()
    for location in (streamed / "train", tmp_path / "two"):
        stream = StreamingDataModule(train_dir=str(location), batch_size=4, num_workers=0,
                                     shuffle=False, train_transforms=[])  # fmt: skip
        stream.setup("fit")
        names.add(tuple(sorted(n for b in stream.train_dataloader() for n in b["name"])))
    assert len(names) == 1 and len(next(iter(names))) == 12
