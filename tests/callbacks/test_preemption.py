"""Pre-emption: SIGTERM / SIGUSR1 mid-epoch -> last.ckpt at the batch boundary, exit 128+signal,
and `--ckpt_path last` finishes the run with the weights of an uninterrupted one."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from seglight.callbacks.preemption import resume_command
from seglight.cli import main

from seglight_testing import QUICKSTART, ROOT, TINY

# 8 training images in batches of 4: 2 steps an epoch, 6 in all; the signal comes after step 3,
# i.e. in the middle of epoch 1.
RUN = ["fit", "--config", QUICKSTART, *TINY, "--trainer.max_epochs=3"]
LAST = Path("outputs/quickstart/checkpoints/last.ckpt")


def signal_at(step: int, name: str) -> list[str]:
    callback = "--trainer.callbacks"
    return [f"{callback}+=seglight_testing.preemption_helper.SignalAtStep",
            f"{callback}.step={step}", f"{callback}.signal_name={name}"]  # fmt: skip


def _saved(path: Path) -> dict:
    return torch.load(path, weights_only=True, map_location="cpu")


def test_sigterm_in_a_real_fit_process_saves_and_resumes(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)])}

    def fit(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "seglight", *RUN, *extra], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=600)  # fmt: skip

    first = fit(*signal_at(3, "SIGTERM"))
    assert first.returncode == 143, first.stderr[-3000:]  # 128 + SIGTERM
    lines = [ln for ln in first.stderr.splitlines() if ln.startswith("seglight: SIGTERM")]
    assert len(lines) == 1, first.stderr[-3000:]
    assert f"saved epoch 1, step 3 to {tmp_path / LAST}" in lines[0]
    assert "resume with: python -m seglight fit --config" in lines[0]
    assert lines[0].endswith("--ckpt_path last")
    assert _saved(tmp_path / LAST)["global_step"] == 3  # at the boundary, not later
    assert not [n for n in os.listdir(tmp_path / LAST.parent) if n.startswith(".seglight")]

    resumed = fit("--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Restored all states from the checkpoint" in resumed.stderr + resumed.stdout
    assert _saved(tmp_path / LAST)["global_step"] == 6


@pytest.mark.slow  # a subprocess or a second run; `make test-all`
def test_sigusr1_resume_equals_an_uninterrupted_run(in_tmp, capsys):
    sys.path.insert(0, str(ROOT / "tests"))  # seglight_testing, as PYTHONPATH does above
    try:
        with pytest.raises(SystemExit) as info:
            main([*RUN, *signal_at(3, "SIGUSR1")])
    finally:
        sys.path.remove(str(ROOT / "tests"))
    assert info.value.code == 138  # 128 + SIGUSR1
    assert "seglight: SIGUSR1 received: saved epoch 1, step 3" in capsys.readouterr().err
    assert _saved(LAST)["global_step"] == 3
    main([*RUN, "--ckpt_path=last"])
    resumed = _saved(LAST)
    assert resumed["global_step"] == 6

    (in_tmp / "straight").mkdir()
    os.chdir(in_tmp / "straight")
    main(RUN)
    straight = _saved(LAST)
    assert straight["global_step"] == 6
    for key, value in straight["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key


def test_resume_command_replaces_ckpt_path():
    argv = ["/x/seglight/__main__.py", "fit", "--config", "a b.yaml", "--ckpt_path", "best.ckpt"]
    assert resume_command(argv) == "python -m seglight fit --config 'a b.yaml' --ckpt_path last"
    argv = ["/venv/bin/seglight", "fit", "--ckpt_path=x.ckpt", "--trainer.max_epochs=3"]
    assert resume_command(argv) == "seglight fit --trainer.max_epochs=3 --ckpt_path last"
