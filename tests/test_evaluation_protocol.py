"""Evaluation protocols: whole, sliding window, flip / multi-scale TTA, and their configuration."""

import csv
import logging
import math

import pytest
import torch
from torch import nn

from seglight.cli import main
from seglight.errors import ConfigError
from seglight.evaluation import EvalProtocol, _starts, _window_weight, predict_logits
from seglight.networks import build_model

from seglight_testing import QUICKSTART, TINY

K = 3


def pointwise(seed: int = 0) -> nn.Module:
    """A per-pixel network (1x1 convs): its logits do not depend on padding or position."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, K, 1)).eval()


def conv3x3(symmetric: bool = False, seed: int = 0) -> nn.Module:
    """Translation-equivariant (zero-padded 3x3 conv); flip-equivariant with a symmetric kernel."""
    torch.manual_seed(seed)
    net = nn.Conv2d(3, K, 3, padding=1).eval()
    if symmetric:
        with torch.no_grad():
            net.weight.copy_((net.weight + net.weight.flip(-1)) / 2)
    return net


def whole(net, images, stride=1, **kw):
    return predict_logits(net, images, stride, EvalProtocol(**kw), K)


@torch.no_grad()
def test_slide_with_one_window_equals_whole_on_a_real_unet():
    torch.manual_seed(0)
    net = build_model("Unet", "resnet18", None, 3, K, {"decoder_channels": [16, 16, 8, 8, 8]})
    net.eval()
    images = torch.randn(2, 3, 64, 64)
    slide = EvalProtocol(mode="slide", window=(64, 64))
    expected = net(images)
    torch.testing.assert_close(predict_logits(net, images, 32, slide, K), expected)
    torch.testing.assert_close(whole(net, images, 32), expected)


@torch.no_grad()
@pytest.mark.parametrize("weighting", ["constant", "gaussian"])
def test_overlapping_windows_equal_whole_for_a_pointwise_model(weighting):
    net, images = pointwise(), torch.randn(2, 3, 37, 53)
    slide = EvalProtocol(mode="slide", window=(12, 20), stride=(5, 7), weighting=weighting)
    # stride 8: each 12x20 window is itself padded to 16x24 and cropped back
    out = predict_logits(net, images, 8, slide, K)
    assert out.shape == (2, K, 37, 53)
    torch.testing.assert_close(out, net(images), atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_overlapping_windows_equal_whole_away_from_window_edges_for_a_3x3_conv():
    net, images = conv3x3(), torch.randn(1, 3, 40, 44)
    slide = EvalProtocol(mode="slide", window=(16, 16), stride=(10, 10))
    out = predict_logits(net, images, 1, slide, K)
    # A 3x3 conv sees the window's zero padding only on the window's own edge rows/columns;
    # the image's border is zero-padded in `whole` too, so it matches there.
    bad_rows, bad_cols = torch.zeros(40, dtype=torch.bool), torch.zeros(44, dtype=torch.bool)
    for bad, size in ((bad_rows, 40), (bad_cols, 44)):
        for s in _starts(size, 16, 10):
            bad[[e for e in (s, s + 15) if 0 < e < size - 1]] = True
    good = ~bad_rows[:, None] & ~bad_cols[None, :]
    assert good.float().mean() > 0.6
    torch.testing.assert_close(out[..., good], net(images)[..., good], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out[..., ~good], net(images)[..., ~good])  # the test has teeth


def test_window_grid_covers_the_image_and_ends_flush():
    assert _starts(512, 512, 341) == [0]
    assert _starts(40, 16, 10) == [0, 10, 20, 24]
    assert _starts(16, 16, 10) == [0]


@torch.no_grad()
def test_gaussian_weights_average_a_constant_back_to_the_constant():
    values = torch.tensor([0.5, -2.0, 3.0])

    def constant(x):  # (B, C, h, w) -> (B, K, h, w), the same logits everywhere
        return values.view(1, K, 1, 1).expand(x.shape[0], K, *x.shape[-2:])

    slide = EvalProtocol(mode="slide", window=(16, 16), stride=(5, 3), weighting="gaussian")
    out = predict_logits(constant, torch.randn(2, 3, 33, 29), 1, slide, K)
    torch.testing.assert_close(out, values.view(1, K, 1, 1).expand_as(out))
    w = _window_weight((16, 12), "gaussian", "cpu")
    assert w.max() <= 1 and w.min() > 0
    torch.testing.assert_close(w, w.flip(0).flip(1))  # centred
    assert w[7:9, 5:7].min() > w[0, 0] * 1e5


@torch.no_grad()
def test_slide_over_an_image_smaller_than_the_window_pads_it():
    net, images = pointwise(), torch.randn(2, 3, 10, 13)
    seen = []

    def spy(x):
        seen.append(tuple(x.shape[-2:]))
        return net(x)

    slide = EvalProtocol(mode="slide", window=(16, 24))
    out = predict_logits(spy, images, 8, slide, K)
    assert seen == [(16, 24)] and out.shape == (2, K, 10, 13)
    torch.testing.assert_close(out, net(images), atol=1e-5, rtol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"flip": True},
        {"scales": (0.5, 1.0, 1.5)},
        {"mode": "slide", "window": (16, 16), "weighting": "gaussian", "flip": True},
        {"mode": "slide", "window": (24, 24), "scales": (0.75, 1.25)},
    ],
)
def test_odd_sizes_come_back_at_the_input_size(kw):
    images = torch.randn(1, 3, 37, 53)
    out = predict_logits(pointwise(), images, 32, EvalProtocol(**kw), K)
    assert out.shape == (1, K, 37, 53) and torch.isfinite(out).all()


@torch.no_grad()
def test_flip_tta_on_a_flip_equivariant_model_changes_nothing():
    net, images = conv3x3(symmetric=True), torch.randn(2, 3, 20, 21)
    plain = whole(net, images)
    tta = whole(net, images, flip=True)
    torch.testing.assert_close(tta, plain.log_softmax(1), atol=1e-5, rtol=1e-5)
    assert torch.equal(tta.argmax(1), plain.argmax(1))
    # A mirror-symmetric input is the same seen flipped: prediction as without TTA.
    sym = torch.cat([images[..., :10], images[..., :11].flip(-1)], -1)
    assert torch.equal(sym, sym.flip(-1))
    assert torch.equal(whole(net, sym, flip=True).argmax(1), whole(net, sym).argmax(1))


@torch.no_grad()
def test_flip_tta_averages_the_probabilities_of_the_two_views():
    # Class 0's logit is the column index, class 1's is 0: not flip-equivariant.
    def column(x):
        b, _, h, w = x.shape
        col = torch.arange(w, dtype=torch.float32).expand(b, 1, h, w)
        return torch.cat([col, torch.zeros_like(col)], 1)

    images = torch.zeros(1, 3, 2, 3)
    out = predict_logits(column, images, 1, EvalProtocol(flip=True), 2)
    p0 = out.exp()[0, 0, 0]  # probability of class 0 along a row
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    # column c: plain view sigmoid(c), flipped view sigmoid(2 - c)
    expected = [(sig(0) + sig(2)) / 2, sig(1), (sig(2) + sig(0)) / 2]
    torch.testing.assert_close(p0, torch.tensor(expected))
    torch.testing.assert_close(out.exp().sum(1), torch.ones(1, 2, 3))


@torch.no_grad()
def test_scales():
    net, images = pointwise(), torch.randn(2, 3, 24, 40)
    plain = net(images)
    assert torch.equal(whole(net, images, scales=(1.0,)), plain)  # one view: its logits
    # two identical views: the log of their (equal) probabilities
    torch.testing.assert_close(whole(net, images, scales=[1.0, 1.0]), plain.log_softmax(1))
    # a smooth (constant) image looks the same at any scale
    flat = torch.randn(1, 3, 1, 1).expand(1, 3, 24, 40)
    torch.testing.assert_close(
        whole(net, flat, scales=(0.5, 1.0, 1.75)), net(flat).log_softmax(1), atol=1e-5, rtol=1e-5
    )


def test_describe():
    assert EvalProtocol().describe() == "whole"
    assert EvalProtocol().is_plain and not EvalProtocol(flip=True).is_plain
    p = EvalProtocol(
        mode="slide", window=[512, 512], weighting="gaussian", flip=True, scales=[0.75, 1, 1.25]
    )
    assert p.describe() == "slide 512x512 stride 341x341 gaussian + flip + scales 0.75,1.0,1.25"
    assert p.window == (512, 512) and p.scales == (0.75, 1.0, 1.25)
    assert hash(p) == hash(EvalProtocol(**p.__dict__))


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"mode": "tiles"}, "eval_protocol.mode"),
        ({"mode": "slide"}, "eval_protocol.window: required"),
        ({"mode": "slide", "window": (0, 16)}, "eval_protocol.window"),
        ({"mode": "slide", "window": (16,)}, "eval_protocol.window"),
        ({"mode": "slide", "window": (16, 16.5)}, "eval_protocol.window"),
        ({"mode": "slide", "window": "big"}, "eval_protocol.window"),
        ({"mode": "slide", "window": (16, 16), "stride": (17, 8)}, "eval_protocol.stride"),
        ({"mode": "slide", "window": (16, 16), "stride": (-1, 8)}, "eval_protocol.stride"),
        ({"weighting": "cosine"}, "eval_protocol.weighting"),
        ({"flip": "yes"}, "eval_protocol.flip"),
        ({"scales": ()}, "eval_protocol.scales"),
        ({"scales": (1.0, 0.0)}, "eval_protocol.scales"),
        ({"scales": (1.0, -0.5)}, "eval_protocol.scales"),
        ({"scales": (float("nan"),)}, "eval_protocol.scales"),
        ({"scales": ("x",)}, "eval_protocol.scales"),
    ],
)
def test_invalid_protocols_name_the_field(kw, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        EvalProtocol(**kw)


SLIDE_FLAGS = ["--model.eval_protocol.mode=slide", "--model.eval_protocol.window=[32,32]"]


def test_cli_flags_reach_the_module_and_its_hparams(in_tmp):
    c = main(["--config", QUICKSTART, *SLIDE_FLAGS, "--model.eval_protocol.flip=true"], run=False)
    protocol = c.model.eval_protocol
    assert protocol == EvalProtocol(mode="slide", window=(32, 32), flip=True)
    assert c.model.protocol_description == "slide 32x32 stride 21x21 + flip"
    recorded = c.model.hparams["eval_protocol"]  # as for `loss`, jsonargparse records a dict
    recorded = recorded if isinstance(recorded, dict) else recorded.__dict__
    assert recorded["mode"] == "slide" and list(recorded["window"]) == [32, 32]
    # a module rebuilt from its hparams (load_from_checkpoint) gets the same protocol
    kwargs = {k: v for k, v in c.model.hparams.items() if not k.startswith("_")}  # _class_path
    assert type(c.model)(**kwargs).eval_protocol == protocol


def test_cli_validate_with_a_slide_protocol(in_tmp, caplog, capsys):
    flags = ["--model.eval_protocol.window=[24,24]", "--model.eval_protocol.flip=true"]
    with caplog.at_level(logging.INFO):
        main(["validate", "--config", QUICKSTART, *TINY, SLIDE_FLAGS[0], *flags])
    printed = caplog.text + capsys.readouterr().out
    assert "evaluation protocol: slide 24x24 stride 16x16 + flip" in printed
    run_dir = in_tmp / "outputs/quickstart/logs/version_0"
    rows = list(csv.DictReader(open(run_dir / "metrics.csv")))
    miou = [float(r["val/mIoU"]) for r in rows if r.get("val/mIoU")]
    assert len(miou) == 1 and 0 <= miou[0] <= 1
    assert "mode: slide" in (run_dir / "hparams.yaml").read_text()


@torch.no_grad()
def test_module_uses_the_protocol_outside_training_only():
    from seglight import SegmentationModule

    kw = {"num_classes": K, "model_kwargs": {"decoder_channels": [16, 16, 8, 8, 8]}}
    torch.manual_seed(0)
    plain = SegmentationModule(**kw).eval()
    images = torch.randn(2, 3, 40, 50)
    assert plain.protocol_description == "whole"
    assert torch.equal(plain.evaluation_logits(images), plain(images))
    slide = SegmentationModule(**kw, eval_protocol={"mode": "slide", "window": [32, 32]}).eval()
    slide.load_state_dict(plain.state_dict())
    batch = {"image": images, "mask": torch.zeros(2, 40, 50, dtype=torch.long)}
    expected = predict_logits(slide, images, 32, slide.eval_protocol, K)
    assert torch.equal(slide.shared_step(batch, "val")["logits"], expected)
    assert torch.equal(slide.shared_step(batch, "train")["logits"], plain(images))
    # predict runs each image alone (batch-size independent): compare with one image at a time
    alone = torch.cat([predict_logits(slide, images[i : i + 1], 32, slide.eval_protocol, K)
                       for i in range(2)])  # fmt: skip
    assert torch.equal(slide.predict_step(batch, 0), alone.argmax(1))
