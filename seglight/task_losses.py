"""Loss terms and input checks for the sigmoid tasks, "binary" and "multilabel".

Both tasks score one sigmoid logit per entry: binary has logits (B, 1, H, W) and a mask (B, H, W)
(SegmentationLoss adds the channel axis and builds the terms), multilabel logits and a mask both
(B, L, H, W). Every term here takes logits and a target of the same shape, 0/1 where labelled and
`ignore_index` elsewhere; ignored entries contribute neither value nor gradient.

What smp 0.6.0 does with ignore_index in these modes (read from its source, checked by the tests):
- DiceLoss: multiplies the probabilities and the target by the labelled mask before its sums, so
  ignored entries are dropped (binary and multilabel). Used as it is. A label with no labelled
  positive scores 0 but still counts in the mean over labels (as in multiclass).
- FocalLoss: binary mode drops ignored pixels by boolean indexing (a host sync, and NaN when none
  is labelled); multilabel mode indexes each (B, H, W) label slice with the (B, L, H, W) mask and
  raises IndexError whenever ignore_index is set. So MaskedFocal replaces both, computing smp's
  own elementwise focal_loss_with_logits on masked entries.
- LovaszLoss: binary and multilabel run the same Lovasz hinge, which drops ignored entries and
  scores an image with none labelled as 0 (per_image averages over all B images). Multilabel
  pools all labels into one Jaccard surrogate (smp's definition, kept). It crashes in torch.dot
  for non-float32 logits, so LovaszHinge runs it in float32.
"""

import torch
import torch.nn.functional as F
from segmentation_models_pytorch.losses import LovaszLoss
from segmentation_models_pytorch.losses._functional import focal_loss_with_logits
from torch import Tensor, nn

TASKS = ("multiclass", "binary", "multilabel")


def _labelled(logits: Tensor, target: Tensor, ignore_index: int) -> tuple[Tensor, Tensor, Tensor]:
    """(labelled mask, logits with ignored entries set to 0, float 0/1 target with 0 there).

    Filling ignored logits with 0 (instead of masking the loss afterwards) keeps an inf logit at
    an ignored pixel from producing NaN gradients, and masked_fill passes no gradient to them.
    """
    valid = target != ignore_index
    z = logits.masked_fill(~valid, 0)
    return valid, z, (target == 1).to(z.dtype)


def _safe_div(num: Tensor, den: Tensor) -> Tensor:
    """num / den, or 0 where den is 0 (no labelled entry); no host sync."""
    return torch.where(den > 0, num, 0) / den.clamp_min(torch.finfo(num.dtype).tiny)


class MaskedBCE(nn.Module):
    """Binary cross-entropy with logits, averaged over labelled entries.

    binary: class_weights (w_bg, w_fg) weight the negative and positive parts of each pixel's BCE
    and the mean divides by the summed weight of each pixel's own class, so the value equals
    nn.CrossEntropyLoss(weight, label_smoothing) on two-channel logits (0, z). Label smoothing
    turns targets into y * (1 - eps) + eps / 2, which is the same two-class equivalence.
    multilabel: class_weights (one per label) weight every entry of that label; same smoothing.
    """

    def __init__(
        self, task: str, class_weights: tuple[float, ...] | None, eps: float, ignore_index: int
    ) -> None:
        super().__init__()
        self.task = task
        self.eps = eps
        self.ignore_index = ignore_index
        w = None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32)
        self.register_buffer("class_weights", w, persistent=False)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        valid, z, t = _labelled(logits, target, self.ignore_index)
        ts = t * (1 - self.eps) + self.eps / 2
        pos, neg = -F.logsigmoid(z), -F.logsigmoid(-z)  # -log p(fg), -log p(bg)
        w = self.class_weights
        if w is None:
            loss, norm = ts * pos + (1 - ts) * neg, valid.to(z.dtype)
        elif self.task == "binary":
            w_bg, w_fg = w.to(z.dtype)
            loss = w_fg * ts * pos + w_bg * (1 - ts) * neg
            norm = (w_fg * t + w_bg * (1 - t)) * valid
        else:
            w_label = w.to(z.dtype).view(1, -1, *[1] * (z.ndim - 2))
            loss = w_label * (ts * pos + (1 - ts) * neg)
            norm = w_label * valid
        return _safe_div(loss.masked_fill(~valid, 0).sum(), norm.sum())


class MaskedFocal(nn.Module):
    """smp's sigmoid focal loss per label, averaged over the label's labelled entries, then over
    the labels that have any (binary: one label, i.e. the mean over labelled pixels, as smp's
    binary FocalLoss). alpha weights positives (foreground), 1 - alpha negatives; None: no alpha.
    """

    def __init__(self, gamma: float, alpha: float | None, ignore_index: int) -> None:
        super().__init__()
        self.gamma = gamma
        self.alpha = alpha
        self.ignore_index = ignore_index

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        valid, z, t = _labelled(logits, target, self.ignore_index)
        loss = focal_loss_with_logits(z, t, gamma=self.gamma, alpha=self.alpha, reduction="none")
        dims = [0, *range(2, z.ndim)]
        count = valid.sum(dims)  # (L,)
        per_label = _safe_div(loss.masked_fill(~valid, 0).sum(dims), count.to(z.dtype))
        present = (count > 0).to(z.dtype)
        return _safe_div((per_label * present).sum(), present.sum())


class LovaszHinge(nn.Module):
    """smp's binary / multilabel LovaszLoss (the same Lovasz hinge), run in float32."""

    def __init__(self, task: str, per_image: bool, ignore_index: int) -> None:
        super().__init__()
        self.lovasz = LovaszLoss(task, per_image=per_image, ignore_index=ignore_index)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        # smp dots the sorted errors with a Jaccard gradient it builds in float32.
        return self.lovasz(logits.float(), target)


def check_sigmoid_inputs(
    task: str, logits: Tensor, mask: Tensor, num_classes: int, ignore_index: int
) -> bool:
    """Raise ValueError on bad shapes or labels for binary / multilabel; return whether any entry
    is labelled. One host sync."""
    if task == "binary":
        shapes = "logits (B, 1, H, W) and mask (B, H, W)"
        channels, mask_shape = 1, (logits.shape[0], *logits.shape[2:])
        what = "1 (the foreground logit; num_classes=2 counts background and foreground)"
    else:
        shapes = "logits (B, L, H, W) and mask (B, L, H, W)"
        channels, mask_shape = num_classes, tuple(logits.shape)
        what = f"num_classes={num_classes} (one per label)"
    if logits.ndim != 4:
        raise ValueError(f"{task} task: expected {shapes}, got {tuple(logits.shape)} logits")
    if logits.shape[1] != channels:
        raise ValueError(f"{task} task: logits have {logits.shape[1]} channels but need {what}")
    if mask.shape != mask_shape:
        raise ValueError(
            f"{task} task: expected {shapes}, got {tuple(logits.shape)} and {tuple(mask.shape)}"
        )
    if mask.dtype != torch.long:
        raise ValueError(f"mask must be torch.long (int64), got {mask.dtype}")
    valid = mask != ignore_index
    lo, hi = torch.aminmax(torch.where(valid, mask, 0))
    lo, hi, any_valid = torch.stack([lo, hi, valid.any().long()]).tolist()
    if lo < 0 or hi > 1:
        values = torch.unique(mask[valid & ((mask < 0) | (mask > 1))]).tolist()
        raise ValueError(
            f"{task} task: mask has values {values[:20]} that are neither 0, 1 "
            f"nor ignore_index={ignore_index}"
        )
    return bool(any_valid)
