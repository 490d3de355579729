"""Run a network on images of any size, under an evaluation protocol.

Encoders downsample by `stride` (32 for most smp encoders), so their decoders need H and W that
are multiples of it; a 500x375 VOC image is not. Padding on the bottom/right edges keeps pixel
(y, x) of the image at (y, x) of the logits, so cropping back is a plain slice.

`EvalProtocol` says how validation, test and prediction turn an image into logits: `whole`
(the full image, padded to the output stride) or `slide` (overlapping windows, their logits
averaged), optionally with test-time augmentation (horizontal flip, several scales).
`predict_logits` applies it.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from seglight.errors import ConfigError


def pad_to_multiple(images: torch.Tensor, stride: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """(B, C, H, W) -> (B, C, H', W') with H', W' multiples of `stride`; returns (padded, (H, W)).

    Reflect padding (replicate where the image is smaller than the pad) avoids the artificial
    edge a constant border would draw.
    """
    h, w = images.shape[-2:]
    pad_h, pad_w = (-h) % stride, (-w) % stride
    if pad_h == 0 and pad_w == 0:
        return images, (h, w)
    mode = "reflect" if pad_h < h and pad_w < w else "replicate"
    return F.pad(images, (0, pad_w, 0, pad_h), mode=mode), (h, w)


def forward_padded(
    model: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, stride: int
) -> torch.Tensor:
    """Logits (B, K, H, W) for images (B, C, H, W) of any H, W."""
    padded, (h, w) = pad_to_multiple(images, stride)
    logits = model(padded)
    return logits[..., :h, :w]


@dataclass(frozen=True)
class EvalProtocol:
    """How validation, test and prediction compute logits, e.g. in YAML
    `eval_protocol: {mode: slide, window: [512, 512], flip: true, scales: [0.75, 1.0, 1.25]}`.

    Args:
        mode: "whole" runs the full image (padded to the output stride); "slide" runs
            overlapping windows and averages their logits where they overlap.
        window: slide window (h, w) in pixels; required for "slide", ignored by "whole".
        stride: step (h, w) between slide windows, at most the window; null = 2/3 of the
            window (rounded down, as mmsegmentation's configs: 512 -> 341).
        weighting: how overlapping windows are weighted: "constant" (plain mean) or
            "gaussian" (centre pixels count more; sigma = 1/8 of the window side, as nnU-Net).
        flip: also run the horizontally flipped image and average the two views.
        scales: resize factors of the image; each scale is one view (with flip: two), all
            averaged at the input size. (1.0,) = no multi-scale.
    """

    mode: Literal["whole", "slide"] = "whole"
    window: tuple[int, int] | None = None
    stride: tuple[int, int] | None = None
    weighting: Literal["constant", "gaussian"] = "constant"
    flip: bool = False
    scales: tuple[float, ...] = (1.0,)

    def __post_init__(self) -> None:
        # Python callers and YAML give lists; store tuples so the frozen config stays hashable.
        if self.mode not in ("whole", "slide"):
            raise ConfigError(f"eval_protocol.mode: must be 'whole' or 'slide', got {self.mode!r}")
        if self.weighting not in ("constant", "gaussian"):
            raise ConfigError(
                f"eval_protocol.weighting: must be 'constant' or 'gaussian', got {self.weighting!r}"
            )
        if not isinstance(self.flip, bool):
            raise ConfigError(f"eval_protocol.flip: must be true or false, got {self.flip!r}")
        window = _pair("window", self.window)
        stride = _pair("stride", self.stride)
        if self.mode == "slide" and window is None:
            raise ConfigError("eval_protocol.window: required for mode 'slide', e.g. [512, 512]")
        if window is not None and stride is None:
            stride = (max(1, window[0] * 2 // 3), max(1, window[1] * 2 // 3))
        if window is not None and (stride[0] > window[0] or stride[1] > window[1]):
            raise ConfigError(
                f"eval_protocol.stride: {list(stride)} is larger than the window {list(window)}; "
                f"pixels between windows would get no prediction"
            )
        object.__setattr__(self, "window", window)
        object.__setattr__(self, "stride", stride)
        try:
            scales = tuple(float(s) for s in self.scales)
        except (TypeError, ValueError):
            raise ConfigError(
                f"eval_protocol.scales: must be a list of numbers, got {self.scales!r}"
            ) from None
        if not scales or not all(math.isfinite(s) and s > 0 for s in scales):
            raise ConfigError(
                f"eval_protocol.scales: must be a non-empty list of numbers > 0, got {self.scales}"
            )
        object.__setattr__(self, "scales", scales)

    @property
    def is_plain(self) -> bool:
        """True for the full image at scale 1 without flip: exactly what `forward` computes."""
        return self.mode == "whole" and not self.flip and self.scales == (1.0,)

    def describe(self) -> str:
        """A one-line summary for logs, e.g. "slide 512x512 stride 341x341 gaussian + flip"."""
        if self.mode == "whole":
            text = "whole"
        else:
            (wh, ww), (sh, sw) = self.window, self.stride
            text = f"slide {wh}x{ww} stride {sh}x{sw}"
            if self.weighting == "gaussian":
                text += " gaussian"
        if self.flip:
            text += " + flip"
        if self.scales != (1.0,):
            text += " + scales " + ",".join(str(s) for s in self.scales)
        return text


def _pair(name: str, value) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    try:
        pair = tuple(int(v) for v in value)
        exact = all(float(v) == int(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"eval_protocol.{name}: must be [h, w] in pixels, got {value!r}"
        ) from None
    if len(pair) != 2 or not exact or min(pair) <= 0:
        raise ConfigError(
            f"eval_protocol.{name}: must be two positive integers [h, w], got {list(value)}"
        )
    return pair


ModelFn = Callable[[torch.Tensor], torch.Tensor]


def predict_logits(
    model_fn: ModelFn,
    images: torch.Tensor,
    stride: int,
    protocol: EvalProtocol,
    num_classes: int,
    activation: str = "softmax",
) -> torch.Tensor:
    """Logits (B, K, H, W) for images (B, C, H, W) of any H, W under `protocol`.

    `model_fn` maps (B, C, h, w) images, h and w multiples of `stride`, to (B, K, h, w) logits
    (the raw network, or a module's `forward`). The prediction is `argmax(1)` of the result.

    One view (no flip, one scale): the logits of that view (whole, or slide windows averaged
    with the weight map), unchanged. Several views: the log of the mean softmax probability
    over the views. Averaging probabilities, as mmsegmentation's aug_test does, keeps one view
    with large logits from outvoting the others; returning their log keeps the output
    "logits-like": softmax gives the averaged probabilities back, argmax is their argmax, and
    cross-entropy on it is the NLL of the averaged probabilities. Within a view, overlapping
    windows average logits (as mmsegmentation and nnU-Net do). activation "sigmoid" (binary,
    multilabel: K independent probabilities): the mean of the views' sigmoid probabilities,
    returned as its logit log(p / (1 - p)), so sigmoid gives the averaged probability back.
    """
    h, w = images.shape[-2:]
    views = [
        (s, flip)
        for s in protocol.scales
        for flip in ((False, True) if protocol.flip else (False,))
    ]
    if len(views) == 1:
        return _view_logits(model_fn, images, stride, protocol, num_classes, *views[0])
    probs = None  # running sum of the views' probabilities, (B, K, H, W) float32
    for scale, flip in views:
        logits = _view_logits(model_fn, images, stride, protocol, num_classes, scale, flip)
        p = logits.float().sigmoid() if activation == "sigmoid" else logits.float().softmax(1)
        probs = p if probs is None else probs.add_(p)
    # log of the mean; clamp so a class no view gives any probability stays finite.
    tiny = torch.finfo(probs.dtype).tiny
    mean = probs.div_(len(views))
    if activation == "sigmoid":
        return mean.clamp_min(tiny).log() - (1 - mean).clamp_min(tiny).log()
    return mean.clamp_min_(tiny).log_()


def _view_logits(
    model_fn: ModelFn,
    images: torch.Tensor,
    stride: int,
    protocol: EvalProtocol,
    num_classes: int,
    scale: float,
    flip: bool,
) -> torch.Tensor:
    """Logits (B, K, H, W) of one view: `images` resized by `scale`, flipped if `flip`."""
    h, w = images.shape[-2:]
    x = images  # (B, C, H, W)
    if scale != 1.0:
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)  # (B, C, h', w')
    if flip:
        x = x.flip(-1)
    if protocol.mode == "slide":
        logits = _slide(model_fn, x, stride, protocol, num_classes)
    else:
        logits = forward_padded(model_fn, x, stride)  # (B, K, h', w')
    if flip:
        logits = logits.flip(-1)
    if logits.shape[-2:] != (h, w):
        logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
    return logits  # (B, K, H, W)


def _slide(
    model_fn: ModelFn,
    images: torch.Tensor,
    stride: int,
    protocol: EvalProtocol,
    num_classes: int,
) -> torch.Tensor:
    """Logits (B, K, h, w): windows over images (B, C, h, w), weighted mean where they overlap.

    Images smaller than the window are padded up to it first (as mmsegmentation), so every
    window the network sees has the window's size; the padding is cropped off the result.
    """
    (wh, ww), (sh, sw) = protocol.window, protocol.stride
    b, _, h, w = images.shape
    ph, pw = max(h, wh), max(w, ww)
    if (ph, pw) != (h, w):
        pad_h, pad_w = ph - h, pw - w
        mode = "reflect" if pad_h < h and pad_w < w else "replicate"
        images = F.pad(images, (0, pad_w, 0, pad_h), mode=mode)  # (B, C, ph, pw)
    weight = _window_weight((wh, ww), protocol.weighting, images.device)  # (wh, ww) float32
    # Accumulated in place, one window at a time: memory is one image's logits, not all windows'.
    total = images.new_zeros((b, num_classes, ph, pw), dtype=torch.float32)  # sum of w * logits
    norm = images.new_zeros((ph, pw), dtype=torch.float32)  # sum of w
    for y in _starts(ph, wh, sh):
        for x in _starts(pw, ww, sw):
            window = images[..., y : y + wh, x : x + ww]  # (B, C, wh, ww)
            logits = forward_padded(model_fn, window, stride)  # (B, K, wh, ww)
            if logits.shape[1] != num_classes:
                raise ValueError(
                    f"predict_logits: the model gives {logits.shape[1]} channels, "
                    f"num_classes is {num_classes}"
                )
            total[..., y : y + wh, x : x + ww].addcmul_(logits.float(), weight)
            norm[y : y + wh, x : x + ww].add_(weight)
    out = total.div_(norm)  # (B, K, ph, pw)
    return out[..., :h, :w].to(logits.dtype)


def _starts(size: int, window: int, step: int) -> list[int]:
    """Window offsets covering [0, size): every `step`, the last one flush with the end
    (mmsegmentation's grid: the last window is shifted back instead of running off the edge)."""
    n = max(size - window + step - 1, 0) // step + 1
    return sorted({min(i * step, size - window) for i in range(n)})


def _window_weight(window: tuple[int, int], weighting: str, device) -> torch.Tensor:
    """(wh, ww) float32 weight map: ones, or a separable gaussian peaking at 1 in the centre."""
    wh, ww = window
    if weighting == "constant":
        return torch.ones(wh, ww, device=device)
    axes = []
    for n in (wh, ww):
        coords = torch.arange(n, dtype=torch.float32, device=device) - (n - 1) / 2
        sigma = n / 8  # nnU-Net's sigma_scale = 1/8 of the patch size
        axes.append(torch.exp(-0.5 * (coords / sigma) ** 2))
    # Corners are exp(-8)^2 ~ 1e-7 of the peak: small but > 0, so every pixel has weight.
    return axes[0][:, None] * axes[1][None, :]


def split_images(batch: dict) -> list[dict]:
    """A padded batch (see seglight.data.dataset.collate_padded) as one batch of 1 per image,
    cropped back to the image's own size batch["size"][i]: evaluating each alone makes a score
    independent of which images shared a batch (padding to the largest would change the
    predictions near an image's edges, and even equal-size images give logits that differ in
    the last bits with the batch size). Keys other than image/mask/name/size are dropped."""
    images = batch["image"]  # (B, C, H, W)
    sizes = batch.get("size")  # (B, 2) = (h, w) per image, or None: all of the batch's size
    out = []
    for i in range(images.shape[0]):
        h, w = (int(v) for v in sizes[i]) if sizes is not None else images.shape[-2:]
        one = {"image": images[i : i + 1, :, :h, :w]}  # (1, C, h, w)
        if "mask" in batch:
            one["mask"] = batch["mask"][i : i + 1, ..., :h, :w]  # (1, h, w) or (1, L, h, w)
        if "name" in batch:
            one["name"] = [batch["name"][i]]
        if sizes is not None:
            one["size"] = sizes[i : i + 1]
        out.append(one)
    return out
