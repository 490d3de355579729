"""Atomic checkpoint saves under kill -9, and one-line refusals of unusable checkpoint files."""

import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from seglight import SegmentationModule
from seglight.callbacks.atomic_io import PARTIAL_PREFIX, AtomicCheckpointIO
from seglight.checkpoints import read_checkpoint
from seglight.cli import main
from seglight.errors import ConfigError

from seglight_testing import QUICKSTART, TINY
from seglight_testing.datasets import FOLDER, make_folder

NUMEL = 10_000_000  # float32: a 40 MB checkpoint, slow enough to be killed mid-write


def _partials(folder: Path) -> list[str]:
    return [n for n in os.listdir(folder) if n.startswith(PARTIAL_PREFIX)]


# Made here, in the parent: a forked child must not run parallel torch ops (OpenMP after fork).
DATA = torch.arange(NUMEL, dtype=torch.float32)


def _check_complete(path: Path) -> int:
    """The step of a checkpoint written by _save_forever; fails unless every value is there."""
    checkpoint = torch.load(path, weights_only=True)
    assert torch.equal(checkpoint["data"], DATA)
    return checkpoint["step"]


def _save_forever(io, target: Path, start: int, count: int = 10_000) -> None:
    """Child process body: save step start, start+1, ... to `target` until killed."""
    for step in range(start, start + count):
        io.save_checkpoint({"step": step, "data": DATA}, target)


def _fork(body) -> int:
    """A child process running `body`; it never returns into pytest."""
    pid = os.fork()
    if pid == 0:
        try:
            body()
        finally:
            os._exit(0)
    return pid


def test_kill_9_at_random_moments_never_breaks_last_ckpt(tmp_path):
    target = tmp_path / "ckpts" / "last.ckpt"
    rng = random.Random(0)
    io, steps = AtomicCheckpointIO(), []
    t0 = time.perf_counter()
    io.save_checkpoint({"step": 0, "data": DATA}, target)
    save_s = time.perf_counter() - t0
    for trial in range(6):
        pid = _fork(lambda trial=trial: _save_forever(io, target, 1000 * (trial + 1)))
        if trial == 0:  # on a slow or busy machine too: one child saves at least once
            deadline = time.monotonic() + 120
            while _check_complete(target) < 1000 and time.monotonic() < deadline:
                time.sleep(0.05)
        time.sleep(rng.uniform(0.2, 0.2 + 3 * save_s))  # lands in any phase of a save
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        steps.append(_check_complete(target))  # loads, whole: the old or the new checkpoint
        assert len(_partials(target.parent)) <= 1  # a killed save's leftover is cleaned next
    # A later save (here: this process) removes partial files of dead processes.
    io.save_checkpoint({"step": 7, "data": DATA}, target)
    assert _partials(target.parent) == [] and _check_complete(target) == 7
    assert any(s >= 1000 for s in steps)  # the children did overwrite it


def _kill_self_mid_copy():
    """Patch the kernel copy shutil uses: half the bytes, then SIGKILL, as a node's OOM killer
    or a scheduler would at the wrong moment."""
    real = os.sendfile

    def half_then_die(out_fd, in_fd, offset, count):
        real(out_fd, in_fd, offset, max(1, count // 2))
        os.kill(os.getpid(), signal.SIGKILL)

    os.sendfile = half_then_die


def _other_device(path: Path) -> Path | None:
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shm.stat().st_dev != path.stat().st_dev:
        return Path(tempfile.mkdtemp(dir=shm))
    return None


@pytest.mark.parametrize("io_class", [TorchCheckpointIO, AtomicCheckpointIO])
def test_kill_mid_copy_across_file_systems(tmp_path, io_class):
    # Lightning's TorchCheckpointIO writes a temporary file in $TMPDIR and shutil.moves it: with
    # $TMPDIR on another file system (a node's local disk, the cluster's shared one) the move
    # copies into the target, and a kill during the copy leaves last.ckpt truncated.
    tmpdir = _other_device(tmp_path)
    if tmpdir is None:
        pytest.skip("needs /dev/shm on a file system other than tmp_path's")
    target = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": 0, "data": DATA}, target)

    def child():
        tempfile.tempdir = str(tmpdir)
        _kill_self_mid_copy()
        _save_forever(io_class(), target, 1, count=1)

    pid = _fork(child)
    _, status = os.waitpid(pid, 0)
    leaked = os.listdir(tmpdir)
    shutil.rmtree(tmpdir)
    assert os.WIFSIGNALED(status) or io_class is AtomicCheckpointIO
    if io_class is TorchCheckpointIO:
        assert 0 < target.stat().st_size  # the failure this module prevents, reproduced:
        with pytest.raises(RuntimeError, match="central directory"):
            torch.load(target, weights_only=True)
        assert leaked  # and its temporary file stays in $TMPDIR
    else:  # no copy at all: partial file and rename in the target's folder
        assert not leaked and _check_complete(target) >= 1


def test_exception_mid_write_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    target = tmp_path / "best.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1, "data": torch.full((10,), 1.0)}, target)

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError, match="No space"):
        io.save_checkpoint({"step": 2, "data": torch.full((10,), 2.0)}, target)
    assert torch.load(target, weights_only=True)["step"] == 1
    assert _partials(tmp_path) == []


def test_partial_files_are_not_taken_for_checkpoints(tmp_path):
    # Names Lightning scans: `last*.ckpt` for ckpt_path="last", "hpc_ckpt_" for SLURM resume.
    stale = tmp_path / f"{PARTIAL_PREFIX}otherhost-123-abcd.tmp"
    stale.write_bytes(b"partial")
    assert not stale.name.endswith(".ckpt") and "hpc_ckpt_" not in stale.name
    AtomicCheckpointIO().save_checkpoint({"x": torch.zeros(1)}, tmp_path / "hpc_ckpt_1.ckpt")
    assert stale.exists()  # another host's save may still be running: kept for a day
    os.utime(stale, (time.time() - 2 * 86400,) * 2)
    AtomicCheckpointIO().save_checkpoint({"x": torch.zeros(1)}, tmp_path / "hpc_ckpt_1.ckpt")
    assert not stale.exists()
    assert (tmp_path / "hpc_ckpt_1.ckpt").stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --- refusing unusable files -------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_ckpt(tmp_path_factory) -> Path:
    """A real checkpoint of a 1-epoch TINY quickstart run, via the CLI."""
    folder = tmp_path_factory.mktemp("run")
    with pytest.MonkeyPatch.context() as patch:  # as the in_tmp fixture, for the whole module
        patch.chdir(folder)
        patch.setattr(sys, "argv", ["seglight"])
        main(["fit", "--config", QUICKSTART, *TINY, "--trainer.max_epochs=1",
              "--model.eval_protocol.flip=true", "--model.loss.dice=0.5"])  # fmt: skip
    return folder / "outputs/quickstart/checkpoints/last.ckpt"


def _bad_files(folder: Path, good: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, what the one-line error must say)."""
    files = {}
    empty = folder / "empty.ckpt"
    empty.write_bytes(b"")
    files["zero-byte"] = (empty, "is empty (0 bytes)")
    truncated = folder / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    files["truncated"] = (truncated, "is truncated or corrupt")
    png = folder / "mask.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    files["png"] = (png, "is not a PyTorch checkpoint file")
    plain = folder / "weights.pt"
    torch.save(SegmentationModule(num_classes=2, model_kwargs=None).state_dict(), plain)
    files["state-dict"] = (plain, "is a plain state_dict")
    foreign = folder / "other.ckpt"
    torch.save({"state_dict": {"layer.weight": torch.zeros(2)}, "pytorch-lightning_version": "2.6",
                "hyper_parameters": {"hidden": 3}}, foreign)  # fmt: skip
    files["other-module"] = (foreign, "another LightningModule")
    return files


def test_valid_checkpoint_loads_weights_only_in_a_fresh_process(good_ckpt):
    # Every part (loss/eval_protocol hparams, optimizer, scheduler, callback states) is plain
    # data: torch.load(weights_only=True) with nothing but torch imported.
    code = (
        "import sys, torch; c = torch.load(sys.argv[1], weights_only=True); "
        "assert c['optimizer_states'] and c['lr_schedulers'] and c['callbacks']; "
        "assert c['hyper_parameters']['eval_protocol']['flip'] is True; "
        "assert c['hyper_parameters']['loss']['dice'] == 0.5; "
        "assert 'seglight' not in sys.modules; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code, str(good_ckpt)], capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_load_from_checkpoint_refuses_unusable_files_in_one_line(tmp_path, good_ckpt):
    module = SegmentationModule.load_from_checkpoint(good_ckpt)
    assert module.eval_protocol.flip
    for name, (path, expected) in _bad_files(tmp_path, good_ckpt).items():
        with pytest.raises(ConfigError) as info:
            SegmentationModule.load_from_checkpoint(path)
        message = str(info.value)
        assert "\n" not in message and str(path) in message and expected in message, name


@pytest.mark.parametrize("subcommand", ["validate", "fit"])
def test_cli_refuses_unusable_ckpt_path_before_running(in_tmp, good_ckpt, capsys, subcommand):
    files = _bad_files(in_tmp, good_ckpt)
    if subcommand == "validate":  # one subcommand sees them all; fit the ones it alone checks
        files = {k: files[k] for k in ("zero-byte", "truncated", "png")}
    weights_only = in_tmp / "weights_only.ckpt"
    checkpoint = read_checkpoint(good_ckpt)
    torch.save({k: v for k, v in checkpoint.items() if k not in ("optimizer_states", "loops")},
               weights_only)  # fmt: skip
    if subcommand == "fit":
        files = {"truncated": files["truncated"],
                 "weights-only": (weights_only, "cannot resume from it")}  # fmt: skip
    for name, (path, expected) in files.items():
        with pytest.raises(SystemExit) as info:
            main([subcommand, "--config", QUICKSTART, *TINY, f"--ckpt_path={path}"])
        err = capsys.readouterr().err.strip().splitlines()
        assert info.value.code == 2, name
        assert err[-1].startswith("seglight: error: ckpt_path:") and expected in err[-1], err
        assert str(path) in err[-1]
    assert not (in_tmp / "outputs/quickstart/logs").exists()  # refused before training


def test_cli_refuses_checkpoint_of_another_model_and_missing_last(in_tmp, good_ckpt, capsys):
    make_folder(in_tmp / "data", n=4)  # a 3-class dataset; the checkpoint has 5 classes
    (in_tmp / "data/train.txt").write_text("scene_00\nscene_01\n")
    (in_tmp / "data/val.txt").write_text("scene_02\nscene_03\n")
    with pytest.raises(SystemExit):
        main(["validate", *FOLDER, f"--ckpt_path={good_ckpt}"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "does not fit the configured model" in err and "(5," in err and "(3," in err, err
    with pytest.raises(SystemExit) as info:
        main(["test", "--config", QUICKSTART, *TINY, "--ckpt_path=last"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert info.value.code == 2 and "ckpt_path: last: no last checkpoint in" in err, err
    assert "outputs/quickstart/checkpoints" in err


def test_cli_installs_atomic_io_unless_configured(in_tmp):
    cli = main(["--config", QUICKSTART, *TINY], run=False)
    assert type(cli.trainer.strategy.checkpoint_io) is AtomicCheckpointIO
    plugin = "--trainer.plugins=lightning.pytorch.plugins.io.TorchCheckpointIO"
    cli = main(["--config", QUICKSTART, *TINY, plugin], run=False)
    assert type(cli.trainer.strategy.checkpoint_io) is TorchCheckpointIO  # the user's choice
