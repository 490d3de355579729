"""SegmentationMetrics, BinarySegmentationMetrics and MultilabelSegmentationMetrics against
independent numpy references (DDP equality: tests/test_task_metrics_ddp.py)."""

import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassJaccardIndex

from seglight.metrics import (
    BinarySegmentationMetrics,
    MultilabelSegmentationMetrics,
    SegmentationMetrics,
)

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


# --- Binary and multilabel (issue 12): sigmoid channels, thresholded, tp/fp/fn/tn counts. ---


def ratio(num, den):
    """num / den in float64, NaN where den is 0 (undefined, not 0)."""
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def numpy_counts(probs, target, threshold, label_axis=None):
    """tp, fp, fn, tn over the labelled entries; per label along label_axis if given."""
    keep = target != IGNORE
    pred, truth = probs >= threshold, target == 1
    axes = tuple(a for a in range(target.ndim) if a != label_axis)
    return tuple(
        np.sum(keep & (pred == p) & (truth == t), axis=axes).astype(np.int64)
        for p, t in ((True, True), (True, False), (False, True), (False, False))
    )


def binary_reference(probs, target, threshold) -> dict:
    tp, fp, fn, tn = numpy_counts(probs, target, threshold)
    iou_fg, iou_bg = ratio(tp, tp + fp + fn), ratio(tn, tn + fp + fn)
    defined = [v for v in (iou_bg, iou_fg) if not np.isnan(v)]
    return {
        "IoU": iou_fg,
        "dice": ratio(2 * tp, 2 * tp + fp + fn),
        "precision": ratio(tp, tp + fp),
        "recall": ratio(tp, tp + fn),
        "pixel_acc": ratio(tp + tn, tp + fp + fn + tn),
        "mIoU_2class": sum(defined) / len(defined) if defined else np.nan,
        "confmat": np.array([[tn, fp], [fn, tp]], np.int64),
    }


def multilabel_reference(probs, target, threshold) -> dict:
    tp, fp, fn, tn = numpy_counts(probs, target, threshold, label_axis=1)
    iou, f1 = ratio(tp, tp + fp + fn), ratio(2 * tp, 2 * tp + fp + fn)
    s_tp, s_fp, s_fn, s_tn = tp.sum(), fp.sum(), fn.sum(), tn.sum()

    def macro(values):
        defined = values[~np.isnan(values)]
        return defined.sum() / defined.size if defined.size else np.nan

    return {
        "IoU": iou,
        "F1": f1,
        "precision": ratio(tp, tp + fp),
        "recall": ratio(tp, tp + fn),
        "mIoU": macro(iou),
        "mF1": macro(f1),
        "IoU_micro": ratio(s_tp, s_tp + s_fp + s_fn),
        "F1_micro": ratio(2 * s_tp, 2 * s_tp + s_fp + s_fn),
        "pixel_acc": ratio(s_tp + s_tn, s_tp + s_fp + s_fn + s_tn),
        "counts": np.stack([tp, fp, fn, tn], axis=1),
    }


def random_sigmoid_batches(seed: int, shape: tuple, batches: int = 3):
    """(probs float64, target int64) pairs of `shape`, batch sizes varying; probs partly on a
    0.1 grid, so some equal the thresholds 0.3 / 0.5 / 0.7 exactly; ~15 % ignored entries."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(batches):
        size = (shape[0] + i, *shape[1:])
        target = rng.integers(0, 2, size)
        probs = np.clip(target * 0.4 + rng.random(size) * 0.6, 0, 1)  # better than chance
        on_grid = rng.random(size) < 0.3
        probs[on_grid] = rng.integers(0, 11, int(on_grid.sum())) / 10
        target[rng.random(size) < 0.15] = IGNORE
        out.append((probs, target))
    return out


def run_sigmoid_metric(metric, batches) -> dict:
    for probs, target in batches:
        metric.update(torch.from_numpy(probs), torch.from_numpy(target))
    return {k: v.numpy() for k, v in metric.compute().items()}


def assert_same(got: dict, ref: dict) -> None:
    """Integer counts exactly; floats to rtol 1e-12; NaN where the reference has NaN."""
    assert set(got) == set(ref)
    for key, value in ref.items():
        if key in ("confmat", "counts"):
            assert got[key].dtype == np.int64, key
            np.testing.assert_array_equal(got[key], value, err_msg=key)
        else:
            assert got[key].dtype == np.float64, key
            np.testing.assert_allclose(got[key], value, rtol=1e-12, atol=0, equal_nan=True)


def concatenated(batches):
    return np.concatenate([p for p, _ in batches]), np.concatenate([t for _, t in batches])


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
@pytest.mark.parametrize("shape", [(2, 17, 23), (1, 1, 5), (3, 8, 8)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_binary_matches_numpy_reference(seed, shape, threshold):
    batches = random_sigmoid_batches(seed, shape)
    got = run_sigmoid_metric(BinarySegmentationMetrics(threshold, IGNORE), batches)
    assert_same(got, binary_reference(*concatenated(batches), threshold))


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
@pytest.mark.parametrize("shape", [(2, 3, 17, 23), (1, 1, 1, 5), (3, 4, 8, 8)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_multilabel_matches_numpy_reference(seed, shape, threshold):
    batches = random_sigmoid_batches(seed, shape)
    got = run_sigmoid_metric(MultilabelSegmentationMetrics(shape[1], threshold, IGNORE), batches)
    assert_same(got, multilabel_reference(*concatenated(batches), threshold))


def test_several_updates_equal_one_over_the_concatenation():
    for metric, shape in (
        (lambda: BinarySegmentationMetrics(0.5), (2, 9, 11)),
        (lambda: MultilabelSegmentationMetrics(3, 0.5), (2, 3, 9, 11)),
    ):
        batches = random_sigmoid_batches(5, shape, batches=4)
        many = run_sigmoid_metric(metric(), batches)
        one = run_sigmoid_metric(metric(), [concatenated(batches)])
        for key in many:
            np.testing.assert_array_equal(many[key], one[key], err_msg=key)


def test_all_ignored_is_nan_everywhere():
    binary = BinarySegmentationMetrics()
    binary.update(torch.rand(2, 4, 4), torch.full((2, 4, 4), IGNORE))
    multi = MultilabelSegmentationMetrics(3)
    multi.update(torch.rand(2, 3, 4, 4), torch.full((2, 3, 4, 4), IGNORE))
    for out, counts in ((binary.compute(), "confmat"), (multi.compute(), "counts")):
        assert int(out.pop(counts).sum()) == 0
        assert all(bool(torch.isnan(v).all()) for v in out.values()), out


def test_absent_foreground_is_nan_but_pixel_acc_is_defined():
    target = torch.tensor([[[0, 0], [0, IGNORE]]])
    binary = BinarySegmentationMetrics(0.5)
    binary.update(torch.tensor([[[0.1, 0.2], [0.49, 0.9]]], dtype=torch.float64), target)
    out = binary.compute()
    assert all(torch.isnan(out[k]) for k in ("IoU", "dice", "precision", "recall"))
    assert float(out["pixel_acc"]) == 1.0 and float(out["mIoU_2class"]) == 1.0  # bg IoU alone
    # Multilabel: label 1 absent from truth and prediction -> NaN, left out of the macro means.
    multi = MultilabelSegmentationMetrics(2, 0.5)
    probs = torch.tensor([[[[0.9, 0.1], [0.8, 0.9]], [[0.1, 0.2], [0.3, 0.9]]]])
    multi.update(probs, torch.tensor([[[[1, 0], [0, 1]], [[0, 0], [0, IGNORE]]]]))
    out = multi.compute()
    assert torch.isnan(out["IoU"][1]) and torch.isnan(out["F1"][1])
    assert out["IoU"][0].item() == 2 / 3 and out["mIoU"].item() == 2 / 3
    assert out["mF1"].item() == 0.8 and out["pixel_acc"].item() == 6 / 7
    assert out["counts"].tolist() == [[2, 1, 0, 1], [0, 0, 0, 3]]


def test_probability_equal_to_threshold_is_foreground():
    """pred = probs >= threshold."""
    metric = BinarySegmentationMetrics(0.25)
    metric.update(torch.tensor([[[0.25, 0.2499]]]), torch.tensor([[[1, 1]]]))
    assert metric.compute()["confmat"].tolist() == [[0, 0], [1, 1]]


@pytest.mark.parametrize("bad", [-1, -5, 2, 7, 254])
def test_sigmoid_bad_labels_are_named_without_counting(bad):
    binary = BinarySegmentationMetrics()
    with pytest.raises(ValueError, match=rf"^label values \[{bad}\] are outside \{{0, 1\}}"):
        binary.update(torch.rand(1, 2, 2), torch.tensor([[[0, bad], [1, IGNORE]]]))
    multi = MultilabelSegmentationMetrics(2)
    target = torch.tensor([[[[0, 1], [1, IGNORE]], [[0, bad], [bad, 1]]]])
    with pytest.raises(ValueError, match=rf"^label values \[{bad}\] are outside \{{0, 1\}}"):
        multi.update(torch.rand(1, 2, 2, 2), target)
    for metric in (binary, multi):  # nothing half-counted
        assert sum(int(getattr(metric, k).sum()) for k in ("tp", "fp", "fn", "tn")) == 0


def test_unlabelled_value_without_ignore_index_is_an_error():
    metric = BinarySegmentationMetrics(ignore_index=None)
    with pytest.raises(ValueError, match=r"\[255\].*ignore_index \(None\)"):
        metric.update(torch.rand(1, 1, 2), torch.tensor([[[1, IGNORE]]]))
    metric.update(torch.rand(1, 1, 2), torch.tensor([[[1, 0]]]))
    assert int(metric.compute()["confmat"].sum()) == 2


def test_sigmoid_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match=r"probs \(2, 1, 4, 4\) and target \(2, 4, 4\)"):
        BinarySegmentationMetrics().update(torch.rand(2, 1, 4, 4), torch.zeros(2, 4, 4).long())
    with pytest.raises(ValueError, match=r"expected \(B, 3, H, W\)"):
        MultilabelSegmentationMetrics(3).update(torch.rand(2, 2, 4, 4), torch.zeros(2, 2, 4, 4))


def test_sigmoid_check_adds_no_reduction_beyond_bincount(monkeypatch):
    """As SegmentationMetrics: no min/max/any/unique (each a host sync on a GPU) per update."""
    binary, multi = BinarySegmentationMetrics(), MultilabelSegmentationMetrics(2)
    for name in ("min", "max", "aminmax", "any", "all", "unique", "item", "tolist", "nonzero"):
        monkeypatch.setattr(torch.Tensor, name, lambda *a, **k: pytest.fail("extra reduction"))
    binary.update(torch.tensor([[[0.9, 0.1], [0.7, 0.2]]]), torch.tensor([[[1, 1], [IGNORE, 0]]]))
    multi.update(torch.full((1, 2, 1, 2), 0.6), torch.tensor([[[[1, 0]], [[IGNORE, 1]]]]))
    monkeypatch.undo()
    assert binary.compute()["confmat"].tolist() == [[1, 0], [1, 1]]
    assert multi.compute()["counts"].tolist() == [[1, 1, 0, 0], [1, 0, 0, 0]]


def test_mIoU_2class_is_the_two_class_multiclass_mIoU():
    batches = random_sigmoid_batches(11, (2, 13, 7))
    binary = BinarySegmentationMetrics(0.5)
    multiclass = SegmentationMetrics(2, IGNORE)
    for probs, target in batches:
        binary.update(torch.from_numpy(probs), torch.from_numpy(target))
        multiclass.update(
            torch.from_numpy((probs >= 0.5).astype(np.int64)), torch.from_numpy(target)
        )
    ours, theirs = binary.compute(), multiclass.compute()
    assert torch.equal(ours["confmat"], theirs["confmat"])
    # SegmentationMetrics' IoU passes through torchmetrics' float32 division: rtol 1e-6 here.
    torch.testing.assert_close(ours["mIoU_2class"], theirs["mIoU"], rtol=1e-6, atol=0)
    torch.testing.assert_close(ours["IoU"], theirs["IoU"][1], rtol=1e-6, atol=0)


def test_binary_agrees_with_sklearn():
    metrics = pytest.importorskip("sklearn.metrics")
    batches = random_sigmoid_batches(4, (2, 15, 9))
    out = run_sigmoid_metric(BinarySegmentationMetrics(0.7), batches)
    probs, target = concatenated(batches)
    keep = target != IGNORE
    truth, pred = target[keep], (probs[keep] >= 0.7).astype(np.int64)
    np.testing.assert_allclose(out["IoU"], metrics.jaccard_score(truth, pred), rtol=1e-12)
    np.testing.assert_allclose(out["dice"], metrics.f1_score(truth, pred), rtol=1e-12)
    np.testing.assert_allclose(out["pixel_acc"], metrics.accuracy_score(truth, pred), rtol=1e-12)


def test_sigmoid_forward_returns_the_batch_and_accumulates():
    """Lightning-style `metric(probs, target)`: the batch's values, added to the split's."""
    batches = random_sigmoid_batches(6, (1, 3, 6, 6), batches=2)
    metric = MultilabelSegmentationMetrics(3)
    first = metric(*(torch.from_numpy(a) for a in batches[0]))
    metric(*(torch.from_numpy(a) for a in batches[1]))
    assert_same({k: v.numpy() for k, v in first.items()}, multilabel_reference(*batches[0], 0.5))
    split = {k: v.numpy() for k, v in metric.compute().items()}
    assert_same(split, multilabel_reference(*concatenated(batches), 0.5))


def test_negative_ignore_index_is_dropped_and_255_then_rejected():
    metric = MultilabelSegmentationMetrics(2, ignore_index=-1)
    metric.update(torch.full((1, 2, 1, 2), 0.9), torch.tensor([[[[1, -1]], [[-1, 0]]]]))
    assert metric.compute()["counts"].tolist() == [[1, 0, 0, 0], [0, 1, 0, 0]]
    with pytest.raises(ValueError, match=r"\[255\].*ignore_index \(-1\)"):
        metric.update(torch.rand(1, 2, 1, 1), torch.tensor([[[[IGNORE]], [[-1]]]]))
    with pytest.raises(ValueError, match="ignore_index 1 would drop a class"):
        BinarySegmentationMetrics(ignore_index=1)
