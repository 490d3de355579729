"""Build a segmentation network by name: every smp architecture/encoder, plus torchvision's models.

Why by hand: smp and torchvision each build their own models, but neither gives one entry point for
both, nor errors a config user can act on (smp raises KeyError with 70 names; an offline
`encoder_weights: imagenet` retries the network for ~20 s and ends in a Hugging Face traceback).
Any timm model is an encoder as `tu-<timm name>`. Inputs a network cannot take are checked in
seglight/input_check.py.
"""

import inspect
import math
from pathlib import Path
from typing import Any

import segmentation_models_pytorch as smp
import timm
import torch
from segmentation_models_pytorch.encoders import TimmUniversalEncoder, TimmViTEncoder
from torch import nn
from torchvision.models import segmentation as tv_seg

from seglight.errors import ConfigError, did_you_mean
from seglight.input_check import check_logits_size

TIMM_PREFIX = "tu-"
# Encoders to suggest when one does not fit (all build offline, all small).
HIERARCHICAL_EXAMPLES = "resnet18, tu-resnet18, tu-convnext_atto, tu-efficientnet_b0"
DPT_EXAMPLES = "tu-vit_tiny_patch16_224, tu-vit_small_patch16_224, tu-deit_small_patch16_224"

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
        model = _build_torchvision(arch, encoder_weights, in_channels, num_classes, kwargs)
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
    timm_name = _check_encoder(arch, encoder_name)
    cls = smp.MODEL_ARCHITECTURES_MAPPING[arch.lower()]
    timm_kwargs = _check_kwargs(cls, arch, kwargs, timm_name)
    if timm_name:
        _default_dynamic_size(timm_name, kwargs)
    local = _local_weights(encoder_weights)
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
        message = _type_error_message(arch, encoder_name, timm_name, timm_kwargs, e)
        raise ConfigError(message) from None
    except (OSError, RuntimeError) as e:  # network/cache failures from the weights download
        if hub_weights is None:
            if not timm_name:
                raise
            raise ConfigError(
                f"model.encoder_name: timm cannot build '{timm_name}' as an encoder for {arch}: "
                f"{_first_line(e)}. Encoders that fit: {HIERARCHICAL_EXAMPLES}"
            ) from None
        raise ConfigError(
            f"model.encoder_weights: could not get '{hub_weights}' weights for encoder "
            f"'{encoder_name}' (no network, and not in the local cache): {type(e).__name__}. "
            f"To proceed, {OFFLINE_HINT}"
        ) from None
    except (KeyError, ValueError, AssertionError) as e:
        raise ConfigError(_value_error_message(arch, encoder_name, timm_name, e)) from None
    if isinstance(model, smp.DPT):
        _check_dpt_strides(model, encoder_name)
    if local:
        _load_encoder_state(model.encoder, local)
    return model


def _check_encoder(arch: str, encoder_name: str) -> str | None:
    """The timm model name of a `tu-` encoder (None for smp's own encoders), once it is known
    to exist; an unknown name or a DPT without a timm encoder is a one-line ConfigError."""
    if encoder_name.startswith(TIMM_PREFIX):
        timm_name = encoder_name[len(TIMM_PREFIX) :]
        base, _, tag = timm_name.partition(".")
        if not timm.is_model(base):
            names = [TIMM_PREFIX + n for n in timm.list_models()]
            raise ConfigError(
                f"model.encoder_name: timm has no model '{base}'"
                f"{did_you_mean(TIMM_PREFIX + base, names)}. List them with "
                f"timm.list_models('<pattern>'), e.g. timm.list_models('convnext*')"
            )
        if tag:
            try:
                timm.get_pretrained_cfg(timm_name)
            except RuntimeError:
                tags = timm.list_pretrained(f"{base}.*")
                raise ConfigError(
                    f"model.encoder_name: timm has no weights '{tag}' for '{base}'"
                    f"{did_you_mean(timm_name, tags)}. Its tags: {', '.join(tags) or 'none'}"
                ) from None
        return timm_name
    if arch == "DPT":
        raise ConfigError(
            f"model.encoder_name: DPT takes a timm ViT-style encoder ('tu-<timm name>'), got "
            f"'{encoder_name}'. Encoders that fit: {DPT_EXAMPLES}"
        )
    encoders = smp.encoders.get_encoder_names()
    if encoder_name not in encoders:
        close = did_you_mean(encoder_name, encoders)
        if not close and timm.is_model(encoder_name.partition(".")[0]):
            close = f" (did you mean '{TIMM_PREFIX}{encoder_name}'?)"  # a timm name without tu-
        raise ConfigError(
            f"model.encoder_name: unknown encoder '{encoder_name}'"
            f"{close}. See smp.encoders.get_encoder_names() for the "
            f"{len(encoders)} smp encoders, or use any timm encoder as 'tu-<timm name>'"
        )
    return None


def _check_kwargs(cls: type, arch: str, kwargs: dict[str, Any], timm_name: str | None) -> list[str]:
    """smp architectures take **kwargs and ignore what they do not know: a misspelled
    `decoder_chanels` would silently train the default decoder. Only named parameters pass,
    except for timm encoders, which get the others (e.g. drop_path_rate): returns their keys."""
    params = inspect.signature(cls.__init__).parameters
    named = [n for n, p in params.items() if n != "self" and p.kind is not p.VAR_KEYWORD]
    owned = {"encoder_name", "encoder_weights", "in_channels", "classes"}
    extra = []
    for key in kwargs:
        if key in owned:
            raise ConfigError(f"model.model_kwargs.{key}: set it as a model argument instead")
        if key == "aux_params" and kwargs[key] is not None:
            raise ConfigError(
                "model.model_kwargs.aux_params: the auxiliary classification head is not "
                "supported (the network must return the segmentation logits only); remove it"
            )
        if key == "activation" and kwargs[key] not in (None, "identity"):
            raise ConfigError(
                f"model.model_kwargs.activation: the losses and metrics take logits, so the "
                f"network must not apply {kwargs[key]!r}; remove it"
            )
        if key not in named:
            if timm_name:  # smp passes it on to timm.create_model, which refuses unknown ones
                extra.append(key)
                continue
            raise ConfigError(
                f"model.model_kwargs: {arch} has no argument '{key}'"
                f"{did_you_mean(key, named)}; it takes {', '.join(sorted(set(named) - owned))}"
            )
    return extra


def _default_dynamic_size(timm_name: str, kwargs: dict[str, Any]) -> None:
    """ViT-style timm models take one image size (224 for most); with dynamic_img_size they take
    any multiple of the patch size. Set it when the user chose neither, and the model has it."""
    if "img_size" in kwargs or "dynamic_img_size" in kwargs:
        return
    cfg = timm.get_pretrained_cfg(timm_name)
    if cfg is None or not getattr(cfg, "fixed_input_size", False):
        return
    try:
        with torch.device("meta"):  # no memory, no weights: only whether it takes the argument
            timm.create_model(timm_name, dynamic_img_size=True)
    except Exception:  # noqa: BLE001 - any failure: leave the model as the user asked for it
        return
    kwargs["dynamic_img_size"] = True


def _type_error_message(
    arch: str, encoder_name: str, timm_name: str | None, timm_kwargs: list[str], e: TypeError
) -> str:
    text = str(e)
    if timm_name and "'output_stride'" in text:  # DeepLabV3/V3Plus/PAN dilate their encoder
        pan = " or model_kwargs.encoder_output_stride: 32 (no dilation)" if arch == "PAN" else ""
        return (
            f"model.encoder_name: {arch} dilates its encoder (output stride 8 or 16), which "
            f"timm's '{timm_name}' does not support: use an encoder that does (e.g. "
            f"{HIERARCHICAL_EXAMPLES}){pan}, or an architecture without dilation (Unet, FPN, "
            f"UPerNet, Segformer)"
        )
    if timm_kwargs and any(f"'{k}'" in text for k in timm_kwargs):
        return (
            f"model.model_kwargs: {', '.join(timm_kwargs)} is neither an argument of {arch} nor "
            f"one timm's '{timm_name}' takes ({_first_line(e)})"
        )
    return f"model.model_kwargs: {arch} with encoder '{encoder_name}' does not accept them: {e}"


def _value_error_message(arch: str, encoder_name: str, timm_name: str | None, e: Exception) -> str:
    text = _first_line(e)
    if timm_name and "downsampling pattern" in text:  # smp's TimmUniversalEncoder
        strides = _timm_reductions(timm_name)
        fits = f"ViTs fit DPT ({DPT_EXAMPLES}); " if arch != "DPT" else ""
        return (
            f"model.encoder_name: timm's '{timm_name}' gives features at strides {strides}, but "
            f"{arch} needs a multi-scale encoder (strides 2, 4, 8, 16, 32 or 4, 8, 16, 32): "
            f"{fits}encoders that fit {arch}: {HIERARCHICAL_EXAMPLES}"
        )
    return f"model: {arch} with encoder '{encoder_name}': {text}"


def _timm_reductions(timm_name: str) -> list[int] | str:
    try:
        with torch.device("meta"):
            return timm.create_model(timm_name, features_only=True).feature_info.reduction()
    except Exception:  # noqa: BLE001 - only for a message
        return "that are not a 2x pyramid"


def _check_dpt_strides(model: nn.Module, encoder_name: str) -> None:
    """DPT resamples each feature map by stride / 2**(i+2) with integer conv kernels: a factor
    that is not a power of 2 (a patch-14 ViT: 3.5) builds but fails in every forward."""
    strides = model.encoder.output_strides
    for i, stride in enumerate(strides):
        factor = stride / 2 ** (i + 2)
        if math.log2(factor) != round(math.log2(factor)):
            raise ConfigError(
                f"model.encoder_name: DPT needs an encoder whose features have power-of-2 "
                f"strides (a ViT with patch size 8 or 16); '{encoder_name}' has {strides}. "
                f"Encoders that fit: {DPT_EXAMPLES}"
            )


def _first_line(e: BaseException, limit: int = 300) -> str:
    """An exception's message as one line of at most `limit` characters."""
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
    if not isinstance(state, dict):
        raise ConfigError(
            f"model.encoder_weights: {path} holds a {type(state).__name__}, not a state dict"
        )
    # A timm encoder wraps the timm model as `.model`; timm's own files name its tensors bare.
    timm_encoder = isinstance(encoder, TimmUniversalEncoder | TimmViTEncoder)
    if timm_encoder and not any(k.startswith("model.") for k in state):
        encoder = encoder.model
    # Classification checkpoints carry a head the encoder does not have (e.g. fc.weight).
    own = encoder.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise ConfigError(
            f"model.encoder_weights: {path} does not match the encoder: {len(missing)} of its "
            f"tensors are missing, e.g. {missing[:3]}"
        )
    for key, value in own.items():
        theirs = tuple(getattr(state[key], "shape", ()))
        if theirs != tuple(value.shape):
            raise ConfigError(
                f"model.encoder_weights: {path} does not match the encoder: '{key}' has shape "
                f"{list(theirs)} in the file, {list(value.shape)} in the model (the file is for "
                f"another encoder, or another model.in_channels)"
            )
    encoder.load_state_dict({k: state[k] for k in own})
