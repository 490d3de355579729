"""Build a segmentation network by name: every smp architecture/encoder, plus torchvision's models.

Why by hand: smp and torchvision each build their own models, but neither gives one entry point for
both, nor errors a config user can act on (smp raises KeyError with 70 names; an offline
`encoder_weights: imagenet` retries the network for ~20 s and ends in a Hugging Face traceback).
Any timm model is an encoder as `tu-<timm name>`. Inputs a network cannot take are checked in
seglight/input_check.py; request checks and their messages are in checks.py, torchvision in
torchvision_models.py, local encoder weights in encoder_weights.py.
"""

import math
from typing import Any

import segmentation_models_pytorch as smp
import timm
from torch import nn

from seglight.errors import ConfigError, did_you_mean
from seglight.input_check import check_logits_size
from seglight.networks.checks import (
    DPT_EXAMPLES,
    HIERARCHICAL_EXAMPLES,
    TIMM_PREFIX,
    check_dpt_strides,
    check_encoder,
    check_kwargs,
    default_dynamic_size,
    first_line,
    type_error_message,
    value_error_message,
)
from seglight.networks.encoder_weights import OFFLINE_HINT, load_encoder_state, local_weights
from seglight.networks.parts import drop_unused_modules
from seglight.networks.torchvision_models import (
    TORCHVISION_ARCHS,
    TORCHVISION_PREFIX,
    TorchvisionSegmentation,
    build_torchvision,
)


def smp_architectures() -> list[str]:
    """smp's architecture names as its classes spell them (Unet, DeepLabV3Plus, ...)."""
    return sorted(cls.__name__ for cls in smp.MODEL_ARCHITECTURES_MAPPING.values())


def available_architectures() -> list[str]:
    return smp_architectures() + [TORCHVISION_PREFIX + n for n in TORCHVISION_ARCHS]


def output_stride(model: nn.Module) -> int:
    """The factor H and W must be multiples of: 32 for most smp encoders, 1 for torchvision.

    DPT also needs it: its decoder resamples the ViT's patch grid to 1/4 ... 1/2**(depth+1) of
    the input and fuses them by factors of 2, so H and W must be multiples of both the patch
    size and 2**(depth+1) (32 for a patch-16 ViT at the default depth 4, not 16)."""
    if not hasattr(model, "encoder"):
        return int(getattr(model, "output_stride", 1))
    stride = int(model.encoder.output_stride)
    if isinstance(model, smp.DPT):
        stride = math.lcm(stride, 2 ** (len(model.encoder.output_strides) + 1))
    return stride


_UNUSED: dict[str, list[str]] = {}  # build arguments -> the encoder's modules dropped


def build_model(
    arch: str,
    encoder_name: str,
    encoder_weights: str | None,
    in_channels: int,
    num_classes: int,
    model_kwargs: dict[str, Any] | None = None,
) -> nn.Module:
    """Return a network mapping (B, in_channels, H, W) images to (B, num_classes, H, W) logits.

    A timm ViT-style encoder with a fixed input size (e.g. tu-vit_tiny_patch16_224) gets
    `dynamic_img_size: true` unless model_kwargs set `img_size` or `dynamic_img_size`, so it takes
    any H, W that are multiples of the output stride (its position embedding is interpolated)."""
    kwargs = dict(model_kwargs or {})
    for name, value in (("in_channels", in_channels), ("num_classes", num_classes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"model.{name}: must be a whole number >= 1, got {value!r}")
    if arch.startswith(TORCHVISION_PREFIX):
        model = build_torchvision(arch, encoder_weights, in_channels, num_classes, kwargs)
        model.seglight_name = arch
    else:
        model = _build_smp(arch, encoder_name, encoder_weights, in_channels, num_classes, kwargs)
        model.seglight_name = f"{arch} with encoder '{encoder_name}'"
    model.seglight_in_channels = in_channels  # for InputCheck's one-line channel error
    model.register_forward_hook(check_logits_size)
    return model


def _build_smp(arch, encoder_name, encoder_weights, in_channels, num_classes, kwargs) -> nn.Module:
    if arch.lower() not in smp.MODEL_ARCHITECTURES_MAPPING:
        raise ConfigError(
            f"model.arch: unknown architecture '{arch}'"
            f"{did_you_mean(arch, available_architectures())}."
            f" Available: {', '.join(available_architectures())}"
        )
    arch = smp.MODEL_ARCHITECTURES_MAPPING[arch.lower()].__name__  # smp's spelling, for messages
    timm_name = check_encoder(arch, encoder_name)
    cls = smp.MODEL_ARCHITECTURES_MAPPING[arch.lower()]
    timm_kwargs = check_kwargs(cls, arch, kwargs, timm_name)
    if timm_name:
        default_dynamic_size(timm_name, kwargs)
    local = local_weights(encoder_weights)
    hub_weights = None if local else encoder_weights
    if timm_name and hub_weights not in (None, "imagenet"):
        raise ConfigError(
            f"model.encoder_weights: timm encoders take null, 'imagenet' (timm's default weights "
            f"for '{timm_name}') or a local file, got '{hub_weights}'; other timm weights are "
            f"named by a tag in encoder_name, e.g. tu-resnet18.a1_in1k"
        )
    if timm_name and hub_weights:
        cfg = timm.get_pretrained_cfg(timm_name)
        if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
            raise ConfigError(
                f"model.encoder_weights: timm has no pretrained weights for '{timm_name}': set "
                f"`encoder_weights: null`, or pick a model timm.list_pretrained() names"
            )
    try:
        model = smp.create_model(
            arch,
            encoder_name=encoder_name,
            # timm encoders take True/None (smp warns on a string): the tag in the name picks them
            encoder_weights=True if timm_name and hub_weights else hub_weights,
            in_channels=in_channels,
            classes=num_classes,
            **kwargs,
        )
    except TypeError as e:  # an unknown keyword in model_kwargs, or one the encoder lacks
        message = type_error_message(arch, encoder_name, timm_name, timm_kwargs, e)
        raise ConfigError(message) from None
    except (OSError, RuntimeError) as e:  # network/cache failures from the weights download
        if hub_weights is None:
            if not timm_name:
                raise
            raise ConfigError(
                f"model.encoder_name: timm cannot build '{timm_name}' as an encoder for {arch}: "
                f"{first_line(e)}. Encoders that fit: {HIERARCHICAL_EXAMPLES}"
            ) from None
        raise ConfigError(
            f"model.encoder_weights: could not get '{hub_weights}' weights for encoder "
            f"'{encoder_name}' (no network, and not in the local cache): {type(e).__name__}. "
            f"To proceed, {OFFLINE_HINT}"
        ) from None
    except (KeyError, ValueError, AssertionError) as e:
        raise ConfigError(value_error_message(arch, encoder_name, timm_name, e)) from None
    if isinstance(model, smp.DPT):
        check_dpt_strides(model, encoder_name)
    if local:
        load_encoder_state(model.encoder, local)
    # after loading (weight files hold every stage); the probe runs once per way of building
    key = repr((arch, encoder_name, in_channels, kwargs))
    _UNUSED[key] = drop_unused_modules(model.encoder, _UNUSED.get(key))
    return model


__all__ = [
    "DPT_EXAMPLES",
    "HIERARCHICAL_EXAMPLES",
    "OFFLINE_HINT",
    "TIMM_PREFIX",
    "TORCHVISION_ARCHS",
    "TORCHVISION_PREFIX",
    "TorchvisionSegmentation",
    "available_architectures",
    "build_model",
    "output_stride",
    "smp_architectures",
]
