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
        """Count pixels. preds: (B, H, W) class indices; target: (B, H, W) with ignore_index.

        Replaces torchmetrics' counting, which under `torch.use_deterministic_algorithms(True)`
        (Trainer(deterministic=True)) swaps torch.bincount for an (N pixels x C^2) int64 mesh:
        gigabytes for one 512x512 batch. torch.bincount on integer data without weights is
        exact, hence deterministic, on CPU and CUDA (torch only flags CUDA bincount with
        float weights), so it is used directly.
        """
        preds, target = preds.reshape(-1), target.reshape(-1)
        if self.ignore_index is not None:
            keep = target != self.ignore_index
            preds, target = preds[keep], target[keep]
        if target.numel() == 0:
            return
        c = self.num_classes
        lo = torch.minimum(target.min(), preds.min())
        hi = torch.maximum(target.max(), preds.max())
        if lo < 0 or hi >= c:
            bad = torch.cat([target, preds])
            bad = bad[(bad < 0) | (bad >= c)].unique()[:10].tolist()
            raise ValueError(
                f"label values {bad} are outside [0, {c}) and are not ignore_index "
                f"({self.ignore_index}): the dataset's num_classes or ignore_index is wrong"
            )
        index = target.long() * c + preds.long()
        self.confmat += torch.bincount(index, minlength=c * c).reshape(c, c)

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
