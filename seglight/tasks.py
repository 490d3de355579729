"""What the task (`data.task`, linked into the model) decides, in one place: the logit channels,
how logits become masks and metric inputs, which metrics count, and what is logged.

    multiclass: one logit per class, softmax; masks are the argmax.
    binary:     one foreground logit, sigmoid; foreground where sigmoid >= threshold.
    multilabel: one logit per label, independent sigmoids; masks (B, L, H, W) of 0/1 per label.

SegmentationModule asks its spec; a new task is a new spec here. Every spec's `result` holds
`per_class` (C,) tensors per class/label, "pixels" (C,) ground-truth pixels per class (label:
its positive pixels) and "counted" (labelled entries of the split: 0 means nothing was labelled).
"""

from typing import Literal

import torch
from torchmetrics import Metric

from seglight.errors import ConfigError
from seglight.metrics import (
    BinarySegmentationMetrics,
    MultilabelSegmentationMetrics,
    SegmentationMetrics,
    class_view,
)

Task = Literal["multiclass", "binary", "multilabel"]
TASKS = ("multiclass", "binary", "multilabel")


class MulticlassSpec:
    """Softmax over num_classes logits; logged: mIoU, mAcc, pixel_acc (+ per class)."""

    activation = "softmax"
    headline = "mIoU"
    logged = ("pixel_acc", "mAcc")
    per_class = ("IoU", "acc")  # logged as <stage>/<name>/<class>, the columns of the tables
    multilabel = False  # masks are (B, H, W) class indices, not (B, L, H, W) 0/1 per label

    def __init__(self, num_classes: int, ignore_index: int, threshold: float) -> None:
        self.num_classes, self.ignore_index, self.threshold = num_classes, ignore_index, threshold
        self.out_channels = num_classes  # logit channels of the network

    def masks(self, logits: torch.Tensor) -> torch.Tensor:
        """Class indices (B, H, W) int64 from logits (B, K, H, W)."""
        return logits.argmax(1)

    def metric_inputs(self, logits: torch.Tensor) -> torch.Tensor:
        """What the metrics count from logits (B, K, H, W)."""
        return logits.argmax(1)

    def masks_of_inputs(self, inputs: torch.Tensor) -> torch.Tensor:
        """`masks` from what metric_inputs gave, without going back to the logits."""
        return inputs

    def metrics(self) -> Metric:
        return SegmentationMetrics(self.num_classes, self.ignore_index)

    def image_score(self, inputs: torch.Tensor, mask: torch.Tensor) -> float:
        """One image's `headline` for the per-image report: metric inputs and mask of a batch
        of 1, e.g. (1, H, W); the mean IoU over the classes in its truth or prediction (NaN
        when it has no labelled pixel). One host sync."""
        keep = mask != self.ignore_index
        k = self.num_classes
        counts = torch.bincount(mask[keep] * k + inputs[keep], minlength=k * k).view(k, k)
        return _mean_iou(
            counts.diag(), counts.sum(0) - counts.diag(), counts.sum(1) - counts.diag()
        )

    def result(self, computed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The metric's computed dict as tables and reports read it (per-class IoU/acc,
        confmat, means, pixels, counted), plus the task's own numbers."""
        return _with_counts(computed)


class BinarySpec(MulticlassSpec):
    """One foreground logit, sigmoid >= threshold; logged: fg_IoU, fg_dice, fg_precision,
    fg_recall, mIoU_2class (the mean over both classes), pixel_acc, mAcc (+ per class)."""

    activation = "sigmoid"
    headline = "fg_IoU"
    logged = ("fg_dice", "fg_precision", "fg_recall", "mIoU_2class", "pixel_acc", "mAcc")

    def __init__(self, num_classes: int, ignore_index: int, threshold: float) -> None:
        super().__init__(num_classes, ignore_index, threshold)
        self.out_channels = 1

    def masks(self, logits: torch.Tensor) -> torch.Tensor:
        return (logits[:, 0].float().sigmoid() >= self.threshold).long()  # (B, H, W), 1 = fg

    def metric_inputs(self, logits: torch.Tensor) -> torch.Tensor:
        return logits[:, 0].float().sigmoid()  # (B, H, W) foreground probability

    def masks_of_inputs(self, inputs: torch.Tensor) -> torch.Tensor:
        return (inputs >= self.threshold).long()  # probabilities -> 0/1, as `masks`

    def metrics(self) -> Metric:
        return BinarySegmentationMetrics(self.threshold, self.ignore_index)

    def image_score(self, inputs: torch.Tensor, mask: torch.Tensor) -> float:
        """The image's foreground IoU (NaN when neither truth nor prediction has foreground)."""
        keep = mask != self.ignore_index
        pred, truth = inputs[keep] >= self.threshold, mask[keep] == 1
        return _mean_iou(*(torch.stack([(a & b).sum()]) for a, b in
                           ((pred, truth), (pred, ~truth), (~pred, truth))))  # fmt: skip

    def result(self, computed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        result = class_view(computed["confmat"])  # the 2-class view for tables and reports
        result |= {f"fg_{k}": computed[k] for k in ("IoU", "dice", "precision", "recall")}
        result["mIoU_2class"] = computed["mIoU_2class"]
        return _with_counts(result)


class MultilabelSpec(MulticlassSpec):
    """One logit per label, independent sigmoids >= threshold; a pixel may carry several labels
    or none. Logged: mIoU (macro mean of per-label IoU), mF1, IoU_micro, F1_micro, pixel_acc
    (over (pixel, label) entries), and per label IoU, F1, precision, recall."""

    activation = "sigmoid"
    headline = "mIoU"
    logged = ("mF1", "IoU_micro", "F1_micro", "pixel_acc")
    per_class = ("IoU", "F1", "precision", "recall")
    multilabel = True

    def masks(self, logits: torch.Tensor) -> torch.Tensor:
        return (logits.float().sigmoid() >= self.threshold).long()  # (B, L, H, W) 0/1

    def metric_inputs(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.float().sigmoid()  # (B, L, H, W) per-label probabilities

    def masks_of_inputs(self, inputs: torch.Tensor) -> torch.Tensor:
        return (inputs >= self.threshold).long()

    def metrics(self) -> Metric:
        return MultilabelSegmentationMetrics(self.num_classes, self.threshold, self.ignore_index)

    def image_score(self, inputs: torch.Tensor, mask: torch.Tensor) -> float:
        """The image's mean IoU over the labels in its truth or prediction."""
        keep = mask != self.ignore_index  # (1, L, H, W)
        pred, truth = (inputs >= self.threshold) & keep, (mask == 1) & keep
        dims = (0, 2, 3)
        return _mean_iou((pred & truth).sum(dims), (pred & ~truth).sum(dims),
                         (~pred & truth).sum(dims))  # fmt: skip

    def result(self, computed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        counts = computed["counts"]  # (L, 4) [tp, fp, fn, tn]
        return computed | {"pixels": counts[:, 0] + counts[:, 2], "counted": counts.sum()}


def _mean_iou(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> float:
    """Mean of tp / (tp + fp + fn) over the entries where that is defined; NaN if none is."""
    union = (tp + fp + fn).double()
    defined = union > 0
    if not bool(defined.any()):
        return float("nan")
    return float((tp.double()[defined] / union[defined]).mean())


def _with_counts(result: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`result` plus "pixels" (C,) ground-truth pixels per class and "counted" from its
    confusion matrix (rows = ground truth)."""
    confmat = result["confmat"]
    return result | {"pixels": confmat.sum(1), "counted": confmat.sum()}


def task_spec(
    task: str, num_classes: int, ignore_index: int, threshold: float, class_names: list[str]
) -> MulticlassSpec:
    """The spec of `task`, its arguments checked (one-line ConfigErrors)."""
    if task not in TASKS:
        raise ConfigError(f"model.task: expected one of {', '.join(TASKS)}, got {task!r}")
    if task == "multilabel" and num_classes < 1:
        raise ConfigError(f"data.task: multilabel needs at least one label, got {class_names}")
    if task == "binary" and num_classes != 2:
        raise ConfigError(
            f"data.task: binary segmentation has 2 classes (background, foreground), got "
            f"{num_classes}: {class_names}; list exactly two, e.g. classes: [background, crack]"
        )
    if not 0.0 < threshold < 1.0:
        raise ConfigError(f"model.threshold: must be in (0, 1), got {threshold}")
    spec = {"binary": BinarySpec, "multilabel": MultilabelSpec}.get(task, MulticlassSpec)
    return spec(num_classes, ignore_index, float(threshold))
