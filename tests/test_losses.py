"""Each loss term against a value computed here with numpy from its formula, on a 1x3x2x3 input."""

import math

import numpy as np
import pytest
import torch

from seglight.losses import LossConfig, SegmentationLoss, build_loss

IGNORE = 255
# logits (B=1, C=3, H=2, W=3); two of the six pixels are unlabelled.
LOGITS = np.array(
    [
        [[[1.0, -0.5, 3.0], [0.2, 2.0, -1.0]],
         [[0.3, 1.5, -2.0], [-0.7, 0.1, 0.8]],
         [[-1.2, 0.4, 0.5], [1.1, -3.0, 0.0]]]
    ]
)  # fmt: skip
MASK = np.array([[[0, 1, IGNORE], [2, IGNORE, 1]]])
MASK_NO_2 = np.array([[[0, 1, IGNORE], [0, IGNORE, 1]]])  # class 2 absent from the labels


def run(config: LossConfig, logits=LOGITS, mask=MASK, num_classes=3) -> dict[str, float]:
    loss_fn = build_loss(config, num_classes=num_classes, ignore_index=IGNORE).double()
    out = loss_fn(torch.tensor(logits), torch.tensor(mask))
    return {k: v.item() for k, v in out.items()}


# ----------------------------------------------------------------- numpy references
def labelled(logits, mask):
    """(C, P) logits and (P,) labels of the labelled pixels of the whole batch."""
    c = logits.shape[1]
    z = np.moveaxis(logits, 1, 0).reshape(c, -1)
    y = mask.reshape(-1)
    keep = y != IGNORE
    return z[:, keep], y[keep]


def softmax(z):  # over classes, z (C, P)
    e = np.exp(z - z.max(0))
    return e / e.sum(0)


def ref_ce(logits, mask, weights=None, eps=0.0):
    z, y = labelled(logits, mask)
    c, n = z.shape
    w = np.ones(c) if weights is None else np.asarray(weights, dtype=float)
    nll = -np.log(softmax(z))  # (C, P)
    norm = sum(w[y[i]] for i in range(n))
    hard = sum(w[y[i]] * nll[y[i], i] for i in range(n)) / norm
    smooth = sum(w[k] * nll[k, i] for i in range(n) for k in range(c)) / norm
    return (1 - eps) * hard + eps / c * smooth


def ref_dice(logits, mask, smooth=0.0):
    z, y = labelled(logits, mask)
    p = softmax(z)
    losses = []
    for c in range(z.shape[0]):
        t = (y == c).astype(float)
        inter, sx, sy = (p[c] * t).sum(), p[c].sum(), t.sum()
        # 1 - (2|X.Y| + 2s) / (|X| + |Y| + 2s); smp scores classes absent from labels as 0
        losses.append(1 - (2 * inter + 2 * smooth) / (sx + sy + 2 * smooth) if sy > 0 else 0.0)
    return float(np.mean(losses))  # mean over all C classes


def ref_focal(logits, mask, gamma=2.0, alpha=None):
    # smp multiclass focal: sigmoid one-vs-rest per channel, mean over pixels, then over classes
    z, y = labelled(logits, mask)
    per_class = []
    for c in range(z.shape[0]):
        vals = []
        for zi, yi in zip(z[c], y, strict=True):
            t = float(yi == c)
            s = 1 / (1 + math.exp(-zi))
            pt = s if t else 1 - s
            v = -((1 - pt) ** gamma) * math.log(pt)
            if alpha is not None:
                v *= alpha * t + (1 - alpha) * (1 - t)
            vals.append(v)
        per_class.append(np.mean(vals))
    return float(np.mean(per_class))


def lovasz_extension(errors, fg):
    """Berman et al.: sum_k e_(k) (D(S_k) - D(S_{k-1})), errors sorted descending, S_k the pixels
    of the k largest errors, D(S) = |S| / |G u S| the Jaccard loss if S is mispredicted."""
    order = sorted(range(len(errors)), key=lambda i: -errors[i])
    gt = {i for i in range(len(fg)) if fg[i]}

    def jaccard_loss(s):
        return len(s) / len(gt | s) if s else 0.0

    return sum(
        errors[i] * (jaccard_loss(set(order[: k + 1])) - jaccard_loss(set(order[:k])))
        for k, i in enumerate(order)
    )


def ref_lovasz(logits, mask):
    z, y = labelled(logits, mask)
    p = softmax(z)
    present = [c for c in range(z.shape[0]) if (y == c).any()]  # smp's classes="present"
    return float(np.mean([lovasz_extension(np.abs((y == c) - p[c]), y == c) for c in present]))


def test_lovasz_reference_by_hand():
    # pixel 0 is foreground with error 0.1, pixel 1 background with error 0.7. Sorted: [1, 0];
    # D({1}) = 1/|{0,1}| = 1/2, D({0,1}) = 2/2 = 1 -> 0.7 * 1/2 + 0.1 * (1 - 1/2) = 0.4
    assert lovasz_extension([0.1, 0.7], [True, False]) == pytest.approx(0.4, abs=1e-12)


# ----------------------------------------------------------------- each term
def test_ce_plain():
    # pixel-by-pixel: mean of -log softmax at the label over the 4 labelled pixels
    z, y = labelled(LOGITS, MASK)
    manual = np.mean([math.log(np.exp(z[:, i]).sum()) - z[y[i], i] for i in range(len(y))])
    assert run(LossConfig(ce=1.0))["ce"] == pytest.approx(manual, abs=1e-6)
    assert ref_ce(LOGITS, MASK) == pytest.approx(manual, abs=1e-12)


@pytest.mark.parametrize(
    "weights, eps", [((0.2, 1.0, 3.0), 0.0), (None, 0.1), ((0.2, 1.0, 3.0), 0.25)]
)
def test_ce_class_weights_and_label_smoothing(weights, eps):
    got = run(LossConfig(ce=1.0, class_weights=weights, label_smoothing=eps))["ce"]
    assert got == pytest.approx(ref_ce(LOGITS, MASK, weights, eps), abs=1e-6)
    assert got != pytest.approx(ref_ce(LOGITS, MASK), abs=1e-3)  # the option changed something


@pytest.mark.parametrize("mask", [MASK, MASK_NO_2])
@pytest.mark.parametrize("smooth", [0.0, 1.0])
def test_dice(mask, smooth):
    got = run(LossConfig(ce=0.0, dice=1.0, dice_smooth=smooth), mask=mask)["dice"]
    assert got == pytest.approx(ref_dice(LOGITS, mask, smooth), abs=1e-6)


@pytest.mark.parametrize("gamma, alpha", [(2.0, None), (1.5, 0.25), (0.0, None)])
def test_focal(gamma, alpha):
    cfg = LossConfig(ce=0.0, focal=1.0, focal_gamma=gamma, focal_alpha=alpha)
    assert run(cfg)["focal"] == pytest.approx(ref_focal(LOGITS, MASK, gamma, alpha), abs=1e-6)


@pytest.mark.parametrize("mask", [MASK, MASK_NO_2])
def test_lovasz(mask):
    got = run(LossConfig(ce=0.0, lovasz=1.0), mask=mask)["lovasz"]
    assert got == pytest.approx(ref_lovasz(LOGITS, mask), abs=1e-6)


def test_lovasz_per_image_with_a_void_image():
    logits = np.concatenate([LOGITS, LOGITS[:, ::-1] * 0.5])  # B=2
    mask = np.concatenate([MASK, MASK_NO_2])
    per_image = LossConfig(ce=0.0, lovasz=1.0, lovasz_per_image=True)
    expected = (ref_lovasz(logits[:1], mask[:1]) + ref_lovasz(logits[1:], mask[1:])) / 2
    assert run(per_image, logits, mask)["lovasz"] == pytest.approx(expected, abs=1e-6)
    # smp returns an empty tensor or crashes here; a void image scores 0 over B=2 images
    mask[1] = IGNORE
    expected = ref_lovasz(logits[:1], mask[:1]) / 2
    assert expected > 0
    assert run(per_image, logits, mask)["lovasz"] == pytest.approx(expected, abs=1e-6)


def test_weighted_sum_and_only_active_terms():
    out = run(LossConfig(ce=1.0, dice=0.5))
    assert set(out) == {"loss", "ce", "dice"}
    assert out["loss"] == pytest.approx(out["ce"] + 0.5 * out["dice"], abs=1e-12)
    expected = ref_ce(LOGITS, MASK) + 0.5 * ref_dice(LOGITS, MASK)
    assert out["loss"] == pytest.approx(expected, abs=1e-6)
    loss_fn = build_loss(LossConfig(ce=0.0, focal=2.0), num_classes=3)
    assert isinstance(loss_fn, SegmentationLoss) and list(loss_fn.terms) == ["focal"]


ALL = LossConfig(ce=1.0, dice=0.5, focal=0.25, lovasz=0.75)


def test_ignored_pixels_change_nothing():
    def loss_and_grad(logits):
        x = torch.tensor(logits, requires_grad=True)
        out = build_loss(ALL, 3).double()(x, torch.tensor(MASK))
        out["loss"].backward()
        return {k: v.item() for k, v in out.items()}, x.grad

    perturbed = LOGITS.copy()
    ignored = MASK[:, None].repeat(3, axis=1) == IGNORE  # (B, C, H, W)
    perturbed[ignored] = np.random.default_rng(0).normal(0, 50, ignored.sum())
    (a, grad_a), (b, grad_b) = loss_and_grad(LOGITS), loss_and_grad(perturbed)
    assert a == pytest.approx(b, abs=1e-12)
    assert torch.all(grad_a[torch.tensor(ignored)] == 0)
    assert torch.all(grad_b[torch.tensor(ignored)] == 0)
    assert torch.all(grad_a[~torch.tensor(ignored)] != 0)


def test_all_ignored_batch_gives_zero_with_gradients():
    x = torch.tensor(np.concatenate([LOGITS, LOGITS]), requires_grad=True)
    for cfg in (ALL, LossConfig(ce=1.0, lovasz=1.0, lovasz_per_image=True)):
        out = build_loss(cfg, 3).double()(x, torch.full((2, 2, 3), IGNORE))
        assert all(v.item() == 0 and v.shape == () for v in out.values())
        x.grad = None
        out["loss"].backward()
        assert torch.equal(x.grad, torch.zeros_like(x))


# ----------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"ce": 0.0}, "all weights"),
        ({"dice": -0.5}, "loss.dice"),
        ({"label_smoothing": 1.0}, "loss.label_smoothing"),
        ({"label_smoothing": -0.1}, "loss.label_smoothing"),
        ({"class_weights": [1.0, 2.0]}, "loss.class_weights.*2 entries.*num_classes is 3"),
        ({"class_weights": [1.0, -2.0, 1.0]}, "loss.class_weights"),
        ({"focal": 1.0, "focal_alpha": 1.5}, "loss.focal_alpha"),
    ],
)
def test_invalid_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_loss(LossConfig(**kwargs), num_classes=3)


def test_invalid_mask_values_are_named():
    loss_fn = build_loss(ALL, 3)
    mask = torch.tensor([[[0, 3, IGNORE], [-1, 7, 3]]])
    with pytest.raises(ValueError, match=r"values \[-1, 3, 7\].*\[0, 3\).*ignore_index=255"):
        loss_fn(torch.zeros(1, 3, 2, 3), mask)
    with pytest.raises(ValueError, match="channels"):
        loss_fn(torch.zeros(1, 4, 2, 3), torch.zeros(1, 2, 3, dtype=torch.long))


def test_class_weights_list_from_yaml_becomes_hashable_tuple():
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_argument("--loss", type=LossConfig)
    cfg = parser.instantiate(parser.parse_string("loss: {ce: 1.0, class_weights: [1, 2.5, 3]}"))
    assert cfg.loss == LossConfig(class_weights=(1.0, 2.5, 3.0))
    assert hash(LossConfig(class_weights=[1, 2])) == hash(LossConfig(class_weights=(1.0, 2.0)))


# ================================================================= binary and multilabel tasks
# binary: one foreground logit (B=2, 1, H=2, W=3); mask (B, H, W) of 0/1, three pixels unlabelled
BIN_LOGITS = np.array(
    [[[[1.2, -0.4, 2.5], [-1.5, 0.3, 0.9]]],
     [[[-0.8, 1.7, 0.1], [0.6, -2.2, -0.3]]]]
)  # fmt: skip
BIN_MASK = np.array(
    [[[1, 0, IGNORE], [0, 1, IGNORE]],
     [[0, 1, 1], [IGNORE, 0, 0]]]
)  # fmt: skip
# multilabel: L=3 labels on LOGITS (1, 3, 2, 3); ignore per entry. Label 2 is wholly unlabelled in
# ML_MASK and labelled but without positives in ML_MASK_NEG.
ML_MASK = np.array(
    [[[[1, 0, IGNORE], [0, 1, 0]],
      [[0, 0, 1], [IGNORE, IGNORE, 1]],
      [[IGNORE] * 3, [IGNORE] * 3]]]
)  # fmt: skip
ML_MASK_NEG = ML_MASK.copy()
ML_MASK_NEG[0, 2] = [[0, 0, IGNORE], [0, 0, 0]]
ML_CASES = {
    "binary": [(BIN_LOGITS, BIN_MASK)],
    "multilabel": [(LOGITS, ML_MASK), (LOGITS, ML_MASK_NEG)],
}
CASES = [(task, lg, m) for task, cases in ML_CASES.items() for lg, m in cases]
NUM = {"binary": 2, "multilabel": 3}
SIG_ALL = LossConfig(ce=1.0, dice=0.5, focal=0.25, lovasz=0.75)


def run_task(config, task, logits, mask):
    loss_fn = build_loss(config, NUM[task], ignore_index=IGNORE, task=task).double()
    out = loss_fn(torch.tensor(logits), torch.tensor(mask))
    return {k: v.item() for k, v in out.items()}


def per_label(logits, mask):
    """[(z, y) of the labelled entries of each label]; a binary mask gets its channel axis."""
    if mask.ndim == 3:
        mask = mask[:, None]
    out = []
    for c in range(logits.shape[1]):
        z, y = logits[:, c].reshape(-1), mask[:, c].reshape(-1)
        out.append((z[y != IGNORE], y[y != IGNORE]))
    return out


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def ref_bce(logits, mask, task, weights=None, eps=0.0):
    num = den = 0.0
    for label, (z, y) in enumerate(per_label(logits, mask)):
        for zi, yi in zip(z, y, strict=True):
            t = yi * (1 - eps) + eps / 2
            if task == "binary":
                w_bg, w_fg = weights or (1.0, 1.0)
                w_pos, w_neg, w_own = w_fg, w_bg, (w_fg if yi else w_bg)
            else:
                w_pos = w_neg = w_own = 1.0 if weights is None else weights[label]
            s = sigmoid(zi)
            num -= w_pos * t * math.log(s) + w_neg * (1 - t) * math.log(1 - s)
            den += w_own
    return num / den


def ref_sigmoid_dice(logits, mask, smooth=0.0):
    losses = []
    for z, y in per_label(logits, mask):
        p = np.array([sigmoid(v) for v in z])
        inter, sx, sy = (p * y).sum(), p.sum(), y.sum()
        losses.append(1 - (2 * inter + 2 * smooth) / (sx + sy + 2 * smooth) if sy > 0 else 0.0)
    return float(np.mean(losses))  # a label without labelled positives scores 0 but counts


def ref_sigmoid_focal(logits, mask, gamma=2.0, alpha=None):
    per = []
    for z, y in per_label(logits, mask):
        if len(y) == 0:
            continue  # a wholly unlabelled label is left out of the mean over labels
        vals = []
        for zi, yi in zip(z, y, strict=True):
            pt = sigmoid(zi) if yi else 1 - sigmoid(zi)
            a = 1.0 if alpha is None else (alpha if yi else 1 - alpha)
            vals.append(-a * (1 - pt) ** gamma * math.log(pt))
        per.append(np.mean(vals))
    return float(np.mean(per))


def ref_hinge(logits, mask, per_image=False):
    """Lovasz hinge on all labelled entries pooled (smp's binary and multilabel definition)."""
    if per_image:
        return float(
            np.mean([ref_hinge(logits[i : i + 1], mask[i : i + 1]) for i in range(len(mask))])
        )
    pairs = per_label(logits, mask)
    z = np.concatenate([p[0] for p in pairs])
    y = np.concatenate([p[1] for p in pairs])
    errors = np.maximum(1 - z * (2 * y - 1), 0)
    return lovasz_extension(list(errors), list(y == 1))


def approx(x, abs=1e-7):
    return pytest.approx(x, rel=1e-6, abs=abs)


def test_sigmoid_references_by_hand():
    # one pixel, logit 0, foreground: BCE log 2; focal (gamma 2) 0.25 log 2; hinge error 1 -> 1
    one, fg = np.zeros((1, 1, 1, 1)), np.ones((1, 1, 1), dtype=int)
    assert ref_bce(one, fg, "binary") == pytest.approx(math.log(2), abs=1e-12)
    assert ref_sigmoid_focal(one, fg) == pytest.approx(0.25 * math.log(2), abs=1e-12)
    assert ref_hinge(one, fg) == pytest.approx(1.0, abs=1e-12)
    assert ref_sigmoid_dice(one, fg) == pytest.approx(1 - 1 / 1.5, abs=1e-12)  # 1 - 2*.5/(.5+1)


@pytest.mark.parametrize("task, logits, mask", CASES)
@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_sigmoid_ce(task, logits, mask, eps):
    got = run_task(LossConfig(ce=1.0, label_smoothing=eps), task, logits, mask)["ce"]
    assert got == approx(ref_bce(logits, mask, task, eps=eps))


@pytest.mark.parametrize("weights", [None, (0.3, 2.0)])
@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_binary_ce_is_two_class_cross_entropy(weights, eps):
    # the decision for binary class_weights [bg, fg] and label_smoothing: the same value as
    # torch's CrossEntropyLoss on logits (0, z) with those class weights and smoothing
    z = torch.tensor(BIN_LOGITS)
    two = torch.cat([torch.zeros_like(z), z], dim=1)
    w = None if weights is None else torch.tensor(weights, dtype=torch.float64)
    ce = torch.nn.CrossEntropyLoss(weight=w, ignore_index=IGNORE, label_smoothing=eps)
    expected = ce(two, torch.tensor(BIN_MASK)).item()
    cfg = LossConfig(ce=1.0, class_weights=weights, label_smoothing=eps)
    got = run_task(cfg, "binary", BIN_LOGITS, BIN_MASK)["ce"]
    assert got == approx(expected)
    assert got == approx(ref_bce(BIN_LOGITS, BIN_MASK, "binary", weights, eps))


def test_multilabel_ce_class_weights_are_per_label():
    weights = (0.5, 2.0, 7.0)  # label 2 unlabelled in ML_MASK: its weight must not count
    for mask in (ML_MASK, ML_MASK_NEG):
        got = run_task(LossConfig(ce=1.0, class_weights=weights), "multilabel", LOGITS, mask)
        assert got["ce"] == approx(ref_bce(LOGITS, mask, "multilabel", weights))
        assert got["ce"] != approx(ref_bce(LOGITS, mask, "multilabel"), abs=1e-3)


@pytest.mark.parametrize("task, logits, mask", CASES)
@pytest.mark.parametrize("smooth", [0.0, 1.0])
def test_sigmoid_dice(task, logits, mask, smooth):
    got = run_task(LossConfig(ce=0.0, dice=1.0, dice_smooth=smooth), task, logits, mask)["dice"]
    assert got == approx(ref_sigmoid_dice(logits, mask, smooth))


@pytest.mark.parametrize("task, logits, mask", CASES)
@pytest.mark.parametrize("gamma, alpha", [(2.0, None), (1.5, 0.25), (0.0, 0.8)])
def test_sigmoid_focal(task, logits, mask, gamma, alpha):
    cfg = LossConfig(ce=0.0, focal=1.0, focal_gamma=gamma, focal_alpha=alpha)
    got = run_task(cfg, task, logits, mask)["focal"]
    assert got == approx(ref_sigmoid_focal(logits, mask, gamma, alpha))


def test_multilabel_focal_works_where_smp_raises():
    # smp 0.6.0 FocalLoss("multilabel", ignore_index=...) indexes (B, H, W) with (B, L, H, W)
    from segmentation_models_pytorch.losses import FocalLoss

    with pytest.raises(IndexError):
        FocalLoss("multilabel", ignore_index=IGNORE)(torch.tensor(LOGITS), torch.tensor(ML_MASK))
    got = run_task(LossConfig(ce=0.0, focal=1.0), "multilabel", LOGITS, ML_MASK)["focal"]
    assert math.isfinite(got) and got == approx(ref_sigmoid_focal(LOGITS, ML_MASK))


@pytest.mark.parametrize("task, logits, mask", CASES)
@pytest.mark.parametrize("per_image", [False, True])
def test_sigmoid_lovasz(task, logits, mask, per_image):
    cfg = LossConfig(ce=0.0, lovasz=1.0, lovasz_per_image=per_image)
    got = run_task(cfg, task, logits, mask)["lovasz"]  # computed in float32 (smp's torch.dot)
    assert got == approx(ref_hinge(logits, mask, per_image), abs=1e-6)


def test_binary_lovasz_per_image_with_a_void_image():
    mask = BIN_MASK.copy()
    mask[1] = IGNORE
    cfg = LossConfig(ce=0.0, lovasz=1.0, lovasz_per_image=True)
    expected = ref_hinge(BIN_LOGITS[:1], mask[:1]) / 2  # the void image scores 0 over B=2
    assert expected > 0
    assert run_task(cfg, "binary", BIN_LOGITS, mask)["lovasz"] == approx(expected, abs=1e-6)


@pytest.mark.parametrize("task, logits, mask", CASES)
def test_sigmoid_weighted_sum(task, logits, mask):
    out = run_task(SIG_ALL, task, logits, mask)
    assert set(out) == {"loss", "ce", "dice", "focal", "lovasz"}
    expected = (
        ref_bce(logits, mask, task)
        + 0.5 * ref_sigmoid_dice(logits, mask)
        + 0.25 * ref_sigmoid_focal(logits, mask)
        + 0.75 * ref_hinge(logits, mask)
    )
    assert out["loss"] == approx(expected, abs=1e-6)


@pytest.mark.parametrize("task, logits, mask", CASES)
@pytest.mark.parametrize("per_image", [False, True])
def test_sigmoid_ignored_entries_change_nothing(task, logits, mask, per_image):
    cfg = LossConfig(ce=1.0, dice=0.5, focal=0.25, lovasz=0.75, lovasz_per_image=per_image)
    cfg_w = LossConfig(ce=1.0, class_weights=(0.3, 2.0) if task == "binary" else (1, 2, 3))

    def loss_and_grad(config, x):
        x = torch.tensor(x, requires_grad=True)
        out = build_loss(config, NUM[task], IGNORE, task).double()(x, torch.tensor(mask))
        out["loss"].backward()
        return {k: v.item() for k, v in out.items()}, x.grad

    full = mask[:, None] if task == "binary" else mask
    ignored = np.broadcast_to(full == IGNORE, logits.shape)
    perturbed = logits.copy()
    noise = np.random.default_rng(0).normal(0, 50, ignored.sum())
    noise[:2] = [np.inf, -np.inf]  # not even infinite logits leak into values or gradients
    perturbed[ignored] = noise
    for config in (cfg, cfg_w):
        (a, grad_a), (b, grad_b) = loss_and_grad(config, logits), loss_and_grad(config, perturbed)
        assert all(math.isfinite(v) for v in b.values())
        assert a == pytest.approx(b, rel=1e-6, abs=1e-6)
        ign = torch.tensor(ignored)
        assert torch.all(grad_a[ign] == 0) and torch.all(grad_b[ign] == 0)
        assert torch.all(grad_a[~ign] != 0) and torch.isfinite(grad_b).all()


@pytest.mark.parametrize("task", ["binary", "multilabel"])
@pytest.mark.parametrize("per_image", [False, True])
def test_sigmoid_all_ignored_batch_gives_zero_with_gradients(task, per_image):
    cfg = LossConfig(ce=1.0, dice=0.5, focal=0.25, lovasz=0.75, lovasz_per_image=per_image)
    shape = (2, 1, 2, 3) if task == "binary" else (2, 3, 2, 3)
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    mask = torch.full((2, 2, 3) if task == "binary" else shape, IGNORE)
    out = build_loss(cfg, NUM[task], IGNORE, task).double()(x, mask)
    assert set(out) == {"loss", "ce", "dice", "focal", "lovasz"}
    assert all(v.item() == 0 and v.shape == () for v in out.values())
    out["loss"].backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_task_multiclass_is_the_default():
    explicit = build_loss(ALL, 3, IGNORE, task="multiclass").double()
    out = explicit(torch.tensor(LOGITS), torch.tensor(MASK))
    assert {k: v.item() for k, v in out.items()} == approx(run(ALL))
    assert explicit.task == "multiclass" and build_loss(ALL, 3).task == "multiclass"


# ----------------------------------------------------------------- task validation
@pytest.mark.parametrize(
    "task, num_classes, kwargs, ignore, match",
    [
        ("multilable", 3, {}, IGNORE, "task: must be one of.*did you mean 'multilabel'"),
        ("binary", 3, {}, IGNORE, "num_classes: the binary task has 2 classes"),
        ("binary", 1, {}, IGNORE, "num_classes: the binary task has 2 classes"),
        ("multilabel", 0, {}, IGNORE, "num_classes: the multilabel task needs at least 1"),
        ("binary", 2, {}, 1, "ignore_index: 1 is a label value of the binary task"),
        ("multilabel", 3, {}, 0, "ignore_index: 0 is a label value of the multilabel task"),
        ("binary", 2, {"class_weights": [1, 2, 3]}, IGNORE, r"3 entries.*\[background, fore"),
        ("multilabel", 3, {"class_weights": [1, 2]}, IGNORE, "2 entries but num_classes is 3"),
    ],
)
def test_invalid_task_config(task, num_classes, kwargs, ignore, match):
    with pytest.raises(ValueError, match=match):
        build_loss(LossConfig(**kwargs), num_classes, ignore_index=ignore, task=task)


BAD_ML = torch.full((1, 3, 2, 3), IGNORE)
BAD_ML[0, 0, 0, 0], BAD_ML[0, 2, 1, 1] = -1, 2


@pytest.mark.parametrize(
    "task, logits_shape, mask, match",
    [
        ("binary", (1, 2, 2, 3), torch.zeros(1, 2, 3), "binary task: logits have 2 channels but"),
        ("binary", (1, 1, 2, 3), torch.zeros(1, 1, 2, 3), r"binary task: expected.*mask \(B, H"),
        ("binary", (1, 2, 3), torch.zeros(1, 2, 3), r"binary task: expected logits \(B, 1, H"),
        ("multilabel", (1, 4, 2, 3), torch.zeros(1, 4, 2, 3), "4 channels but need num_classes=3"),
        ("multilabel", (1, 3, 2, 3), torch.zeros(1, 2, 3), r"expected.*\(B, L, H, W\), got"),
        (
            "binary",
            (1, 1, 2, 3),
            torch.tensor([[[0, 2, IGNORE], [-1, 7, 1]]]),
            r"binary task: mask has values \[-1, 2, 7\] that are neither 0, 1 nor ignore_index=255",
        ),
        ("multilabel", (1, 3, 2, 3), BAD_ML, r"multilabel task: mask has values \[-1, 2\] that"),
        ("binary", (1, 1, 2, 3), torch.tensor([[[0, 2, 1], [1, 1, 0]]]), r"values \[2\] that"),
        ("multilabel", (1, 3, 2, 3), BAD_ML.clamp(min=0), r"values \[2\] that are neither"),
    ],
)
def test_invalid_sigmoid_inputs(task, logits_shape, mask, match):
    loss_fn = build_loss(SIG_ALL, NUM[task], IGNORE, task)
    with pytest.raises(ValueError, match=match):
        loss_fn(torch.zeros(logits_shape), mask.long())


@pytest.mark.parametrize("task", ["binary", "multilabel"])
def test_sigmoid_mask_must_be_long(task):
    logits = torch.zeros(1, 1 if task == "binary" else 3, 2, 3)
    mask = torch.zeros(logits.shape[:1] + logits.shape[2:] if task == "binary" else logits.shape)
    with pytest.raises(ValueError, match="mask must be torch.long"):
        build_loss(SIG_ALL, NUM[task], IGNORE, task)(logits, mask.to(torch.uint8))


@pytest.mark.parametrize("task", ["binary", "multilabel"])
def test_sigmoid_half_precision_is_scored_in_float32(task):
    # 160000 entries of BCE log 2 sum past float16's 65504: summed in float16 this gave NaN
    shape = (1, 1, 400, 400)
    x = torch.zeros(shape, dtype=torch.float16, requires_grad=True)
    mask = torch.ones(shape if task == "multilabel" else (1, 400, 400), dtype=torch.long)
    out = build_loss(SIG_ALL, 2 if task == "binary" else 1, IGNORE, task)(x, mask)
    assert out["ce"].dtype == torch.float32
    assert out["ce"].item() == approx(math.log(2))
    assert out["focal"].item() == approx(0.25 * math.log(2))  # (1 - 1/2)^2 log 2
    assert out["dice"].item() == approx(1 - 1 / 1.5)  # 1 - 2 * 0.5 / (0.5 + 1) per entry
    out["loss"].backward()
    assert x.grad.dtype == torch.float16 and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("gamma, alpha", [(2.0, None), (1.5, 0.25)])
def test_binary_focal_matches_smp_binary_focal(gamma, alpha):
    # the masked focal replaces smp's binary FocalLoss (which syncs to drop ignored pixels and
    # gives NaN on an all-ignored batch) with the same value where smp's is defined
    from segmentation_models_pytorch.losses import FocalLoss

    smp_focal = FocalLoss("binary", alpha=alpha, gamma=gamma, ignore_index=IGNORE)
    expected = smp_focal(torch.tensor(BIN_LOGITS), torch.tensor(BIN_MASK)).item()
    cfg = LossConfig(ce=0.0, focal=1.0, focal_gamma=gamma, focal_alpha=alpha)
    assert run_task(cfg, "binary", BIN_LOGITS, BIN_MASK)["focal"] == approx(expected)
