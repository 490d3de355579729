"""SegmentationMetrics against an independent numpy confusion-matrix reference."""

import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassJaccardIndex

from seglight.metrics import SegmentationMetrics

IGNORE = 255


def numpy_reference(preds: np.ndarray, target: np.ndarray, num_classes: int) -> dict:
    """The official evaluators' formulas (Cityscapes scripts, mmsegmentation), in plain numpy."""
    keep = target != IGNORE
    p, t = preds[keep].astype(np.int64), target[keep].astype(np.int64)
    confmat = np.zeros((num_classes, num_classes), np.int64)
    for ti, pi in zip(t, p, strict=True):  # deliberately the slow, obvious way
        confmat[ti, pi] += 1
    tp = np.diag(confmat).astype(float)
    gt, pred = confmat.sum(1), confmat.sum(0)
    union = gt + pred - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        acc = np.where(gt > 0, tp / gt, np.nan)
    return {
        "confmat": confmat,
        "IoU": iou,
        "acc": acc,
        "mIoU": np.nanmean(iou),
        "mAcc": np.nanmean(acc),
        "pixel_acc": tp.sum() / confmat.sum(),
    }


def random_batches(seed: int, num_classes: int, absent: int | None, batches: int = 3):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(batches):
        target = rng.integers(0, num_classes, (2, 17, 23))
        preds = np.where(
            rng.random(target.shape) < 0.6, target, rng.integers(0, num_classes, target.shape)
        )
        if absent is not None:  # a class in neither ground truth nor prediction
            target[target == absent] = 0
            preds[preds == absent] = 1
        target[rng.random(target.shape) < 0.15] = IGNORE
        out.append((preds, target))
    return out


def run_metric(batches, num_classes: int) -> dict:
    metric = SegmentationMetrics(num_classes, IGNORE)
    for preds, target in batches:
        metric.update(torch.from_numpy(preds), torch.from_numpy(target))
    return {k: v.numpy() for k, v in metric.compute().items()} | {"confmat": metric.confmat.numpy()}


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("absent", [None, 3])
def test_matches_numpy_reference(seed, absent):
    batches = random_batches(seed, num_classes=5, absent=absent)
    got = run_metric(batches, 5)
    ref = numpy_reference(
        np.concatenate([p.ravel() for p, _ in batches]),
        np.concatenate([t.ravel() for _, t in batches]),
        5,
    )
    np.testing.assert_array_equal(got["confmat"], ref["confmat"])
    for key in ("IoU", "acc"):
        np.testing.assert_allclose(got[key], ref[key], atol=1e-6, equal_nan=True)
    for key in ("mIoU", "mAcc", "pixel_acc"):
        assert abs(float(got[key]) - ref[key]) < 1e-6, key
    if absent is not None:
        assert np.isnan(got["IoU"][absent])  # left out of the mean, not counted as 0


def test_agrees_with_torchmetrics_macro_jaccard():
    """mIoU is torchmetrics' own macro Jaccard; only the counting was replaced."""
    batches = random_batches(7, num_classes=6, absent=2)
    ours = SegmentationMetrics(6, IGNORE)
    theirs = MulticlassJaccardIndex(6, average="macro", ignore_index=IGNORE)
    for preds, target in batches:
        ours.update(torch.from_numpy(preds), torch.from_numpy(target))
        theirs.update(torch.from_numpy(preds), torch.from_numpy(target))
    torch.testing.assert_close(ours.compute()["mIoU"].float(), theirs.compute(), atol=1e-6, rtol=0)


def test_perfect_prediction():
    target = torch.tensor([[[0, 1], [2, IGNORE]]])
    metric = SegmentationMetrics(3, IGNORE)
    metric.update(target.clamp(max=2), target)
    out = metric.compute()
    assert (
        float(out["mIoU"]) == 1.0 and float(out["pixel_acc"]) == 1.0 and float(out["mAcc"]) == 1.0
    )


def test_all_ignored_counts_nothing():
    metric = SegmentationMetrics(3, IGNORE)
    metric.update(torch.zeros(1, 4, 4, dtype=torch.long), torch.full((1, 4, 4), IGNORE))
    assert int(metric.confmat.sum()) == 0
    out = metric.compute()  # undefined, not a 0 that would read as a result
    assert all(torch.isnan(out[k]) for k in ("mIoU", "pixel_acc", "mAcc"))


def test_out_of_range_label_is_named():
    metric = SegmentationMetrics(3, IGNORE)
    with pytest.raises(ValueError, match=r"\[7\].*outside \[0, 3\)"):
        metric.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.tensor([[[0, 7], [1, 2]]]))


def test_deterministic_mode_stays_cheap(monkeypatch):
    """Trainer(deterministic=True) must not reach torchmetrics' (pixels x C^2) bincount fallback."""
    import torchmetrics.utilities.data as tm_data

    def forbidden(*args, **kwargs):
        raise AssertionError("torchmetrics' memory-hungry _bincount was called")

    monkeypatch.setattr(tm_data, "_bincount", forbidden)
    batches = random_batches(3, num_classes=4, absent=None)
    torch.use_deterministic_algorithms(True)
    try:
        got = run_metric(batches, 4)
    finally:
        torch.use_deterministic_algorithms(False)
    ref = numpy_reference(batches[0][0], batches[0][1], 4)
    assert got["confmat"].sum() > ref["confmat"].sum()  # all three batches were counted
    np.testing.assert_array_equal(got["confmat"], run_metric(batches, 4)["confmat"])


@pytest.mark.parametrize("bad", [-1, -5, 3, 254])
def test_negative_and_too_large_labels_are_named_without_counting(bad):
    metric = SegmentationMetrics(3, IGNORE)
    target = torch.tensor([[[0, bad], [1, IGNORE]]])
    with pytest.raises(ValueError, match=rf"\[{bad}\].*outside \[0, 3\)"):
        metric.update(torch.zeros(1, 2, 2, dtype=torch.long), target)
    assert int(metric.confmat.sum()) == 0  # nothing half-counted


def test_the_check_adds_no_reduction_beyond_bincount(monkeypatch):
    """Labels are checked where they are counted: no min/max/any (each a host sync on a GPU)."""
    metric = SegmentationMetrics(3, IGNORE)
    for name in ("min", "max", "aminmax", "any", "unique"):
        monkeypatch.setattr(torch.Tensor, name, lambda *a, **k: pytest.fail("extra reduction"))
    metric.update(torch.tensor([[[0, 1], [2, 2]]]), torch.tensor([[[0, 1], [IGNORE, 2]]]))
    assert metric.confmat.tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
