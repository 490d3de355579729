"""The per-image part of the test report: every image's score (test_images.csv, worst first)
and the lowest-scoring images drawn as image | ground truth | prediction | error."""

import csv
import math
from pathlib import Path

import numpy as np
from PIL import Image

from seglight.image_scores import ImageScores
from seglight.render import class_colours, denormalize, draw_grid, error_map

MAX_SIDE = 256  # longest side of a drawn tile
MIN_SIDE = 96  # smaller images are enlarged by a whole factor towards it


def write_image_scores(folder: Path, scores: ImageScores, metric: str) -> dict:
    """test_images.csv (image, score; lowest first, undefined last) and the report's "images"
    entry: {"metric", "count", "worst": [{"name", "score"}, ...]} (score None when undefined)."""
    ranked = sorted(scores.scores, key=lambda s: (math.isnan(s[1]), s[1], s[0]))
    with open(folder / "test_images.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", metric])
        writer.writerows([name, "" if math.isnan(v) else v] for name, v in ranked)
    worst = [{"name": w.name, "score": None if math.isnan(w.score) else w.score}
             for w in scores.worst()]  # fmt: skip
    return {"metric": metric, "count": len(ranked), "worst": worst}


def draw_worst(scores: ImageScores, datamodule, class_names: list[str]) -> Image.Image | None:
    """The kept worst images as a titled grid (None when there are none)."""
    worst = scores.worst()
    if not worst:
        return None
    channels = worst[0].image.shape[0]
    mean = getattr(datamodule, "mean", (0.0,) * channels)
    std = getattr(datamodule, "std", (1.0,) * channels)
    palette = class_colours(getattr(datamodule, "palette", None), len(class_names))
    rows = []
    for kept in worst:
        image = denormalize(kept.image, mean, std, getattr(datamodule, "rgb_bands", None))
        mask, pred = kept.mask.numpy(), kept.pred.numpy()
        image, mask, pred = _shrunk(image, mask, pred)
        rows.append({"image": image, "mask": mask, "pred": pred,
                     "error": error_map(image, mask, pred)})  # fmt: skip
    titles = ("image", "ground truth", "prediction", "error")
    return draw_grid(rows, palette, class_names, 0.5, titles)


def _shrunk(image: np.ndarray, mask: np.ndarray, pred: np.ndarray):
    """Image (H, W, 3) and masks ((H, W) or (L, H, W)) with the longest side <= MAX_SIDE, or
    enlarged by a whole factor when it is under MIN_SIDE."""
    h, w = image.shape[:2]
    # small images are enlarged (nearest) so that the column titles fit above them
    scale = MAX_SIDE / max(h, w) if max(h, w) > MAX_SIDE else max(1, MIN_SIDE // max(h, w))
    if scale == 1:
        return image, mask.astype(np.int64), pred.astype(np.int64)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))

    def nearest(m: np.ndarray) -> np.ndarray:
        if m.ndim == 3:
            return np.stack([nearest(x) for x in m])
        return np.asarray(Image.fromarray(m.astype(np.uint8)).resize(size, Image.NEAREST))

    resample = Image.BILINEAR if scale < 1 else Image.NEAREST
    image = np.asarray(Image.fromarray(image).resize(size, resample))
    return image, nearest(mask).astype(np.int64), nearest(pred).astype(np.int64)
