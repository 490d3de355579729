"""The parts of a built network that training treats differently: its encoder (frozen by
seglight.callbacks.FreezeEncoder, or trained at `model.encoder_lr_factor` times the learning
rate) and its decoder."""

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


def drop_unused_stages(encoder: nn.Module) -> int:
    """Replace by nn.Identity the stages of an smp encoder that `encoder_depth` < 5 leaves out
    (smp 0.6 builds them, never runs them): DDP refuses a model with parameters that never get a
    gradient, and checkpoints would carry them. Returns the parameters dropped."""
    depth, get_stages = getattr(encoder, "_depth", None), getattr(encoder, "get_stages", None)
    if depth is None or get_stages is None:
        return 0
    unused = [m for stride, modules in get_stages().items() if stride > 2**depth for m in modules]
    dropped = 0
    for module in unused:
        for name, parent in list(encoder.named_modules()):
            for child_name, child in list(parent.named_children()):
                if child is module:
                    dropped += sum(p.numel() for p in module.parameters())
                    setattr(parent, child_name, nn.Identity())
                    prefix = f"{name}.{child_name}" if name else child_name
                    encoder.seglight_dropped = [*getattr(encoder, "seglight_dropped", []), prefix]
    return dropped
