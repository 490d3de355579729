"""Ensemble: several trained networks tested or predicted with as one (the fold models of `seglight
cv`, or the runs of `seglight seeds`).

    python -m seglight test --config configs/quickstart.yaml --model=seglight.ensemble.Ensemble \\
        --model.checkpoints='[fold_0/best.ckpt, fold_1/best.ckpt, fold_2/best.ckpt]'

Each member's network is loaded from its checkpoint (seglight.checkpoints.load_module); the
ensemble's logits are those of the members' averaged probabilities (softmax for multiclass,
sigmoid for binary / multi-label: the task's `activation`), returned as logits, log(p) or
log(p / (1 - p)), so that everything downstream of a SegmentationModule's logits (metrics,
thresholds, eval_protocol, MaskWriter) works unchanged. Meant for test / validate / predict.
"""

import contextvars
import math
from typing import Any

import torch
from torch import nn

from seglight.checkpoints import (
    build_module,
    check_seglight_checkpoint,
    module_class,
    read_checkpoint,
)
from seglight.errors import ConfigError
from seglight.module import SegmentationModule

EPS = 1e-6  # probabilities are clamped to [EPS, 1 - EPS] before their log


class AveragedNetworks(nn.Module):
    """images (B, C, H, W) -> logits (B, K, H, W) of the members' mean probability."""

    def __init__(self, networks: list[nn.Module], activation: str) -> None:
        super().__init__()
        self.members = nn.ModuleList(networks)
        self.activation = activation

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        total = None
        for net in self.members:
            logits = net(images).float()
            p = logits.softmax(1) if self.activation == "softmax" else logits.sigmoid()
            total = p if total is None else total + p
        p = (total / len(self.members)).clamp(EPS, 1 - EPS)
        return p.log() if self.activation == "softmax" else torch.log(p / (1 - p))


class Ensemble(SegmentationModule):
    """The mean probability of several trained seglight models (seglight.ensemble).

    Args:
        checkpoints: seglight checkpoint files whose networks are averaged; each must have the
            task's output channels (num_classes, or 1 for binary) and input channels.
        **kwargs: SegmentationModule's arguments (task, threshold, eval_protocol, ...); its
            network arguments (arch, encoder_name, ...) are not used: each member brings its own.
    """

    def __init__(self, checkpoints: list[str], **kwargs: Any) -> None:
        if not checkpoints:
            raise ConfigError("model.checkpoints: list at least one checkpoint file")
        self._checkpoints = [str(c) for c in checkpoints]  # read by configure_models
        super().__init__(**kwargs)

    def configure_models(self) -> None:
        networks, strides = [], []
        for path in self._checkpoints:
            # In an empty context: the CLI instantiating this ensemble sets a context variable
            # that every module built meanwhile would take its hyper-parameters from.
            member = contextvars.Context().run(_load_member, path)
            if member.out_channels != self.out_channels or member.task != self.task:
                raise ConfigError(
                    f"model.checkpoints: {path} is a {member.task} model of {member.out_channels} "
                    f"output channels; this ensemble is {self.task} with {self.out_channels}"
                )
            networks.append(member.net.cpu())
            strides.append(int(member.stride))
        self.net = AveragedNetworks(networks, self.spec.activation)
        self.stride = math.lcm(*strides)  # a side every member can take


def _load_member(path: str) -> SegmentationModule:
    """The module of a checkpoint file, built from its saved arguments (not through the CLI's
    `_instantiator`, which would parse them against the ensemble's own config)."""
    what = "model.checkpoints"
    checkpoint = read_checkpoint(path, what)
    check_seglight_checkpoint(path, checkpoint, what)
    cls = module_class(checkpoint, path, what, SegmentationModule)
    checkpoint["hyper_parameters"] = dict(checkpoint.get("hyper_parameters") or {})
    checkpoint["hyper_parameters"].pop("_instantiator", None)
    overrides = {"compile": None, "channels_last": False}  # the ensemble's own apply
    return build_module(cls, checkpoint, None, overrides, f"{what}: {path}")
