"""Inputs a network cannot take become one line instead of a traceback from deep inside it:
a channel count other than model.in_channels, images below an architecture's smallest size, a
training batch of one image where a BatchNorm layer sees one value per channel."""

from typing import Any

import torch
from torch import nn

from seglight.errors import ConfigError
from seglight.evaluation import forward_padded


def check_logits_size(net: nn.Module, args: tuple, logits: torch.Tensor) -> None:
    """Logits of another size than the (padded) input would be cropped into place wrongly, or
    fail in the loss: e.g. smp's `upsampling` not matching `encoder_depth`. Costs a comparison."""
    if _tracing() or not args or not isinstance(logits, torch.Tensor):
        return
    size, got = tuple(args[0].shape[-2:]), tuple(logits.shape[-2:])
    if got != size:
        raise ConfigError(
            f"model.model_kwargs: {_name(net)} gives {got[0]}x{got[1]} logits for a "
            f"{size[0]}x{size[1]} input; they must have its size: leave upsampling (and what "
            f"sets the decoder's scale, e.g. encoder_depth) at values that fit each other"
        )


class InputCheck:
    """Around a network's forward pass: inputs the network cannot take become a ConfigError
    saying how to fix them: a channel count other than model.in_channels, images smaller than
    the architecture's smallest input, a training batch of one image where a BatchNorm layer
    sees one value per channel.

        with InputCheck(self.net, images, self.stride):
            return forward_padded(self.net, images, self.stride)

    Per call it costs one integer comparison; the diagnosis (a few small forward passes to find
    the smallest size that works) runs only after the network has failed. Nothing is checked
    while tracing or compiling (export): the graph holds the network only."""

    def __init__(self, net: nn.Module, images: torch.Tensor, stride: int) -> None:
        self.net, self.images, self.stride = net, images, stride

    def __enter__(self) -> None:
        if _tracing():
            return
        images, expected = self.images, getattr(self.net, "seglight_in_channels", None)
        if images.ndim != 4 or (expected is not None and images.shape[1] != expected):
            raise ConfigError(_channels_message(images, expected))

    def __exit__(self, kind: type | None, error: BaseException | None, tb: Any) -> bool:
        if error is None or _tracing() or isinstance(error, torch.OutOfMemoryError):
            return False
        if not isinstance(error, RuntimeError | ValueError | AssertionError | IndexError):
            return False
        try:
            problem = _diagnose(self.net, self.images, self.stride)
        except ConfigError as e:  # a probe that ran had logits of the wrong size: that is it
            problem = str(e)
        if problem is None:  # not an input the network cannot take: the original error stands
            return False
        raise ConfigError(problem) from None


def forward_checked(net: nn.Module, images: torch.Tensor, stride: int) -> torch.Tensor:
    """forward_padded (logits (B, K, H, W) for images (B, C, H, W) of any H, W) under
    InputCheck."""
    with InputCheck(net, images, stride):
        return forward_padded(net, images, stride)


def min_input_size(
    net: nn.Module,
    stride: int,
    in_channels: int,
    batch_size: int = 1,
    train: bool = False,
    start: int = 0,
    limit: int = 1024,
    like: torch.Tensor | None = None,
) -> int | None:
    """The smallest square side (a multiple of `stride`, at least `start`, at most `limit`) at
    which `net` runs a (batch_size, in_channels, side, side) input (on the device and in the dtype
    of `like`, else of the network's parameters), in train or eval mode; None if none does. A few
    forward passes without gradients, doubling then bisecting; the network's state is restored."""
    top = limit - limit % stride  # the largest multiple of stride within the limit
    side = max(stride, -(-start // stride) * stride)
    if side > top:
        return None
    known_bad = None
    while not _runs(net, (batch_size, in_channels, side, side), train, like):
        if side >= top:
            return None
        known_bad, side = side, min(side * 2, top)
    if known_bad is None:
        return side
    low, high = known_bad // stride, side // stride  # fails at low*stride, runs at high*stride
    while high - low > 1:
        mid = (low + high) // 2
        if _runs(net, (batch_size, in_channels, mid * stride, mid * stride), train, like):
            high = mid
        else:
            low = mid
    return high * stride


def _diagnose(net: nn.Module, images: torch.Tensor, stride: int) -> str | None:
    """Why `net` failed on `images`, as one line saying how to fix it; None if it is not the
    input's size or batch (then the original error is the one to show)."""
    b, c, h, w = images.shape
    ph, pw = -(-h // stride) * stride, -(-w // stride) * stride  # as forward_padded pads
    got = f"got {h}x{w}" + (f" (padded to {ph}x{pw})" if (ph, pw) != (h, w) else "")
    name = _name(net)
    if not _runs(net, (1, c, ph, pw), False, images):  # fails even for one image in eval mode
        side = min_input_size(net, stride, c, start=min(ph, pw) + 1, like=images)
        if side is None:  # nothing larger runs: a network of one fixed, smaller size?
            side = min_input_size(net, stride, c, limit=min(ph, pw) - 1, like=images)
        if side is None:
            return None
        if not _runs(net, (1, c, side + stride, side + stride), False, images):
            return (
                f"model.arch: {name} takes images of exactly {side}x{side} pixels, {got}: crop or "
                f"resize to it, or (timm ViTs) set model_kwargs.img_size or dynamic_img_size: true"
            )
        return (
            f"model.arch: {name} needs images of at least {side}x{side} pixels, {got}: use "
            f"larger images or crops (the data module's image/crop size, eval_protocol.window, "
            f"eval_protocol.scales) or an architecture that takes smaller inputs (e.g. Unet, FPN)"
        )
    if not net.training or b > 1 or _has_sync_batchnorm(net):
        return None  # one image runs in eval mode, and this was not a training batch of one
    if _runs(net, (1, c, ph, pw), True, images) or not _runs(net, (2, c, ph, pw), True, images):
        return None
    # Some never train on one image (a BatchNorm after global pooling): look only up to 2x.
    top = 2 * max(ph, pw)
    side = min_input_size(net, stride, c, train=True, start=min(ph, pw) + 1, limit=top, like=images)
    larger = f", or train on images of at least {side}x{side}" if side else ""
    return (
        f"data.batch_size: {name} cannot train on a batch of one {h}x{w} image (a BatchNorm "
        f"layer would see one value per channel): use a batch size of 2 or more{larger}"
    )


def _runs(
    net: nn.Module, shape: tuple[int, ...], train: bool, like: torch.Tensor | None = None
) -> bool:
    """Whether `net` runs on a random input of `shape` in train/eval mode. Without gradients;
    mode and buffers (BatchNorm statistics) are restored."""
    param = next(net.parameters(), None)
    ref = like if like is not None else param
    device = ref.device if ref is not None else torch.device("cpu")
    floating = ref is not None and ref.is_floating_point()
    dtype = ref.dtype if floating else torch.float32
    was_training = net.training
    buffers = [b.detach().clone() for b in net.buffers()] if train else []
    try:
        net.train(train)
        with torch.no_grad():
            net(torch.randn(shape, device=device, dtype=dtype))
        return True
    except (torch.OutOfMemoryError, ConfigError):  # ConfigError: it ran, with wrong logits
        raise
    except Exception:  # noqa: BLE001 - any failure means: not at this size
        return False
    finally:
        net.train(was_training)
        with torch.no_grad():
            for buffer, saved in zip(net.buffers(), buffers, strict=False):
                buffer.copy_(saved)


def _channels_message(images: torch.Tensor, expected: int | None) -> str:
    if images.ndim != 4:
        return f"model: expected images of shape (B, C, H, W), got {tuple(images.shape)}"
    c = images.shape[1]
    return (
        f"model.in_channels: the images have {c} channel{'s' * (c != 1)} but the model takes "
        f"{expected}: set --model.in_channels={c} (or give the data module images with "
        f"{expected} channels)"
    )


def _has_sync_batchnorm(net: nn.Module) -> bool:
    # In train mode it all-reduces over the processes: a probe on one process would hang.
    return any(isinstance(m, nn.SyncBatchNorm) for m in net.modules())


def _name(net: nn.Module) -> str:
    return getattr(net, "seglight_name", type(net).__name__)


def _tracing() -> bool:
    return torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling()
