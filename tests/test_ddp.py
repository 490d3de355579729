"""Multi-process training launched exactly as the README says, on 2 CPU processes over gloo:
Lightning's own launcher (fit, then test, checkpoint reloaded in a fresh process), torchrun,
and SLURM simulated on one machine (two processes given the environment srun gives them).

Each run: 8 training images of 32 px, batch 4 per process, so one optimizer step per epoch
under 2 processes (a single process would take two): the step count in the checkpoint shows
the data was split across the processes.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from seglight.data.synthetic import CLASS_NAMES, SyntheticDataModule

from seglight_testing import QUICKSTART, TINY, run_on_cpus

EPOCHS = 2
FIT = ["fit", "--config", QUICKSTART, *TINY, f"--trainer.max_epochs={EPOCHS}"]
CHECKPOINTS = Path("outputs/quickstart/checkpoints")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}

# Run in a fresh interpreter: the checkpoint alone must rebuild the model. Prints the test
# split's confusion matrix (rows = ground truth) computed image by image, as the test did.
RELOAD = """
import json, sys, torch
from seglight import SegmentationModule
from seglight.data.synthetic import SyntheticDataModule
model = SegmentationModule.load_from_checkpoint(sys.argv[1], map_location="cpu").eval()
dm = SyntheticDataModule(image_size=32, test_size=5, num_workers=0)
dm.setup("test")
k = model.num_classes
confmat = torch.zeros(k * k, dtype=torch.long)
with torch.no_grad():
    for i in range(len(dm.datasets["test"])):
        item = dm.datasets["test"][i]
        pred = model.predict_step({"image": item["image"][None]}, i)[0]  # (H, W)
        keep = item["mask"] != model.ignore_index
        confmat += torch.bincount(item["mask"][keep] * k + pred[keep], minlength=k * k)
print(json.dumps({"class_names": model.class_names, "confmat": confmat.view(k, k).tolist()}))
"""


def trained_steps(cwd: Path) -> tuple[int, int]:
    """(global_step, epoch) stored in last.ckpt."""
    ckpt = torch.load(cwd / CHECKPOINTS / "last.ckpt", map_location="cpu", weights_only=False)
    return ckpt["global_step"], ckpt["epoch"]


def labelled_test_pixels(n: int = 5) -> int:
    dm = SyntheticDataModule(image_size=32, test_size=n, num_workers=0)
    test_set = dm.build_dataset("test", dm.pipelines["eval"])
    return sum(int((test_set.load(i).mask != 255).sum()) for i in range(n))


# 40 s of two gloo processes run twice: `make test-all`; the fast suite keeps DDP validation
# equality (tests/callbacks/test_reports.py) and batch invariance across 2 processes.
@pytest.mark.slow
def test_lightning_launcher_fit_then_test_and_the_checkpoint_reloads(tmp_path):
    """`python -m seglight fit ... --trainer.devices=2 --trainer.strategy=ddp`, then `test` of
    its best checkpoint the same way, then the checkpoint loaded in a fresh process."""
    cwd = run_on_cpus(tmp_path, 2, FIT, folder="ddp")
    assert (cwd / CHECKPOINTS / "best.ckpt").is_file()
    assert trained_steps(cwd) == (EPOCHS, EPOCHS - 1)  # one step per epoch: 2 processes
    test = ["test", "--config", QUICKSTART, *TINY, "--data.eval_batch_size=1", "--data.test_size=5",
            f"--ckpt_path={CHECKPOINTS / 'best.ckpt'}"]  # fmt: skip
    run_on_cpus(tmp_path, 2, test, folder="ddp")
    report = json.loads(next(cwd.rglob("test_report.json")).read_text())
    confmat = np.array(report["confusion_matrix"])
    # 5 images on 2 processes: Lightning's default sampler would repeat one to even the shards.
    assert confmat.sum() == labelled_test_pixels()  # each test image counted once, not twice
    assert 0.0 <= report["mIoU"] <= 1.0 and 0.0 <= report["pixel_acc"] <= 1.0

    fresh = subprocess.run(
        [sys.executable, "-c", RELOAD, str(cwd / CHECKPOINTS / "best.ckpt")],
        env=ENV, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    reloaded = json.loads(fresh.stdout.strip().splitlines()[-1])
    assert reloaded["class_names"] == CLASS_NAMES
    # The reloaded weights give exactly what the 2-process test reported.
    np.testing.assert_array_equal(np.array(reloaded["confmat"]), confmat)


def launch(cwd: Path, commands: list[tuple[list[str], dict]], timeout: int = 300) -> list[str]:
    """Start every (argv, env) at once (they rendezvous with each other), wait for all; their
    stderr."""
    cwd.mkdir(exist_ok=True)
    procs = [
        subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )  # fmt: skip
        for argv, env in commands
    ]
    try:
        outs = [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:  # one that failed leaves the other waiting at the rendezvous
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    return [err for _, err in outs]


TORCHRUN = str(Path(sys.executable).parent / "torchrun")


@pytest.mark.slow
def test_torchrun_standalone(tmp_path):
    """`torchrun --standalone --nproc_per_node=2 -m seglight fit ... --trainer.devices=2`:
    Lightning finds torchrun's variables (TorchElasticEnvironment: RANK, WORLD_SIZE, ...) and
    requires devices x num_nodes == WORLD_SIZE."""
    argv = [TORCHRUN, "--standalone", "--nproc_per_node=2", "-m", "seglight", *FIT,
            "--trainer.accelerator=cpu", "--trainer.devices=2",
            "--trainer.strategy=ddp"]  # fmt: skip
    launch(tmp_path / "torchrun", [(argv, ENV)])
    assert trained_steps(tmp_path / "torchrun") == (EPOCHS, EPOCHS - 1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_nodes_simulated(tmp_path):
    """The multi-node torchrun form, one process per "node", both on this machine:
    `torchrun --nnodes=2 --nproc_per_node=1 --node_rank=R --rdzv_endpoint=HOST:PORT -m seglight
    fit ... --trainer.num_nodes=2 --trainer.devices=1` (static rendezvous: node R is rank R;
    Lightning reads the node rank from GROUP_RANK)."""
    endpoint = f"127.0.0.1:{free_port()}"
    nodes = [
        ([TORCHRUN, "--nnodes=2", "--nproc_per_node=1", f"--node_rank={rank}",
          f"--rdzv_endpoint={endpoint}", "-m", "seglight", *FIT, "--trainer.accelerator=cpu",
          "--trainer.num_nodes=2", "--trainer.devices=1", "--trainer.strategy=ddp"], ENV)
        for rank in (0, 1)
    ]  # fmt: skip
    launch(tmp_path / "torchrun_nodes", nodes)
    assert trained_steps(tmp_path / "torchrun_nodes") == (EPOCHS, EPOCHS - 1)


def job_id_with_a_free_port() -> str:
    """A SLURM job id whose port (Lightning: last 4 digits + 15000) is free on this machine."""
    for job_id in np.random.default_rng().integers(100000, 999999, 50):
        port = int(str(job_id)[-4:]) + 15000
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return str(job_id)
    raise RuntimeError("no free port in 15000-24999")


@pytest.mark.slow
def test_slurm_two_nodes_simulated(tmp_path):
    """What `srun python -m seglight fit ... --trainer.num_nodes=2 --trainer.devices=1` starts
    in an sbatch job with --nodes=2 --ntasks-per-node=1: one process per node, each with srun's
    variables. No MASTER_ADDR / MASTER_PORT given: Lightning's SLURMEnvironment takes the
    address from SLURM_NODELIST and the port from SLURM_JOB_ID, ranks from SLURM_PROCID /
    SLURM_LOCALID / SLURM_NODEID, and checks SLURM_NTASKS_PER_NODE == devices and
    SLURM_NNODES == num_nodes. (Both "nodes" are this machine, so the node list is localhost.)"""
    job_id = job_id_with_a_free_port()
    base = {k: v for k, v in ENV.items() if not k.startswith(("SLURM_", "MASTER_", "TORCHELASTIC"))}
    argv = [sys.executable, "-m", "seglight", *FIT, "--trainer.accelerator=cpu",
            "--trainer.devices=1", "--trainer.num_nodes=2", "--trainer.strategy=ddp"]  # fmt: skip
    slurm = {"SLURM_JOB_ID": job_id, "SLURM_JOB_NAME": "seglight", "SLURM_NTASKS": "2",
             "SLURM_NTASKS_PER_NODE": "1", "SLURM_NNODES": "2", "SLURM_NODELIST": "localhost",
             "SLURM_LOCALID": "0"}  # fmt: skip
    ranks = [{"SLURM_PROCID": str(r), "SLURM_NODEID": str(r)} for r in (0, 1)]
    errs = launch(tmp_path / "slurm", [(argv, {**base, **slurm, **rank}) for rank in ranks])
    assert "SLURM auto-requeueing enabled" in errs[0]  # Lightning's SLURM signal handling is on
    assert trained_steps(tmp_path / "slurm") == (EPOCHS, EPOCHS - 1)
