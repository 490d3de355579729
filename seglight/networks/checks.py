"""Checks of an smp/timm network request, and the one-line errors a config user can act on
(smp raises KeyError with 70 names, timm a traceback deep inside its feature extraction)."""

import inspect
import math
from typing import Any

import segmentation_models_pytorch as smp
import timm
import torch
from torch import nn

from seglight.errors import ConfigError, did_you_mean

TIMM_PREFIX = "tu-"
# Encoders to suggest when one does not fit (all build offline, all small).
HIERARCHICAL_EXAMPLES = "resnet18, tu-resnet18, tu-convnext_atto, tu-efficientnet_b0"
DPT_EXAMPLES = "tu-vit_tiny_patch16_224, tu-vit_small_patch16_224, tu-deit_small_patch16_224"


def check_encoder(arch: str, encoder_name: str) -> str | None:
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


def check_kwargs(cls: type, arch: str, kwargs: dict[str, Any], timm_name: str | None) -> list[str]:
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


def default_dynamic_size(timm_name: str, kwargs: dict[str, Any]) -> None:
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


def type_error_message(
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
            f"one timm's '{timm_name}' takes ({first_line(e)})"
        )
    return f"model.model_kwargs: {arch} with encoder '{encoder_name}' does not accept them: {e}"


def value_error_message(arch: str, encoder_name: str, timm_name: str | None, e: Exception) -> str:
    text = first_line(e)
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


def check_dpt_strides(model: nn.Module, encoder_name: str) -> None:
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


def first_line(e: BaseException, limit: int = 300) -> str:
    """An exception's message as one line of at most `limit` characters."""
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
