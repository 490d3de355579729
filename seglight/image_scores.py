"""Per-image scores of a test run, and the K worst images kept to be drawn (ClassReport).

The module adds one entry per test image (its name and the task's headline on that image: mIoU,
binary fg_IoU); the K lowest keep their image, mask and prediction (CPU tensors), so the report
draws them without predicting again. Under DDP each process holds its own images; `gathered`
merges them on every process.
"""

import math
from dataclasses import dataclass, field

import torch


@dataclass(order=True)
class WorstImage:
    """One kept image, ordered by `key` = (score, NaN last; name); tensors without the batch
    axis: image (C, H, W) normalized, mask and pred (H, W) or (L, H, W)."""

    key: tuple[float, str]
    image: torch.Tensor = field(compare=False)
    mask: torch.Tensor = field(compare=False)
    pred: torch.Tensor = field(compare=False)

    @property
    def name(self) -> str:
        return self.key[1]

    @property
    def score(self) -> float:
        return math.nan if self.key[0] == math.inf else self.key[0]


class ImageScores:
    """(name, score) of every image seen, and the `keep` lowest-scoring with their pictures."""

    def __init__(self, keep: int = 8) -> None:
        self.keep = keep
        self.scores: list[tuple[str, float]] = []
        self.kept: list[WorstImage] = []  # at most `keep`, any order

    def __len__(self) -> int:
        return len(self.scores)

    def add(self, name: str, score: float, image, mask, pred) -> None:
        """Record one image (tensors of a batch of 1, any device). An image without a defined
        score (NaN: nothing labelled or predicted) sorts after every scored one."""
        self.scores.append((name, score))
        key = (math.inf if math.isnan(score) else score, name)
        if len(self.kept) == self.keep:
            best = max(self.kept)
            if key >= best.key:
                return
            self.kept.remove(best)
        self.kept.append(
            WorstImage(key, image[0].detach().cpu(), mask[0].detach().cpu(), pred[0].detach().cpu())
        )

    def worst(self) -> list[WorstImage]:
        """The kept images, lowest score first."""
        return sorted(self.kept)

    def gathered(self) -> "ImageScores":
        """All processes' scores and their `keep` worst images together (every process must
        call it under DDP); this object itself when there is one process."""
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return self
        parts: list = [None] * dist.get_world_size()
        dist.all_gather_object(parts, (self.scores, self.kept))
        merged = ImageScores(self.keep)
        merged.scores = [s for scores, _ in parts for s in scores]
        merged.kept = sorted(w for _, kept in parts for w in kept)[: self.keep]
        return merged
