"""model.encoder_lr_factor: the encoder's parameters train at factor x the learning rate, under
the same schedule; everything else at the learning rate; a bad value is one line."""

import functools

import pytest
import torch

from seglight import SegmentationModule
from seglight.cli import main
from seglight.errors import ConfigError

from seglight_testing import QUICKSTART, TINY

SMALL = {"encoder_depth": 3, "decoder_channels": [8, 8, 8]}


def test_one_sgd_step_moves_the_encoder_by_the_factor():
    sgd = functools.partial(torch.optim.SGD, lr=0.1)  # no momentum, no decay: delta = -lr * grad
    module = SegmentationModule(
        num_classes=3, model_kwargs=SMALL, optimizer=sgd, encoder_lr_factor=0.25
    )
    optimizer = module.configure_optimizers()
    assert [g["lr"] for g in optimizer.param_groups] == [0.1, 0.1 * 0.25]
    encoder_ids = {id(p) for p in module.net.encoder.parameters()}
    assert {id(p) for p in optimizer.param_groups[1]["params"]} == encoder_ids
    every = [p for g in optimizer.param_groups for p in g["params"]]
    assert len(every) == len(list(module.parameters())) == len({id(p) for p in every})

    torch.manual_seed(0)
    images, masks = torch.randn(2, 3, 32, 32), torch.randint(0, 3, (2, 32, 32))
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    module.compute_loss(module(images), masks)["loss"].backward()
    # (parameters outside the forward pass have no gradient: SGD leaves them)
    grads = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
    optimizer.step()
    for name, p in module.named_parameters():
        lr = 0.1 * 0.25 if name.startswith("net.encoder.") else 0.1
        expected = -lr * grads[name] if name in grads else torch.zeros_like(p)
        torch.testing.assert_close(p.detach() - before[name], expected)
    moved = [n for n in grads if n.startswith("net.encoder.") and grads[n].abs().sum() > 0]
    assert len(moved) > 10


def test_the_schedule_keeps_the_ratio_through_fit(in_tmp):
    cli = main([
        "fit", "--config", QUICKSTART, *TINY, "--trainer.max_epochs=2",
        "--trainer.num_sanity_val_steps=0", "--model.encoder_lr_factor=0.1",
        "--model.model_kwargs={encoder_depth: 3, decoder_channels: [16, 8, 8]}",
    ])  # fmt: skip
    optimizer = cli.trainer.optimizers[0]
    rest, encoder = optimizer.param_groups
    assert encoder["initial_lr"] == pytest.approx(0.1 * rest["initial_lr"], rel=1e-12)
    assert 0 < rest["lr"] < rest["initial_lr"]  # PolyLR has stepped
    assert encoder["lr"] == pytest.approx(0.1 * rest["lr"], rel=1e-12)
    assert cli.model.hparams.encoder_lr_factor == 0.1
    logged = cli.trainer.callback_metrics  # LearningRateMonitor: one entry per named group
    assert float(logged["lr-AdamW/encoder"]) == pytest.approx(0.1 * float(logged["lr-AdamW/rest"]))


def test_torchvision_backbone_is_the_encoder_group():
    module = SegmentationModule(
        arch="torchvision.lraspp_mobilenet_v3_large", num_classes=3, encoder_lr_factor=0.5
    )
    groups = module.configure_optimizers().param_groups
    assert {id(p) for p in groups[1]["params"]} == {
        id(p) for p in module.net.net.backbone.parameters()
    }
    assert groups[1]["lr"] == pytest.approx(0.5 * groups[0]["lr"])


def test_one_group_by_default_and_one_line_errors():
    assert len(SegmentationModule(model_kwargs=SMALL).configure_optimizers().param_groups) == 1
    with pytest.raises(ConfigError, match="model.encoder_lr_factor: must be > 0; got 0.*Freeze"):
        SegmentationModule(model_kwargs=SMALL, encoder_lr_factor=0)
