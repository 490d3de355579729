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
