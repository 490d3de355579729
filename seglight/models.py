"""Build a segmentation network by name: every smp architecture/encoder, plus torchvision's models.

Why by hand: smp and torchvision each build their own models, but neither gives one entry point for
both, nor errors a config user can act on (smp raises KeyError with 70 names; an offline
`encoder_weights: imagenet` retries the network for ~20 s and ends in a Hugging Face traceback).
"""

import inspect
from pathlib import Path
from typing import Any

import segmentation_models_pytorch as smp
import torch
from torch import nn
from torchvision.models import segmentation as tv_seg

from seglight.errors import ConfigError, did_you_mean

TORCHVISION_PREFIX = "torchvision."
# The classic torchvision recipes: name -> builder. Backbone is part of the name.
TORCHVISION_ARCHS = {
    "fcn_resnet50": tv_seg.fcn_resnet50,
    "fcn_resnet101": tv_seg.fcn_resnet101,
    "deeplabv3_resnet50": tv_seg.deeplabv3_resnet50,
    "deeplabv3_resnet101": tv_seg.deeplabv3_resnet101,
    "deeplabv3_mobilenet_v3_large": tv_seg.deeplabv3_mobilenet_v3_large,
    "lraspp_mobilenet_v3_large": tv_seg.lraspp_mobilenet_v3_large,
}

OFFLINE_HINT = (
    "set `encoder_weights: null` to train from scratch, or set it to the path of a local "
    "state-dict file (.pth/.pt/.safetensors) holding the encoder's weights"
)


class TorchvisionSegmentation(nn.Module):
    """torchvision's models return {"out": logits, "aux": ...}; this returns the logits tensor.

    forward: (B, in_channels, H, W) -> (B, num_classes, H, W). They upsample to the input size
    themselves, so any H, W works (output_stride 1: no padding needed).
    """

    output_stride = 1

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)["out"]


def smp_architectures() -> list[str]:
    """smp's architecture names as its classes spell them (Unet, DeepLabV3Plus, ...)."""
    return sorted(cls.__name__ for cls in smp.MODEL_ARCHITECTURES_MAPPING.values())


def available_architectures() -> list[str]:
    return smp_architectures() + [TORCHVISION_PREFIX + n for n in TORCHVISION_ARCHS]


def output_stride(model: nn.Module) -> int:
    """The factor H and W must be multiples of: 32 for most smp encoders, 1 for torchvision."""
    if hasattr(model, "encoder"):
        return int(model.encoder.output_stride)
    return int(getattr(model, "output_stride", 1))


def build_model(
    arch: str,
    encoder_name: str,
    encoder_weights: str | None,
    in_channels: int,
    num_classes: int,
    model_kwargs: dict[str, Any] | None = None,
) -> nn.Module:
    """Return a network mapping (B, in_channels, H, W) images to (B, num_classes, H, W) logits."""
    kwargs = dict(model_kwargs or {})
    if arch.startswith(TORCHVISION_PREFIX):
        return _build_torchvision(arch, encoder_weights, in_channels, num_classes, kwargs)
    return _build_smp(arch, encoder_name, encoder_weights, in_channels, num_classes, kwargs)


def _build_smp(arch, encoder_name, encoder_weights, in_channels, num_classes, kwargs) -> nn.Module:
    if arch.lower() not in smp.MODEL_ARCHITECTURES_MAPPING:
        raise ConfigError(
            f"model.arch: unknown architecture '{arch}'"
            f"{did_you_mean(arch, available_architectures())}."
            f" Available: {', '.join(available_architectures())}"
        )
    encoders = smp.encoders.get_encoder_names()
    if encoder_name not in encoders:
        raise ConfigError(
            f"model.encoder_name: unknown encoder '{encoder_name}'"
            f"{did_you_mean(encoder_name, encoders)}. See smp.encoders.get_encoder_names() for the "
            f"{len(encoders)} smp encoders, or use any timm encoder as 'tu-<timm name>'"
        )
    _check_kwargs(smp.MODEL_ARCHITECTURES_MAPPING[arch.lower()], arch, kwargs)
    local = _local_weights(encoder_weights)
    hub_weights = None if local else encoder_weights
    try:
        model = smp.create_model(
            arch,
            encoder_name=encoder_name,
            encoder_weights=hub_weights,
            in_channels=in_channels,
            classes=num_classes,
            **kwargs,
        )
    except TypeError as e:  # an unknown keyword in model_kwargs
        raise ConfigError(f"model.model_kwargs: {arch} does not accept them: {e}") from None
    except (KeyError, ValueError, AssertionError) as e:
        raise ConfigError(f"model: {arch} with encoder '{encoder_name}': {e}") from None
    except (OSError, RuntimeError) as e:  # network/cache failures from the weights download
        if hub_weights is None:
            raise
        raise ConfigError(
            f"model.encoder_weights: could not get '{hub_weights}' weights for encoder "
            f"'{encoder_name}' (no network, and not in the local cache): {type(e).__name__}. "
            f"To proceed, {OFFLINE_HINT}"
        ) from None
    if local:
        _load_encoder_state(model.encoder, local)
    return model


def _check_kwargs(cls: type, arch: str, kwargs: dict[str, Any]) -> None:
    """smp architectures take **kwargs and ignore what they do not know: a misspelled
    `decoder_chanels` would silently train the default decoder. Only named parameters pass."""
    params = inspect.signature(cls.__init__).parameters
    named = [n for n, p in params.items() if n != "self" and p.kind is not p.VAR_KEYWORD]
    owned = {"encoder_name", "encoder_weights", "in_channels", "classes"}
    for key in kwargs:
        if key in owned:
            raise ConfigError(f"model.model_kwargs.{key}: set it as a model argument instead")
        if key not in named:
            raise ConfigError(
                f"model.model_kwargs: {arch} has no argument '{key}'"
                f"{did_you_mean(key, named)}; it takes {', '.join(sorted(set(named) - owned))}"
            )


def _build_torchvision(arch, encoder_weights, in_channels, num_classes, kwargs) -> nn.Module:
    name = arch[len(TORCHVISION_PREFIX) :]
    if name not in TORCHVISION_ARCHS:
        raise ConfigError(
            f"model.arch: unknown torchvision model '{name}'"
            f"{did_you_mean(name, TORCHVISION_ARCHS)}. Available: {', '.join(TORCHVISION_ARCHS)}"
        )
    if in_channels != 3:
        raise ConfigError(f"model.in_channels: {arch} takes 3-channel images, got {in_channels}")
    if kwargs.pop("aux_loss", False):
        raise ConfigError("model.model_kwargs.aux_loss: the auxiliary head is not supported yet")
    local = _local_weights(encoder_weights)
    if encoder_weights not in (None, "imagenet") and not local:
        raise ConfigError(
            f"model.encoder_weights: {arch} takes null, 'imagenet' or a local file, "
            f"got '{encoder_weights}'"
        )
    # "DEFAULT" = the ImageNet backbone weights; torchvision reads them from torch.hub.get_dir()
    # when they are already there and only downloads otherwise.
    backbone = "DEFAULT" if encoder_weights == "imagenet" else None
    try:
        net = TORCHVISION_ARCHS[name](
            weights=None,
            weights_backbone=backbone,
            num_classes=num_classes,
            aux_loss=False,
            **kwargs,
        )
    except TypeError as e:
        raise ConfigError(f"model.model_kwargs: {arch} does not accept them: {e}") from None
    except (OSError, RuntimeError) as e:
        raise ConfigError(
            f"model.encoder_weights: could not get ImageNet backbone weights for {arch} "
            f"(not in {torch.hub.get_dir()}/checkpoints and no network): {type(e).__name__}. "
            f"To proceed, {OFFLINE_HINT}"
        ) from None
    if local:
        _load_encoder_state(net.backbone, local)
    return TorchvisionSegmentation(net)


def _local_weights(encoder_weights: str | None) -> Path | None:
    """A path-like `encoder_weights` means a local file; it must exist."""
    if encoder_weights is None or not any(s in encoder_weights for s in ("/", "\\", ".")):
        return None
    path = Path(encoder_weights).expanduser()
    if not path.is_file():
        raise ConfigError(f"model.encoder_weights: file not found: {path}")
    return path


def _load_encoder_state(encoder: nn.Module, path: Path) -> None:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ConfigError(f"model.encoder_weights: cannot read {path}: {e}") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    # Classification checkpoints carry a head the encoder does not have (e.g. fc.weight).
    own = encoder.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise ConfigError(
            f"model.encoder_weights: {path} does not match the encoder: {len(missing)} of its "
            f"tensors are missing, e.g. {missing[:3]}"
        )
    encoder.load_state_dict({k: state[k] for k in own})
