"""Segmentation metrics from one confusion matrix over the whole split, as official evaluators do.

IoU_c = TP / (TP + FP + FN) per class; mIoU = mean over classes whose union is non-empty;
pixel_acc = trace / total; mAcc = mean over classes present in the ground truth of TP / (TP + FN).
Ignore pixels are dropped before counting. The reduction of IoU is torchmetrics' own
(MulticlassJaccardIndex.compute); only the counting is replaced, see `update`.

`BinarySegmentationMetrics` (one sigmoid foreground channel) and `MultilabelSegmentationMetrics`
(L independent sigmoid channels) count tp / fp / fn / tn the same way: integer counts over the
whole split, exact under DDP, undefined values (0 / 0) NaN, never 0.
"""

import torch
from torchmetrics import Metric
from torchmetrics.classification import MulticlassJaccardIndex


class SegmentationMetrics(MulticlassJaccardIndex):
    """torchmetrics' multiclass Jaccard index whose confusion matrix also yields the accuracies.

    State: `confmat` (C, C) int64, rows = ground truth, columns = prediction, summed across
    processes by torchmetrics under DDP.

    Args:
        num_classes: number of classes C.
        ignore_index: mask value whose pixels are not counted.
    """

    full_state_update = False

    def __init__(self, num_classes: int, ignore_index: int | None = 255) -> None:
        super().__init__(
            num_classes=num_classes, average="none", ignore_index=ignore_index, validate_args=False
        )

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Count pixels. preds: (B, H, W) class indices in [0, C) (an argmax over C logits);
        target: (B, H, W) class indices or ignore_index.

        Replaces torchmetrics' counting, which under `torch.use_deterministic_algorithms(True)`
        (Trainer(deterministic=True)) swaps torch.bincount for an (N pixels x C^2) int64 mesh:
        gigabytes for one 512x512 batch. torch.bincount on integer data without weights is
        exact, hence deterministic, on CPU and CUDA (torch only flags CUDA bincount with
        float weights), so it is used directly. Labels outside [0, C) that are not ignore_index
        raise a one-line ValueError.
        """
        c = self.num_classes
        # Cell of each pixel in a (C, C + 1) table: row = target, column = prediction; column C
        # (which no argmax reaches) collects the ignored pixels, dropped below.
        target, preds = target.reshape(-1).long(), preds.reshape(-1).long()  # (N,), (N,)
        index = target * (c + 1) + preds
        if self.ignore_index is not None:
            index = torch.where(target == self.ignore_index, c, index)
        # The label check rides on bincount, which sizes its output from the data anyway: no
        # extra reduction or host sync. A target >= C lands beyond the table, a negative one
        # below 0, which bincount refuses.
        try:
            counts = torch.bincount(index, minlength=c * (c + 1))
        except RuntimeError:
            counts = None
        if counts is None or counts.numel() > c * (c + 1):
            raise self._label_error(target)
        self.confmat += counts.reshape(c, c + 1)[:, :c]

    def _label_error(self, target: torch.Tensor) -> ValueError:
        """The one-line error for labels outside [0, C) that are not ignore_index."""
        c = self.num_classes
        values = target[target != self.ignore_index] if self.ignore_index is not None else target
        bad = values[(values < 0) | (values >= c)].unique()[:10].tolist()
        return ValueError(
            f"label values {bad} are outside [0, {c}) and are not ignore_index "
            f"({self.ignore_index}): the dataset's num_classes or ignore_index is wrong"
        )

    def compute(self) -> dict[str, torch.Tensor]:
        """{"mIoU", "pixel_acc", "mAcc": scalars; "IoU", "acc": (C,) per class, NaN if absent;
        "confmat": (C, C) counts, rows = ground truth}."""
        # No labelled pixel at all (an unlabelled split): every value is undefined, NaN — never
        # a 0 that reads like a result. (class_view: the same numbers from any matrix.)
        return class_view(self.confmat)


class _ThresholdedCounts(Metric):
    """tp / fp / fn / tn of thresholded probabilities against 0/1 masks, ignore pixels dropped.

    States `tp`, `fp`, `fn`, `tn`: int64 of shape `shape`, summed across processes (exact).
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def __init__(self, shape: tuple[int, ...], threshold: float, ignore_index: int | None) -> None:
        super().__init__()
        if ignore_index in (0, 1):
            raise ValueError(f"ignore_index {ignore_index} would drop a class: use e.g. 255")
        self.threshold = float(threshold)
        self.ignore_index = ignore_index
        for name in ("tp", "fp", "fn", "tn"):
            self.add_state(name, torch.zeros(shape, dtype=torch.long), dist_reduce_fx="sum")

    def _count(self, probs: torch.Tensor, target: torch.Tensor, num_labels: int) -> None:
        """Add the pixels of probs / target (same shape; label l along dim 1 when multilabel).

        Each (pixel, label) entry is a cell (t * 3 + p) * L + l of a (2, 3, L) table: row =
        target, column = prediction, column 2 (which no prediction reaches) = ignored, dropped.
        One torch.bincount counts them all; the label check rides on it as in SegmentationMetrics:
        a target >= 2 lands beyond the table, a negative one below 0 (refused by bincount).
        """
        if probs.shape != target.shape:
            raise ValueError(f"probs {tuple(probs.shape)} and target {tuple(target.shape)} differ")
        n = 6 * num_labels
        label = 0
        if num_labels > 1:  # multilabel: the (1, L, 1, 1) label of each entry
            label = torch.arange(num_labels, device=target.device)
            label = label.view(1, num_labels, *([1] * (target.ndim - 2)))
        target = target.long()
        index = (target * 3 + (probs >= self.threshold).long()) * num_labels + label  # as target
        if self.ignore_index is not None:
            index = torch.where(target == self.ignore_index, 2 * num_labels + label, index)
        try:  # clamp: a huge bad label costs one extra bin, not a huge table
            counts = torch.bincount(index.reshape(-1).clamp(max=n), minlength=n)
        except RuntimeError as err:  # a negative label
            raise self._label_error(target) from err
        if counts.numel() > n:
            raise self._label_error(target)
        cells = counts.reshape(2, 3, num_labels)  # (target, prediction or ignored, L)
        self.tn += cells[0, 0].view_as(self.tn)
        self.fp += cells[0, 1].view_as(self.fp)
        self.fn += cells[1, 0].view_as(self.fn)
        self.tp += cells[1, 1].view_as(self.tp)

    def _label_error(self, target: torch.Tensor) -> ValueError:
        """The one-line error for labels outside {0, 1} that are not ignore_index."""
        bad = target[(target != 0) & (target != 1)]
        if self.ignore_index is not None:
            bad = bad[bad != self.ignore_index]
        return ValueError(
            f"label values {bad.unique()[:10].tolist()} are outside {{0, 1}} and are not "
            f"ignore_index ({self.ignore_index}): the masks or ignore_index are wrong"
        )


class BinarySegmentationMetrics(_ThresholdedCounts):
    """Foreground-vs-background metrics from one sigmoid channel, over the whole split.

    States `tp`, `fp`, `fn`, `tn`: int64 scalars (foreground = positive), summed across
    processes by torchmetrics under DDP.

    Args:
        threshold: a pixel is predicted foreground where prob >= threshold.
        ignore_index: mask value whose pixels are not counted (None: every pixel counts).
    """

    def __init__(self, threshold: float = 0.5, ignore_index: int | None = 255) -> None:
        super().__init__((), threshold, ignore_index)

    def update(self, probs: torch.Tensor, target: torch.Tensor) -> None:
        """Count pixels. probs: (B, H, W) foreground probabilities (sigmoid applied, not logits);
        target: (B, H, W) 0 = background, 1 = foreground, or ignore_index. Other labels raise a
        one-line ValueError, counting nothing."""
        self._count(probs, target, 1)

    def compute(self) -> dict[str, torch.Tensor]:
        """{"IoU", "dice", "precision", "recall", "pixel_acc", "mIoU_2class": float64 scalars,
        NaN where 0 / 0; "confmat": (2, 2) int64, rows = truth [bg, fg], columns = prediction}.

        "IoU" and "dice" (= F1) are the foreground's; "mIoU_2class" is the mean of foreground
        and background IoU (those defined), what a 2-class multiclass evaluation reports.
        """
        tp, fp, fn, tn = (s.double() for s in (self.tp, self.fp, self.fn, self.tn))
        iou = tp / (tp + fp + fn)  # float 0 / 0 is NaN: undefined stays undefined
        return {
            "IoU": iou,
            "dice": 2 * tp / (2 * tp + fp + fn),
            "precision": tp / (tp + fp),
            "recall": tp / (tp + fn),
            "pixel_acc": (tp + tn) / (tp + fp + fn + tn),
            "mIoU_2class": torch.stack([tn / (tn + fp + fn), iou]).nanmean(),
            "confmat": torch.stack(
                [torch.stack([self.tn, self.fp]), torch.stack([self.fn, self.tp])]
            ),
        }


class MultilabelSegmentationMetrics(_ThresholdedCounts):
    """Per-label metrics of L independent sigmoid channels, over the whole split.

    States `tp`, `fp`, `fn`, `tn`: (L,) int64, summed across processes by torchmetrics.

    Args:
        num_labels: number of labels L.
        threshold: label l is predicted at a pixel where its prob >= threshold.
        ignore_index: mask value whose (pixel, label) entries are not counted.
    """

    def __init__(
        self, num_labels: int, threshold: float = 0.5, ignore_index: int | None = 255
    ) -> None:
        super().__init__((num_labels,), threshold, ignore_index)
        self.num_labels = num_labels

    def update(self, probs: torch.Tensor, target: torch.Tensor) -> None:
        """Count (pixel, label) entries. probs: (B, L, H, W) probabilities (sigmoid applied);
        target: (B, L, H, W) 0/1 per label, or ignore_index where that label is unlabelled."""
        if probs.ndim < 2 or probs.shape[1] != self.num_labels:
            raise ValueError(f"probs {tuple(probs.shape)}: expected (B, {self.num_labels}, H, W)")
        self._count(probs, target, self.num_labels)

    def compute(self) -> dict[str, torch.Tensor]:
        """{"IoU", "F1", "precision", "recall": (L,) float64, NaN where 0 / 0; "mIoU", "mF1":
        their means over the labels where defined; "IoU_micro", "F1_micro", "pixel_acc": from
        the counts summed over labels; "counts": (L, 4) int64 [tp, fp, fn, tn]}."""
        tp, fp, fn, tn = (s.double() for s in (self.tp, self.fp, self.fn, self.tn))  # (L,) each
        iou, f1 = tp / (tp + fp + fn), 2 * tp / (2 * tp + fp + fn)
        stp, sfp, sfn, stn = tp.sum(), fp.sum(), fn.sum(), tn.sum()
        return {
            "IoU": iou,
            "F1": f1,
            "precision": tp / (tp + fp),
            "recall": tp / (tp + fn),
            "mIoU": iou.nanmean(),  # a label absent from truth and prediction is left out
            "mF1": f1.nanmean(),
            "IoU_micro": stp / (stp + sfp + sfn),
            "F1_micro": 2 * stp / (2 * stp + sfp + sfn),
            "pixel_acc": (stp + stn) / (stp + sfp + sfn + stn),
            "counts": torch.stack([self.tp, self.fp, self.fn, self.tn], dim=1),  # (L, 4)
        }


def class_view(confmat: torch.Tensor) -> dict[str, torch.Tensor]:
    """The per-class numbers SegmentationMetrics.compute gives, from a (C, C) confusion matrix
    (rows = ground truth): a binary result reads like a 2-class one in tables and reports."""
    counts = confmat.double()  # (C, C), summed over processes like the rest
    tp, gt, pred = counts.diag(), counts.sum(1), counts.sum(0)
    union = gt + pred - tp
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.nan)
    acc = torch.where(gt > 0, tp / gt.clamp(min=1), torch.nan)
    return {
        "mIoU": iou.nanmean(),
        "pixel_acc": tp.sum() / counts.sum(),
        "mAcc": acc.nanmean(),
        "IoU": iou,
        "acc": acc,
        "confmat": confmat.clone(),
    }
