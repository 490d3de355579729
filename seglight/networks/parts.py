"""The parts of a built network that training treats differently: its encoder (frozen by
seglight.callbacks.FreezeEncoder, or trained at `model.encoder_lr_factor` times the learning
rate) and its decoder; and the encoder modules no training step uses (drop_unused_modules)."""

from typing import Any

import torch
from torch import nn

from seglight.errors import ConfigError


def network_parts(net: nn.Module, arch: str, what: str) -> tuple[nn.Module, nn.Module | None]:
    """(encoder, decoder) of a network built by seglight.networks: smp's net.encoder /
    net.decoder, or a torchvision model's backbone (its classifier is also its head: decoder
    None). `what` names the setting that needs them, for the error."""
    if hasattr(net, "encoder") and hasattr(net, "decoder"):  # segmentation_models_pytorch
        return net.encoder, net.decoder
    inner = getattr(net, "net", None)  # seglight.networks.torchvision_models wraps the model
    if hasattr(inner, "backbone"):
        return inner.backbone, None
    raise ConfigError(
        f"{what}: model.arch {arch!r} has no separate encoder (expected net.encoder and "
        "net.decoder as in smp models, or a torchvision model's net.net.backbone)"
    )


def encoder_lr_groups(
    params: list[tuple[str, nn.Parameter]], net: nn.Module, arch: str, encoder_lr_factor: float
) -> list[dict]:
    """Optimizer parameter groups: [{"params": everything else, "name": "rest"}, {"params": the
    encoder's, "name": "encoder", "lr_factor": encoder_lr_factor}] (LearningRateMonitor logs
    each by its name) (scale_group_lrs applies the factor once the optimizer has
    set each group's lr); a single group when the factor is 1. `params`: the module's
    named_parameters()."""
    if encoder_lr_factor <= 0:
        raise ConfigError(
            f"model.encoder_lr_factor: must be > 0; got {encoder_lr_factor} (to keep the "
            "encoder fixed, use the callback seglight.callbacks.FreezeEncoder)"
        )
    if encoder_lr_factor == 1:
        return [{"params": [p for _, p in params]}]
    encoder, _ = network_parts(net, arch, "model.encoder_lr_factor")
    in_encoder = {id(p) for p in encoder.parameters()}
    return [
        {"params": [p for _, p in params if id(p) not in in_encoder], "name": "rest"},
        {
            "params": [p for _, p in params if id(p) in in_encoder],
            "name": "encoder",
            "lr_factor": encoder_lr_factor,
        },  # fmt: skip
    ]


def scale_group_lrs(optimizer) -> None:
    """Multiplies each group's lr by its "lr_factor" (before a scheduler records the groups'
    initial lr, so every schedule keeps the ratio)."""
    for group in optimizer.param_groups:
        group["lr"] = group["lr"] * group.get("lr_factor", 1.0)


class Dropped(nn.Module):
    """What drop_unused_modules leaves in place of a module: its input back, whatever else the
    caller passes (efficientnet's blocks also take a drop-connect rate)."""

    def forward(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        return x


def drop_unused_modules(encoder: nn.Module, known: list[str] | None = None) -> list[str]:
    """Replace by `Dropped` the modules of an smp encoder whose parameters never get a
    gradient: the stages `encoder_depth` < 5 leaves out (smp 0.6 builds them: resnet18's layer4
    at depth 4, 8.4 M weights; mobilenet_v2 even runs one and drops its output), efficientnet's
    classifier-side conv head at any depth. DDP refuses a model with parameters that never get
    a gradient, and checkpoints would carry them.

    Found as DDP would: one training step of the encoder on a probe input (2 x C x 64 x 64, or
    224 x 224 if that fails, e.g. for ViTs; BatchNorm statistics and the RNG state put back).
    The outermost modules with parameters but no gradient are replaced, and only if the
    encoder's features (eval mode) stay the same (to float rounding: the same computation, but
    never assumed bit-equal); any failure leaves it as it was.
    `known`: the names this returned for an encoder built the same way (no probe then).
    Returns the dropped modules' names, also kept in `encoder.seglight_dropped` (checkpoints
    saved with them still load)."""
    if known is not None:
        for name in known:
            _replace(encoder, name, Dropped())
        encoder.seglight_dropped = list(known)
        return list(known)
    probe, before = _probe_input(encoder)
    unused = [] if probe is None else _without_gradient(encoder, probe)
    if not unused:
        return []
    originals = {name: _replace(encoder, name, Dropped()) for name in unused}
    after = _features(encoder, probe)
    same = after is not None and len(after) == len(before)
    pairs = zip(before, after or [], strict=False)
    if not (same and all(torch.allclose(b, a, rtol=1e-4, atol=1e-5) for b, a in pairs)):
        for name, module in originals.items():  # the features needed them after all
            _replace(encoder, name, module)
        return []
    encoder.seglight_dropped = unused
    return unused


def _replace(root: nn.Module, name: str, module: nn.Module) -> nn.Module:
    """Put `module` at the dotted `name` under root; returns what was there."""
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name)
    old = getattr(parent, child)
    setattr(parent, child, module)
    return old


def _probe_input(encoder: nn.Module) -> tuple[torch.Tensor | None, list[torch.Tensor] | None]:
    """(2, C, S, S) seeded noise the encoder runs on (S = 64 or 224) and its eval-mode
    features; (None, None) if it runs on neither."""
    channels = getattr(encoder, "_in_channels", 3)
    noise = torch.Generator().manual_seed(0)  # the global RNG is left alone
    for size in (64, 224):
        x = torch.randn(2, channels, size, size, generator=noise)
        features = _features(encoder, x)
        if features is not None:
            return x, features
    return None, None


def _features(encoder: nn.Module, x: torch.Tensor) -> list[torch.Tensor] | None:
    """The encoder's feature tensors in eval mode; None if it fails on x."""
    training = encoder.training
    try:
        with torch.no_grad():
            return [f for f in encoder.eval()(x) if isinstance(f, torch.Tensor)]
    except Exception:  # noqa: BLE001 - a probe: any failure only means "keep everything"
        return None
    finally:
        encoder.train(training)


def _without_gradient(encoder: nn.Module, x: torch.Tensor) -> list[str]:
    """Names of the outermost submodules with parameters of which none gets a gradient in a
    training step on x (the encoder's state, its gradients and the RNG state as they were)."""
    training = encoder.training
    buffers = {name: b.clone() for name, b in encoder.named_buffers()}
    grads = {p: p.grad for p in encoder.parameters()}
    try:
        with torch.random.fork_rng(devices=[]):  # dropout draws from the global RNG
            for p in encoder.parameters():
                p.grad = None
            features = [f for f in encoder.train()(x) if isinstance(f, torch.Tensor)]
            sum(f.float().sum() for f in features if f.requires_grad).backward()
        used = {p for p in encoder.parameters() if p.grad is not None}
    except Exception:  # noqa: BLE001 - a probe: any failure only means "keep everything"
        return []
    finally:
        encoder.train(training)
        for name, b in encoder.named_buffers():
            b.copy_(buffers[name])
        for p, grad in grads.items():
            p.grad = grad
    unused: list[str] = []
    inside: set[int] = set()  # modules within one already listed
    for name, module in encoder.named_modules():
        if module is encoder or id(module) in inside:
            continue
        params = list(module.parameters())
        if params and not any(p in used for p in params):
            unused.append(name)
            inside.update(id(m) for m in module.modules())
    return unused
