"""Segmentation loss: a weighted sum of cross-entropy, Dice, focal and Lovasz terms.

`task` picks the output: "multiclass" (softmax over C classes: logits (B, C, H, W), mask (B, H, W)
of class indices), "binary" (one foreground logit: logits (B, 1, H, W), mask (B, H, W) of 0/1) or
"multilabel" (an independent sigmoid per label: logits and mask (B, L, H, W) of 0/1). In every
mask `ignore_index` marks unlabelled entries; they contribute neither to the value nor to the
gradient of any term. The binary / multilabel terms live in seglight.task_losses.
"""

import math
from dataclasses import dataclass

import torch
from segmentation_models_pytorch.losses import DiceLoss, FocalLoss, LovaszLoss
from torch import Tensor, nn

from seglight.errors import ConfigError, did_you_mean
from seglight.task_losses import TASKS, LovaszHinge, MaskedBCE, MaskedFocal, check_sigmoid_inputs

TERMS = ("ce", "dice", "focal", "lovasz")


@dataclass(frozen=True)
class LossConfig:
    """Weighted sum of segmentation losses, written in YAML as e.g. `loss: {ce: 1.0, dice: 0.5}`.

    Args:
        ce: weight of cross-entropy (binary / multilabel: BCE with logits) (0 disables it)
        dice: weight of Dice loss (0 disables it)
        focal: weight of focal loss (0 disables it)
        lovasz: weight of Lovasz loss, softmax (multiclass) or hinge (binary, multilabel)
        class_weights: per-class weights for cross-entropy (length num_classes), or null;
            binary: [background, foreground]; multilabel: one weight per label
        label_smoothing: cross-entropy label smoothing in [0, 1); binary / multilabel: BCE
            targets y * (1 - eps) + eps / 2 (binary: the same as 2-class CE smoothing)
        focal_gamma: focusing exponent of the focal loss (>= 0; 0 gives plain per-class BCE)
        focal_alpha: focal weight of positives in [0, 1] (negatives get 1 - alpha), or null;
            binary: the weight of foreground pixels, multilabel: of an entry's positives
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


def _check_task(task: str, num_classes: int, ignore_index: int) -> None:
    if task not in TASKS:
        raise ConfigError(
            f"task: must be one of {', '.join(TASKS)}, got {task!r}{did_you_mean(str(task), TASKS)}"
        )
    if task == "multiclass" and num_classes < 2:
        raise ConfigError(f"num_classes: multiclass losses need at least 2, got {num_classes}")
    if task == "binary" and num_classes != 2:
        raise ConfigError(
            f"num_classes: the binary task has 2 classes (background, foreground) and one logit "
            f"channel, got {num_classes}"
        )
    if task == "multilabel" and num_classes < 1:
        raise ConfigError(
            f"num_classes: the multilabel task needs at least 1 label, got {num_classes}"
        )
    if task != "multiclass" and ignore_index in (0, 1):
        raise ConfigError(
            f"ignore_index: {ignore_index} is a label value of the {task} task; use e.g. 255"
        )


class SegmentationLoss(nn.Module):
    """Weighted sum of the terms of a LossConfig whose weight is non-zero.

    forward(logits, mask) returns {"loss": weighted total (scalar), <term>: unweighted term
    (scalar) for each active term}; shapes per task in the module docstring. num_classes is C for
    multiclass, 2 for binary (background, foreground; the logits have 1 channel), L for
    multilabel. Terms: ce (softmax CE / BCE), dice, focal, lovasz (softmax / hinge).
    """

    def __init__(
        self,
        config: LossConfig,
        num_classes: int,
        ignore_index: int = 255,
        task: str = "multiclass",
    ) -> None:
        super().__init__()
        _check_task(task, num_classes, ignore_index)
        cw = config.class_weights
        if cw is not None and len(cw) != num_classes:
            raise ConfigError(
                f"loss.class_weights: has {len(cw)} entries but num_classes is {num_classes}"
                + (" (binary: [background, foreground])" if task == "binary" else "")
            )
        self.task = task
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.weights = {name: getattr(config, name) for name in TERMS if getattr(config, name)}
        if task != "multiclass":
            # binary / multilabel: smp's Dice drops ignored entries itself; the others are
            # wrapped or replaced (why: seglight.task_losses).
            sigmoid = {
                "ce": lambda: MaskedBCE(task, cw, config.label_smoothing, ignore_index),
                "dice": lambda: DiceLoss(
                    task, from_logits=True, smooth=config.dice_smooth, ignore_index=ignore_index
                ),
                "focal": lambda: MaskedFocal(config.focal_gamma, config.focal_alpha, ignore_index),
                "lovasz": lambda: LovaszHinge(task, config.lovasz_per_image, ignore_index),
            }
            self.terms = nn.ModuleDict({name: sigmoid[name]() for name in self.weights})
            return
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
        if self.task != "multiclass":
            return check_sigmoid_inputs(
                self.task, logits, mask, self.num_classes, self.ignore_index
            )
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
        if self.task != "multiclass":
            # fp16 sums over all pixels overflow (65504 max) into NaN: score half precision in fp32.
            logits = logits.float() if logits.element_size() < 4 else logits
            mask = mask[:, None] if self.task == "binary" else mask  # binary: (B, 1, H, W)
        parts = {name: term(logits, mask) for name, term in self.terms.items()}
        total = sum(self.weights[name] * value for name, value in parts.items())
        return {"loss": total, **parts}


def build_loss(
    config: LossConfig, num_classes: int, ignore_index: int = 255, task: str = "multiclass"
) -> SegmentationLoss:
    """The SegmentationLoss for `config` and `task` (multiclass, binary or multilabel); raises
    ValueError (ConfigError) on invalid settings."""
    return SegmentationLoss(config, num_classes, ignore_index, task)
