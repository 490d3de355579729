"""FreezeEncoder: a frozen encoder's weights and BatchNorm statistics stay as they were while
the decoder and head train; unfreezing at an epoch makes them train from then on; smp and
torchvision networks; one-line errors for what it cannot do."""

from types import SimpleNamespace

import lightning as L
import pytest
import torch

from seglight import SegmentationModule
from seglight.callbacks import FreezeEncoder
from seglight.callbacks.freezing import network_parts
from seglight.cli import main
from seglight.errors import ConfigError

from seglight_testing import QUICKSTART, ROOT, TINY

FREEZE_CONFIG = str(ROOT / "configs" / "callbacks" / "freeze_encoder.yaml")
# 8 training images in batches of 4: 2 optimizer steps an epoch; resnet18's first 3 stages.
FIT = [
    "fit", "--config", QUICKSTART, "--config", FREEZE_CONFIG, *TINY, "--trainer.max_epochs=2",
    "--model.model_kwargs={encoder_depth: 3, decoder_channels: [16, 8, 8]}",
    "--trainer.num_sanity_val_steps=0", "--trainer.callbacks.unfreeze_at_epoch=1",
]  # fmt: skip


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


class Probe(L.Callback):
    """The network's state_dict at the start and after each epoch; requires_grad and the
    encoder BatchNorm layers' mode seen during each epoch's steps."""

    def __init__(self) -> None:
        self.states: list[dict[str, torch.Tensor]] = []
        self.trainable: list[dict[str, bool]] = []
        self.bn_training: list[set[bool]] = []

    def on_train_start(self, trainer, pl_module) -> None:
        self.states.append(snapshot(pl_module.net))

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.bn_training.append(set())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        bns = [m for m in pl_module.net.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        self.bn_training[-1] |= {m.training for m in bns}

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.states.append(snapshot(pl_module.net))
        self.trainable.append({k: p.requires_grad for k, p in pl_module.net.named_parameters()})


def changed(before: dict, after: dict, prefix: str) -> dict[str, bool]:
    """{name: whether it moved by more than 1e-7} for the float tensors under `prefix`."""
    return {k: not torch.allclose(before[k], after[k], rtol=0, atol=1e-7)
            for k in before if k.startswith(prefix) and before[k].is_floating_point()}  # fmt: skip


def test_frozen_encoder_then_unfrozen_through_the_cli(in_tmp):
    cli = main([*FIT, "--trainer.callbacks+=test_freezing.Probe"])
    probe = next(cb for cb in cli.trainer.callbacks if type(cb).__name__ == "Probe")
    start, epoch0, epoch1 = probe.states
    # epoch 0: encoder frozen, its BatchNorm in eval mode, weights and running stats unchanged
    assert not any(v for k, v in probe.trainable[0].items() if k.startswith("encoder."))
    assert all(v for k, v in probe.trainable[0].items() if not k.startswith("encoder."))
    assert probe.bn_training[0] == {False}
    frozen = changed(start, epoch0, "encoder.")
    assert any(k.endswith("running_mean") for k in frozen) and not any(frozen.values())
    assert all(changed(start, epoch0, "decoder.").values())
    assert any(changed(start, epoch0, "segmentation_head.").values())
    # epoch 1: unfrozen; weights and BatchNorm statistics train
    assert all(probe.trainable[1].values()) and probe.bn_training[1] == {True}
    moved = changed(epoch0, epoch1, "encoder.")
    unused = ("encoder.layer3.", "encoder.layer4.")  # kept by smp at encoder_depth 3, not run
    moved = {k: v for k, v in moved.items() if not k.startswith(unused)}
    assert [k for k, v in moved.items() if not v and k.endswith(("weight", "running_mean"))] == []
    # and `test` runs with the callback still in the config
    test = main(["test", *FIT[1:], "--ckpt_path=last"])
    assert test.trainer.state.finished


def test_frozen_decoder_and_train_bn():
    module = SegmentationModule(model_kwargs={"encoder_depth": 3, "decoder_channels": [8, 8, 8]})
    FreezeEncoder(freeze_decoder=True, train_bn=True).freeze_before_training(module)
    net = module.net
    assert all(p.requires_grad for p in net.segmentation_head.parameters())
    bns = 0
    for part in (net.encoder, net.decoder):  # only their BatchNorm layers train
        for layer in part.modules():
            bns += isinstance(layer, torch.nn.BatchNorm2d)
            for p in layer.parameters(recurse=False):
                assert p.requires_grad == isinstance(layer, torch.nn.BatchNorm2d), layer
    assert bns > 10


def test_torchvision_backbone():
    module = SegmentationModule(arch="torchvision.lraspp_mobilenet_v3_large", num_classes=3)
    encoder, decoder = network_parts(module)
    assert encoder is module.net.net.backbone and decoder is None
    FreezeEncoder().freeze_before_training(module)
    assert not any(p.requires_grad for p in module.net.net.backbone.parameters())
    assert all(p.requires_grad for p in module.net.net.classifier.parameters())
    with pytest.raises(ConfigError, match="torchvision.lraspp_mobilenet_v3_large.*no decoder"):
        FreezeEncoder(freeze_decoder=True).freeze_before_training(module)


def test_one_line_errors():
    with pytest.raises(ConfigError, match="unfreeze_at_epoch: must be >= 1"):
        FreezeEncoder(unfreeze_at_epoch=0)
    module = SegmentationModule(model_kwargs={"encoder_depth": 3, "decoder_channels": [8, 8, 8]})
    with pytest.raises(ConfigError, match="not supported with several processes"):
        FreezeEncoder(unfreeze_at_epoch=2).setup(SimpleNamespace(world_size=2), module, "fit")
    module.net = torch.nn.Conv2d(3, 2, 1)  # a network without encoder/backbone
    with pytest.raises(
        ConfigError, match="FreezeEncoder: model.arch 'Unet' has no separate encoder"
    ):
        FreezeEncoder().freeze_before_training(module)
