"""Run a network on images of any size: pad H and W up to the encoder's output stride, crop back.

Encoders downsample by `stride` (32 for most smp encoders), so their decoders need H and W that
are multiples of it; a 500x375 VOC image is not. Padding on the bottom/right edges keeps pixel
(y, x) of the image at (y, x) of the logits, so cropping back is a plain slice.
"""

import torch
import torch.nn.functional as F
from torch import nn


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


def forward_padded(model: nn.Module, images: torch.Tensor, stride: int) -> torch.Tensor:
    """Logits (B, K, H, W) for images (B, C, H, W) of any H, W."""
    padded, (h, w) = pad_to_multiple(images, stride)
    logits = model(padded)
    return logits[..., :h, :w]
