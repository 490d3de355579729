"""What every audit shares: one sample's scan record, a problem entry, the image-size summary,
and reading samples in order on threads (seglight.data.audit, seglight.data.audit_multilabel)."""

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from seglight.data.pixel_stats import PixelSums


@dataclass
class Scan:
    """What one sample contributed: image size (H, W), whether it has a mask, stored-value and
    training-id pixel counts (256,) when it loaded cleanly, stored values that are not labels,
    problems; the image (path or sample name) and its per-channel pixel sums when it decoded."""

    image: str = ""
    size: tuple[int, int] | None = None
    channels: PixelSums | None = None
    labelled: bool = False
    stored: np.ndarray | None = None
    ids: np.ndarray | None = None
    invalid: dict[int, int] = field(default_factory=dict)
    problems: list[dict] = field(default_factory=list)


def problem(path, kind: str, detail: str) -> dict:
    return {"file": str(path), "kind": kind, "detail": detail}


def number(x: float) -> int | float:
    """A JSON number: int when whole."""
    return int(x) if float(x).is_integer() else float(x)


def size_summary(sizes: list[tuple[int, int]], most_common: int = 10) -> dict:
    if not sizes:
        return {"height": None, "width": None, "most_common": []}
    hw = np.array(sizes)
    stats = {}
    for axis, name in ((0, "height"), (1, "width")):
        col = hw[:, axis]
        stats[name] = {
            "min": int(col.min()),
            "max": int(col.max()),
            "median": number(np.median(col)),
        }
    common = Counter(map(tuple, hw.tolist())).most_common(most_common)
    stats["most_common"] = [{"height": h, "width": w, "count": n} for (h, w), n in common]
    return stats


def ordered_map(fn, n: int, workers: int):
    """fn(0), ..., fn(n-1) in order, on `workers` threads."""
    if workers <= 1 or n <= 1:
        yield from map(fn, range(n))
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(fn, range(n))
