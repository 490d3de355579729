"""The benchmark scripts run (a smoke run each); their timings are never asserted."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # 7 s of imports in a subprocess; `make test-all` runs it
def test_data_benchmark_smoke_run():
    """benchmarks/data.py --quick on 2 images prints per-pipeline throughputs and the ratio."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "data.py"), "--quick", "--images", "2"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    for path in ("ours \\(seglight\\)", "ours, training path"):
        assert re.search(rf"^ratio {path} / PIL \+ v2: \d+\.\d+ \(target >= 1\.5: (met|NOT met);",
                         out.stdout, re.M), out.stdout  # fmt: skip
    assert "decode share of ours" in out.stdout
