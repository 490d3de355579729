"""torchvision's segmentation models (FCN, DeepLabV3, LR-ASPP) as `arch: torchvision.<name>`."""

import torch
from torch import nn
from torchvision.models import segmentation as tv_seg

from seglight.errors import ConfigError, did_you_mean
from seglight.networks.encoder_weights import OFFLINE_HINT, load_encoder_state, local_weights

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


def build_torchvision(arch, encoder_weights, in_channels, num_classes, kwargs) -> nn.Module:
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
    local = local_weights(encoder_weights)
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
        load_encoder_state(net.backbone, local)
    return TorchvisionSegmentation(net)
