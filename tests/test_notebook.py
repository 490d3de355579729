"""notebooks/quickstart.ipynb runs end to end (fast mode) with the current API, in tmp_path.

The notebook is executed by a real Jupyter kernel through nbclient, as `jupyter nbconvert
--execute` would; a cell that raises fails the test with the cell's traceback.
"""

import base64
import csv
import io
import json
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from PIL import Image

from seglight.data.synthetic import CLASS_NAMES

from seglight_testing import ROOT

NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"

# Appended to the notebook: reports the kernel's state after the last cell, as one JSON line.
PROBE = """
import json, sys
print("PROBE " + json.dumps({
    "python": sys.executable,
    "fast": FAST,
    "out": str(OUT),
    "best_path": checkpoint.best_model_path,
    "best_type": type(best).__name__,
    "best_b_type": type(best_b).__name__,
    "epochs_b": trainer_b.current_epoch,
    "steps_b": trainer_b.global_step,
    "log_dir_b": trainer_b.logger.log_dir,
    "new_shape": [list(new_image.shape[:2]), list(new_pred.shape)],
    "mask_png": (OUT / "new_image_mask.png").is_file(),
}))
"""


def _kernel_on_this_python(tmp_path, monkeypatch) -> None:
    """A `python3` kernelspec that starts sys.executable (the venv's python), first on the path.

    jupyter_client replaces a bare "python" in kernel.json by sys.executable, but a user-level
    spec (~/.local/share/jupyter/kernels/python3) comes before the venv's and may name another
    interpreter; JUPYTER_PATH comes before both.
    """
    spec = tmp_path / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    kernel = {"argv": argv, "display_name": "Python 3", "language": "python"}
    (spec / "kernel.json").write_text(json.dumps(kernel))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))


def _text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def _images(cell) -> list[Image.Image]:
    return [
        Image.open(io.BytesIO(base64.b64decode(o.data["image/png"])))
        for o in cell.outputs
        if o.output_type == "display_data" and "image/png" in o.data
    ]


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """The notebook after a fast-mode run in a fresh folder: (cells by tag, probe dict, folder)."""
    tmp_path = tmp_path_factory.mktemp("notebook")
    with pytest.MonkeyPatch.context() as monkeypatch:
        _kernel_on_this_python(tmp_path, monkeypatch)
        monkeypatch.setenv("SEGLIGHT_NOTEBOOK_FAST", "1")  # the kernel inherits the environment
        work = tmp_path / "work"
        work.mkdir()
        nb = nbformat.read(NOTEBOOK, as_version=4)
        nb.cells.append(nbformat.v4.new_code_cell(PROBE))
        client = NotebookClient(
            nb, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(work)}}
        )
        client.execute()  # raises CellExecutionError, with the traceback, if a cell fails
    tags = {t: c for c in nb.cells for t in c.metadata.get("tags", [])}
    probe = json.loads(_text(nb.cells[-1]).split("PROBE ", 1)[1])
    return tags, probe, work


def test_kernel_runs_this_python_in_fast_mode(executed):
    _, probe, _ = executed  # the fixture already failed if any cell raised
    assert probe["python"] == sys.executable
    assert probe["fast"] is True


def test_outputs_stay_in_the_working_folder(executed):
    _, probe, work = executed
    assert probe["out"] == str((work / "outputs" / "notebook").resolve())
    assert probe["mask_png"]


def test_trains_and_loads_the_best_checkpoint(executed):
    tags, probe, work = executed
    assert "best val/mIoU" in _text(tags["train"])
    assert probe["best_path"].endswith("best.ckpt")
    assert (work / "outputs/notebook/checkpoints/ce/best.ckpt").is_file()
    assert probe["best_type"] == "SegmentationModule"
    assert "loaded outputs/notebook/checkpoints/ce/best.ckpt" in _text(tags["class-iou"])


def test_prints_the_per_class_iou_table(executed):
    tags, _, _ = executed
    table = _text(tags["class-iou"])
    assert "val per class" in table
    for name in CLASS_NAMES:
        assert name in table


def test_shows_predictions_as_images(executed):
    tags, probe, _ = executed
    # 4 validation rows of image | truth | prediction; the new image as one row of three.
    (grid,) = _images(tags["predictions"])
    (new,) = _images(tags["new-image"])
    assert 0.6 < grid.width / grid.height < 0.9 and 2.5 < new.width / new.height < 3.5
    size, pred = probe["new_shape"]
    assert size == pred and size != [32, 32]  # predicted at the new image's own size


def test_subclass_trains_with_its_own_loss(executed):
    tags, probe, _ = executed
    assert probe["best_b_type"] == "BoundaryCE"
    assert probe["steps_b"] > 0 and probe["epochs_b"] == 1
    with open(Path(probe["log_dir_b"]) / "metrics.csv") as f:
        logged = next(csv.reader(f))  # the header: every metric name logged during fit
    assert "train/loss_boundary_epoch" in logged and "train/loss_ce_epoch" in logged
    comparison = _text(tags["compare"])
    assert "CE+boundary" in comparison and comparison.count("mIoU") == 1


def test_stored_notebook_is_small_and_from_a_full_run():
    # The committed copy keeps the outputs of one full run for readers on GitHub: they must not
    # be a fast-mode run, hold errors, or grow past a few hundred KB (progress bars, big images).
    assert NOTEBOOK.stat().st_size < 400_000
    nb = nbformat.read(NOTEBOOK, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert "fast mode: True" not in "".join(o.get("text", "") for o in outputs)
