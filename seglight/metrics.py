"""Segmentation metrics from one confusion matrix over the whole split, as official evaluators do.

IoU_c = TP / (TP + FP + FN) per class; mIoU = mean over classes whose union is non-empty;
pixel_acc = trace / total; mAcc = mean over classes present in the ground truth of TP / (TP + FN).
Ignore pixels are dropped before counting. The reduction of IoU is torchmetrics' own
(MulticlassJaccardIndex.compute); only the counting is replaced, see `update`.
"""

import torch
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
        confmat = self.confmat.double()
        tp = confmat.diag()
        gt = confmat.sum(1)
        union = gt + confmat.sum(0) - tp
        iou = super().compute().double()  # torchmetrics' per-class IoU, 0 where union is 0
        iou = torch.where(union > 0, iou, torch.nan)
        acc = torch.where(gt > 0, tp / gt.clamp(min=1), torch.nan)
        # No labelled pixel at all (an unlabelled split): every value is undefined, NaN — never
        # a 0 that reads like a result.
        return {
            "mIoU": iou.nanmean(),
            "pixel_acc": tp.sum() / confmat.sum(),
            "mAcc": acc.nanmean(),
            "IoU": iou,
            "acc": acc,
            "confmat": self.confmat.clone(),  # (C, C), summed over processes like the rest
        }
