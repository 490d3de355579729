"""Inputs a network cannot take end in one line, never a traceback from deep inside torch/smp.

A fuzz over the model options: every smp architecture at small and odd sizes, training batches
of one image, in_channels against the images' channels. Each case gives logits of the input's
size or a ConfigError of one line naming the argument to change; any other exception fails.
"""

import pytest
import torch
from torch import nn

from seglight.errors import ConfigError
from seglight.input_check import InputCheck, forward_checked, min_input_size
from seglight.module import SegmentationModule
from seglight.networks import build_model, output_stride, smp_architectures

# Each architecture's own decoder, made small. Encoders: a tiny timm MobileNetV3 for the fast
# tests (every architecture takes timm encoders), smp's resnet18 (the default) where named; DPT
# takes only timm ViT-style encoders: the smallest timm ViT.
SMALL = {
    "DPT": {"decoder_intermediate_channels": [16, 16, 16, 16], "decoder_fusion_channels": 16},
    "DeepLabV3": {"decoder_channels": 16},
    "DeepLabV3Plus": {"decoder_channels": 16},
    "FPN": {"decoder_pyramid_channels": 16, "decoder_segmentation_channels": 32},
    "Linknet": {},
    "MAnet": {"decoder_channels": [16, 8, 8, 8, 8], "decoder_pab_channels": 8},
    "PAN": {"decoder_channels": 16},
    "PSPNet": {"psp_out_channels": 16},
    "Segformer": {"decoder_segmentation_channels": 16},
    "UPerNet": {"decoder_channels": 16},
    "Unet": {"decoder_channels": [16, 8, 8, 8, 8]},
    "UnetPlusPlus": {"decoder_channels": [16, 8, 8, 8, 8]},
}


def small_module(
    arch: str, in_channels: int = 3, encoder: str = "tu-mobilenetv3_small_050"
) -> SegmentationModule:
    torch.manual_seed(0)
    return SegmentationModule(
        arch=arch,
        encoder_name="tu-vit_tiny_patch16_224" if arch == "DPT" else encoder,
        in_channels=in_channels,
        num_classes=3,
        model_kwargs=SMALL[arch],
    )


def logits_or_one_line_error(module: SegmentationModule, shape: tuple, train: bool) -> str:
    """'ok' when the logits have the input's size, else the ConfigError's message (one line)."""
    module.train(train)
    images = torch.randn(shape)
    try:
        with torch.set_grad_enabled(train):
            logits = module(images)
    except ConfigError as e:
        message = str(e)
        assert "\n" not in message and message.split(":")[0] in (
            "model.arch",
            "model.in_channels",
            "data.batch_size",
        ), message
        return message
    assert logits.shape == (shape[0], 3, *shape[2:])
    return "ok"


def test_every_architecture_is_covered():
    assert set(SMALL) == set(smp_architectures())


# Cases every architecture goes through: (batch, H, W, train). 50x70 (one image, as validation
# runs them) is padded to the output stride, and is below PAN's smallest input; a training batch
# of one image breaks the BatchNorm after global pooling (DeepLabV3, DeepLabV3Plus, UPerNet).
CASES = [(1, 50, 70, False), (1, 64, 64, True)]


@pytest.mark.parametrize("arch", sorted(SMALL))
def test_small_inputs_give_logits_or_one_line(arch):
    in_channels = (1, 3, 4)[sorted(SMALL).index(arch) % 3]  # all three counts over the archs
    module = small_module(arch, in_channels)
    results = [logits_or_one_line_error(module, (b, in_channels, h, w), t) for b, h, w, t in CASES]
    if arch == "PAN":  # its pyramid halves the 1/16 feature map three times: 1/128
        assert all("model.arch: PAN with encoder 'tu-mobilenetv3_small_050' needs images of "
                   "at least 128x128" in r for r in results), results  # fmt: skip
    elif arch in ("DeepLabV3", "DeepLabV3Plus", "UPerNet"):  # BatchNorm after global pooling
        assert results[0] == "ok" and "use a batch size of 2 or more" in results[1]
    else:
        assert results == ["ok", "ok"]
    # Images with another channel count than model.in_channels: one line saying what to set.
    other = 3 if in_channels != 3 else 4
    with pytest.raises(ConfigError, match=f"have {other} channels.*--model.in_channels={other}"):
        module(torch.randn(2, other, 64, 64))


def test_pan_on_64px_names_the_smallest_size_and_the_fix():
    module = small_module("PAN", encoder="resnet18")  # the case: the default encoder
    with pytest.raises(ConfigError) as error:
        module.train()(torch.randn(2, 3, 64, 64))
    message = str(error.value)
    assert message.startswith("model.arch: PAN with encoder 'resnet18' needs images of at least")
    assert "128x128 pixels, got 64x64" in message and "crop" in message and "Unet" in message
    # The size the message names works (trains on a batch of 2).
    assert module(torch.randn(2, 3, 128, 128)).shape == (2, 3, 128, 128)


def test_small_image_batch_of_one_suggests_both_fixes():
    module = small_module("Unet", encoder="resnet18")
    with pytest.raises(
        ConfigError, match="batch size of 2 or more, or train on images of at least 64x64"
    ):
        module.train()(torch.randn(1, 3, 32, 32))


class OnlyLarge(nn.Module):
    """A network that fails like a pooling layer below 40 px, and for a NaN with another error."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if min(x.shape[-2:]) < 40:
            raise RuntimeError("Output size is too small")
        if torch.isnan(x).any():
            raise RuntimeError("something unrelated to the input size")
        return x[:, :1]


def test_min_input_size_finds_the_smallest_multiple_of_the_stride():
    net = OnlyLarge()
    assert min_input_size(net, 32, 3) == 64
    assert min_input_size(net, 8, 3) == 40
    assert min_input_size(net, 8, 3, start=100) == 104
    assert min_input_size(net, 8, 3, limit=32) is None


def test_errors_that_are_not_about_the_input_are_left_alone():
    net = OnlyLarge()
    with pytest.raises(ConfigError, match="at least 64x64 pixels, got 20x20 \\(padded to 32x32\\)"):
        forward_checked(net, torch.randn(1, 3, 20, 20), 32)
    images = torch.full((1, 3, 64, 64), float("nan"))
    with pytest.raises(RuntimeError, match="unrelated"):
        forward_checked(net, images, 32)
    with pytest.raises(KeyError):  # not an error type a bad input size gives: not diagnosed
        with InputCheck(net, images, 32):
            raise KeyError("x")


def test_probing_leaves_the_network_as_it_was():
    net = small_module("Unet", encoder="resnet18").net.eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    # Train-mode probes update BatchNorm statistics; they are put back, and so is eval mode.
    assert min_input_size(net, 32, 3, train=True) == 64
    assert not net.training
    for key, value in net.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"aux_params": {"classes": 3}}, "aux_params: the auxiliary classification head"),
        ({"activation": "softmax"}, "activation: the losses and metrics take logits"),
    ],
)
def test_options_that_change_what_the_network_returns_are_refused(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        build_model("FPN", "resnet18", None, 3, 2, kwargs)


def test_logits_of_another_size_than_the_input_are_one_line():
    # smp's `upsampling` must match the decoder's scale (FPN: 4); 2 gives half-size logits,
    # which would be cropped into place wrongly or break the loss.
    net = build_model("FPN", "resnet18", None, 3, 2, {"upsampling": 2, **SMALL["FPN"]})
    with pytest.raises(ConfigError, match="gives 32x32 logits for a 64x64 input.*upsampling"):
        forward_checked(net, torch.randn(1, 3, 64, 64), output_stride(net))


@pytest.mark.slow
@pytest.mark.parametrize("encoder", ["resnet18", "tu-mobilenetv3_small_050"])
def test_full_sweep(encoder):
    """Every architecture x in_channels 1/3/4 x sizes 16 to 96 x train/eval batches."""
    for arch in sorted(SMALL):
        for in_channels in (1, 3, 4):
            module = small_module(arch, in_channels, encoder)
            for b, train in ((2, True), (1, True), (1, False)):
                for h, w in ((16, 16), (32, 32), (50, 70), (64, 64), (96, 96)):
                    logits_or_one_line_error(module, (b, in_channels, h, w), train)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large"])
def test_torchvision_small_inputs(arch):
    net = build_model(f"torchvision.{arch}", "", None, 3, 3)
    for b, h, w, train in [*CASES, (1, 9, 13, False)]:
        net.train(train)
        try:
            logits = forward_checked(net, torch.randn(b, 3, h, w), output_stride(net))
        except ConfigError as e:
            assert train and b == 1 and "batch size of 2" in str(e)
        else:
            assert logits.shape == (b, 3, h, w)
