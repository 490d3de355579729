"""Charts for reports, drawn with matplotlib: the confusion matrix with both axes named and
labelled and its values printed, and the per-class IoU bar chart.

matplotlib's object API (Figure + the Agg canvas), not pyplot: no global figure state, safe in
callbacks and threads, and no display needed. Each function returns a PIL image.
"""

import io
import math

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

MAX_VALUES = 30  # classes up to which every cell's value is printed
MAX_TICKS = 60  # classes up to which every class is named on the axes


def _to_image(figure: Figure) -> Image.Image:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def confusion_figure(confmat: torch.Tensor, class_names: list[str], title: str = "") -> Image.Image:
    """Row-normalized confusion matrix (C, C) (rows = ground truth): cell (i, j) = share of class
    i's pixels predicted as j, in %, printed in each cell up to MAX_VALUES classes; x axis
    "predicted class", y axis "ground-truth class", both named (every k-th name beyond
    MAX_TICKS classes). A class without ground-truth pixels has an empty (white) row."""
    counts = confmat.double().numpy()
    rows = counts.sum(1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)  # (C, C)
    c = len(class_names)
    side = min(24.0, max(4.0, 0.45 * c + 2.5))
    figure = Figure(figsize=(side + 1.5, side))
    ax = figure.add_subplot()
    shown = ax.imshow(share * 100, cmap="Blues", vmin=0, vmax=100)
    figure.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, label="% of the class's pixels")
    step = max(1, math.ceil(c / MAX_TICKS))
    ticks = list(range(0, c, step))
    ax.set_xticks(ticks, [class_names[i] for i in ticks], rotation=60, ha="right")
    ax.set_yticks(ticks, [class_names[i] for i in ticks])
    ax.set_xlabel("predicted class")
    ax.set_ylabel("ground-truth class")
    ax.set_title(title or "confusion matrix (rows sum to 100%)")
    if c <= MAX_VALUES:
        size = max(5, min(9, 120 // max(c, 1)))
        for i in range(c):
            for j in range(c):
                if counts[i, j]:
                    value = share[i, j] * 100
                    ax.text(j, i, f"{value:.1f}" if value < 99.95 else "100", ha="center",
                            va="center", fontsize=size,
                            color="white" if value > 60 else "black")  # fmt: skip
    return _to_image(figure)


def iou_bars(
    class_names: list[str], iou: torch.Tensor, title: str = "IoU per class"
) -> Image.Image:
    """Horizontal bars of IoU (C,) in %, the value written at each bar's end; a class absent from
    ground truth and prediction (NaN) is named "absent" instead of a bar."""
    values = iou.double().numpy() * 100
    c = len(class_names)
    figure = Figure(figsize=(7, max(2.0, 0.28 * c + 1.0)))
    ax = figure.add_subplot()
    y = np.arange(c)
    ax.barh(y, np.nan_to_num(values), color="#3274a1")
    ax.set_yticks(y, class_names)
    ax.invert_yaxis()  # first class on top, as in the tables
    ax.set_xlim(0, 109)
    ax.set_xlabel("IoU (%)")
    ax.set_title(title)
    for k, v in enumerate(values):
        ax.text(0.5 if np.isnan(v) else v + 0.5, k, "absent" if np.isnan(v) else f"{v:.1f}",
                va="center", fontsize=8)  # fmt: skip
    return _to_image(figure)
