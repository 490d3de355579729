"""Helpers shared by the tests (one place for them: no test module imports another).

`seglight_testing` is a package in tests/, importable because tests/ is on the path (pytest's
`pythonpath = ["tests"]` in pyproject.toml; subprocesses get it through PYTHONPATH). Its name
cannot be taken for a PyPI package's (`fixtures`, `helpers` are on PyPI). Modules:

- this one: the repository root, the quickstart config, overrides that make it run in seconds,
  running the CLI on CPU processes, the CLI's one `error:` line;
- `datasets`: tiny dataset trees on disk (folder, VOC, Cityscapes) and the CLI overrides that
  run the dataset recipes on them;
- `audit_example`, `nonfinite_example`, `preemption_helper`, `subclass_example`: classes that
  tests select by class path, e.g. `--model=seglight_testing.subclass_example.BoundaryWeighted`.

The pytest fixtures themselves (`in_tmp`) are in tests/conftest.py.
"""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = str(ROOT / "configs" / "quickstart.yaml")

# Overrides that make the quickstart config run in seconds on a CPU: 32 px images, a handful of
# them, a light encoder/decoder, no worker processes.
TINY = [
    "--data.image_size=32",
    "--data.train_size=8",
    "--data.val_size=4",
    "--data.test_size=4",
    "--data.predict_size=3",
    "--data.batch_size=4",
    "--data.num_workers=0",
    "--model.model_kwargs={decoder_channels: [16, 16, 8, 8, 8]}",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--trainer.log_every_n_steps=1",
]

# The same for the task recipes (configs/binary.yaml, multilabel.yaml): tiny data, no bars.
SHRINK = [
    "--data.image_size=32", "--data.train_size=16", "--data.val_size=4", "--data.test_size=4",
    "--data.predict_size=2", "--data.batch_size=4", "--data.num_workers=0",
    "--model.model_kwargs={decoder_channels: [16, 16, 8, 8, 8]}",
    "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
]  # fmt: skip


def run_on_cpus(tmp_path, devices: int, args: list[str], folder: str | None = None):
    """`python -m seglight <args>` on `devices` CPU processes (DDP over gloo when > 1, started
    by Lightning's own launcher), in its own folder (default `devices<N>`), which it returns.
    Runs given the same `folder` share it: e.g. `fit`, then `test` of its checkpoint."""
    cwd = tmp_path / (folder or f"devices{devices}")
    cwd.mkdir(exist_ok=True)
    strategy = "ddp" if devices > 1 else "auto"
    out = subprocess.run(
        [sys.executable, "-m", "seglight", *args, "--trainer.accelerator=cpu",
         f"--trainer.devices={devices}", f"--trainer.strategy={strategy}"],
        cwd=cwd, env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return cwd


def one_error_line(capsys) -> str:
    """The single `error:` line the CLI printed to stderr; fails on a traceback or several."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    return lines[0]


def logged_val_metrics(cwd: Path) -> dict[str, float]:
    """{name: value} of the val/ metrics in the run's metrics.csv under `cwd`/outputs/."""
    import csv

    with open(next(Path(cwd).glob("outputs/*/logs/version_0/metrics.csv"))) as f:
        rows = list(csv.DictReader(f))
    return {k: float(v) for r in rows for k, v in r.items() if v and k.startswith("val/")}


def assert_same_val_metrics(many: dict[str, float], one: dict[str, float]) -> None:
    """DDP's numbers against one process's: count-based metrics exactly (NaN for NaN), the
    losses, float sums added in another order, to float32 rounding."""
    import math

    assert many.keys() == one.keys()
    for key, value in one.items():
        if key.startswith("val/loss"):
            assert math.isclose(many[key], value, rel_tol=1e-6, abs_tol=0), key
        else:
            assert many[key] == value or (math.isnan(value) and math.isnan(many[key])), key
