"""Segmentation loss: a weighted sum of cross-entropy, Dice, focal and Lovasz-softmax terms.

Every term takes logits (B, C, H, W) and an integer mask (B, H, W) in which `ignore_index` marks
unlabelled pixels; those pixels contribute neither to the value nor to the gradient of any term.
"""

import math
from dataclasses import dataclass

import torch
from segmentation_models_pytorch.losses import DiceLoss, FocalLoss, LovaszLoss
from torch import Tensor, nn

from seglight.errors import ConfigError

TERMS = ("ce", "dice", "focal", "lovasz")


@dataclass(frozen=True)
class LossConfig:
    """Weighted sum of segmentation losses, written in YAML as e.g. `loss: {ce: 1.0, dice: 0.5}`.

    Args:
        ce: weight of cross-entropy (0 disables it)
        dice: weight of Dice loss (0 disables it)
        focal: weight of focal loss (0 disables it)
        lovasz: weight of Lovasz-softmax loss (0 disables it)
        class_weights: per-class weights for cross-entropy (length num_classes), or null
        label_smoothing: cross-entropy label smoothing in [0, 1)
        focal_gamma: focusing exponent of the focal loss (>= 0; 0 gives plain per-class BCE)
        focal_alpha: focal weight of positives in [0, 1] (negatives get 1 - alpha), or null
        dice_smooth: additive smoothing of the Dice numerator and denominator (>= 0)
        lovasz_per_image: average Lovasz over images instead of computing it on the whole batch
    """

    ce: float = 1.0
    dice: float = 0.0
    focal: float = 0.0
    lovasz: float = 0.0
    class_weights: tuple[float, ...] | None = None
    label_smoothing: float = 0.0
    focal_gamma: float = 2.0
    focal_alpha: float | None = None
    dice_smooth: float = 0.0
    lovasz_per_image: bool = False

    def __post_init__(self) -> None:
        # Python callers may pass a list; store a tuple so the frozen config stays hashable.
        if self.class_weights is not None:
            object.__setattr__(self, "class_weights", tuple(float(w) for w in self.class_weights))
        for name in TERMS:
            w = getattr(self, name)
            if not (math.isfinite(w) and w >= 0):
                raise ConfigError(f"loss.{name}: weight must be a finite number >= 0, got {w}")
        if all(getattr(self, name) == 0 for name in TERMS):
            raise ConfigError(f"loss: all weights ({', '.join(TERMS)}) are 0; make one positive")
        if self.class_weights is not None and (
            not all(math.isfinite(w) and w >= 0 for w in self.class_weights)
            or sum(self.class_weights) == 0
        ):
            raise ConfigError(
                f"loss.class_weights: must be finite, >= 0 and not all 0, got {self.class_weights}"
            )
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(
                f"loss.label_smoothing: must be in [0, 1), got {self.label_smoothing}"
            )
        if not self.focal_gamma >= 0:
            raise ConfigError(f"loss.focal_gamma: must be >= 0, got {self.focal_gamma}")
        if self.focal_alpha is not None and not 0 <= self.focal_alpha <= 1:
            raise ConfigError(
                f"loss.focal_alpha: must be in [0, 1] or null, got {self.focal_alpha}"
            )
        if not self.dice_smooth >= 0:
            raise ConfigError(f"loss.dice_smooth: must be >= 0, got {self.dice_smooth}")


def _zero(logits: Tensor) -> Tensor:
    # A sum over no elements: an exact 0 that stays in the autograd graph (all-zero gradients);
    # unlike `logits.sum() * 0` it cannot turn inf logits into NaN.
    return logits.flatten()[:0].sum()


class _Lovasz(nn.Module):
    """smp's multiclass LovaszLoss, made safe for images with no labelled pixel.

    For an empty pixel set smp (like Berman's reference code) returns `probas * 0.0`, which is an
    empty (0, C) tensor rather than a scalar: with per_image=True one all-ignored image makes the
    batch loss an empty tensor or crashes on broadcasting (smp 0.6.0). So for per_image we loop
    over images ourselves and score a void image as 0 - what the reference meant ("only void
    pixels, the gradients should be 0") - still dividing by all B images as upstream does.
    The all-ignored batch (the per_image=False case) is handled once in SegmentationLoss.
    """

    def __init__(self, per_image: bool, ignore_index: int) -> None:
        super().__init__()
        self.per_image = per_image
        self.ignore_index = ignore_index
        # smp softmaxes over C, drops ignored pixels, then averages over classes present.
        self.lovasz = LovaszLoss("multiclass", per_image=False, ignore_index=ignore_index)

    def forward(self, logits: Tensor, mask: Tensor) -> Tensor:
        # smp dots the sorted errors with a Jaccard gradient it always builds in float32, so any
        # other dtype (fp16/bf16-true training, float64) crashes in torch.dot: run it in float32.
        logits = logits.float()
        if not self.per_image:
            return self.lovasz(logits, mask)
        labelled = (mask != self.ignore_index).flatten(1).any(1).tolist()  # (B,), one sync
        losses = [
            self.lovasz(lg[None], m[None]) if ok else _zero(lg)
            for lg, m, ok in zip(logits, mask, labelled, strict=True)
        ]
        return torch.stack(losses).mean()


class SegmentationLoss(nn.Module):
    """Weighted sum of the terms of a LossConfig whose weight is non-zero.

    forward(logits (B, C, H, W) float, mask (B, H, W) long, ignore_index where unlabelled) returns
    {"loss": weighted total (scalar), <term>: unweighted term (scalar) for each active term}.
    """

    def __init__(self, config: LossConfig, num_classes: int, ignore_index: int = 255) -> None:
        super().__init__()
        if num_classes < 2:
            raise ConfigError(f"num_classes: multiclass losses need at least 2, got {num_classes}")
        cw = config.class_weights
        if cw is not None and len(cw) != num_classes:
            raise ConfigError(
                f"loss.class_weights: has {len(cw)} entries but num_classes is {num_classes}"
            )
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.weights = {name: getattr(config, name) for name in TERMS if getattr(config, name)}
        # What smp computes with ignore_index (checked against smp 0.6.0 source):
        # - Dice zeroes ignored pixels in both softmax and one-hot target (one_hot runs on
        #   mask * valid, so 255 cannot crash it); sums over batch and pixels per class; a class
        #   absent from the labelled target scores 0 but still counts in the mean over C.
        # - Focal in multiclass mode is one-vs-rest *sigmoid* focal on each channel's logit,
        #   averaged over labelled pixels, then over classes. Both are used as they are.
        # - Lovasz drops ignored pixels correctly but mishandles empty pixel sets (see _Lovasz).
        # - CE and focal return NaN (0/0 means) when every pixel is ignored; forward handles that.
        builders = {
            "ce": lambda: nn.CrossEntropyLoss(
                weight=None if cw is None else torch.tensor(cw, dtype=torch.float32),
                ignore_index=ignore_index,
                label_smoothing=config.label_smoothing,
            ),
            "dice": lambda: DiceLoss(
                "multiclass", from_logits=True, smooth=config.dice_smooth, ignore_index=ignore_index
            ),
            "focal": lambda: FocalLoss(
                "multiclass",
                alpha=config.focal_alpha,
                gamma=config.focal_gamma,
                ignore_index=ignore_index,
            ),
            "lovasz": lambda: _Lovasz(config.lovasz_per_image, ignore_index),
        }
        self.terms = nn.ModuleDict({name: builders[name]() for name in self.weights})

    def _check(self, logits: Tensor, mask: Tensor) -> bool:
        """Raise ValueError on bad shapes or labels; return whether any pixel is labelled."""
        if logits.ndim != 4 or mask.shape != (logits.shape[0], *logits.shape[2:]):
            raise ValueError(
                f"expected logits (B, C, H, W) and mask (B, H, W), "
                f"got {tuple(logits.shape)} and {tuple(mask.shape)}"
            )
        if logits.shape[1] != self.num_classes:
            raise ValueError(
                f"logits have {logits.shape[1]} channels but num_classes is {self.num_classes}"
            )
        if mask.dtype != torch.long:
            raise ValueError(f"mask must be torch.long (int64), got {mask.dtype}")
        valid = mask != self.ignore_index  # (B, H, W)
        # One min/max reduction and a single host sync per batch; torch.unique only when failing.
        lo, hi = torch.aminmax(torch.where(valid, mask, 0))
        lo, hi, any_valid = torch.stack([lo, hi, valid.any().long()]).tolist()
        if lo < 0 or hi >= self.num_classes:
            bad = valid & ((mask < 0) | (mask >= self.num_classes))
            values = torch.unique(mask[bad]).tolist()
            raise ValueError(
                f"mask has values {values[:20]} that are neither a class in "
                f"[0, {self.num_classes}) nor ignore_index={self.ignore_index}"
            )
        return bool(any_valid)

    def forward(self, logits: Tensor, mask: Tensor) -> dict[str, Tensor]:
        if not self._check(logits, mask):
            # Nothing labelled (e.g. a crop of void): every term is an exact 0 with zero
            # gradients instead of CE's / focal's NaN and Lovasz's empty tensor.
            zero = _zero(logits)
            return {"loss": zero, **{name: zero for name in self.terms}}
        parts = {name: term(logits, mask) for name, term in self.terms.items()}
        total = sum(self.weights[name] * value for name, value in parts.items())
        return {"loss": total, **parts}


def build_loss(config: LossConfig, num_classes: int, ignore_index: int = 255) -> SegmentationLoss:
    """The SegmentationLoss for `config`; raises ValueError (ConfigError) on invalid settings."""
    return SegmentationLoss(config, num_classes, ignore_index)
