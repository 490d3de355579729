"""Networks by name: smp architectures and torchvision models, any input size, clear errors."""

import pytest
import segmentation_models_pytorch as smp
import torch

from seglight.errors import ConfigError
from seglight.evaluation import pad_to_multiple
from seglight.module import SegmentationModule
from seglight.networks import build_model, output_stride

# Small but real: each architecture's own decoder on a light encoder.
ARCHS = [
    ("Unet", "resnet18", {"decoder_channels": [16, 16, 8, 8, 8]}),
    ("FPN", "resnet18", {}),
    ("DeepLabV3Plus", "resnet18", {}),
    ("PSPNet", "resnet18", {}),
    ("Linknet", "mobilenet_v2", {}),
    ("Segformer", "resnet18", {}),
    ("UPerNet", "resnet18", {}),
]


@pytest.mark.parametrize(("arch", "encoder", "kwargs"), ARCHS, ids=[a[0] for a in ARCHS])
def test_forward_backward(arch, encoder, kwargs):
    torch.manual_seed(0)
    module = SegmentationModule(arch=arch, encoder_name=encoder, num_classes=3, model_kwargs=kwargs)
    images = torch.randn(2, 3, 64, 64)
    masks = torch.randint(0, 3, (2, 64, 64))
    masks[:, :4] = 255
    out = module.shared_step({"image": images, "mask": masks}, "train")
    assert out["logits"].shape == (2, 3, 64, 64)
    out["loss"].backward()
    # Every part of the network the forward pass used gets a gradient (PSPNet, for one, uses
    # only the first 3 encoder stages, so "all parameters" would be the wrong test).
    head = [p.grad for p in module.net.segmentation_head.parameters()]
    first = next(module.net.encoder.parameters()).grad
    assert all(g is not None and g.abs().sum() > 0 for g in head)
    assert first is not None and first.abs().sum() > 0


@pytest.mark.parametrize(("arch", "size"), [("Unet", (375, 500)), ("DeepLabV3Plus", (33, 47))])
def test_sizes_not_multiple_of_stride_are_padded_and_cropped(arch, size):
    module = SegmentationModule(
        arch=arch,
        num_classes=4,
        model_kwargs={} if arch != "Unet" else {"decoder_channels": [16, 16, 8, 8, 8]},
    ).eval()
    images = torch.randn(1, 3, *size)
    with torch.no_grad():
        logits = module(images)
        masks = module.predict_step({"image": images}, 0)
    assert logits.shape == (1, 4, *size)
    assert masks.shape == (1, *size) and masks.dtype == torch.int64
    assert output_stride(module.net) in (16, 32)


def test_padding_keeps_pixels_in_place():
    x = torch.arange(2 * 3 * 5 * 7, dtype=torch.float32).reshape(2, 3, 5, 7)
    padded, (h, w) = pad_to_multiple(x, 8)
    assert padded.shape == (2, 3, 8, 8) and (h, w) == (5, 7)
    torch.testing.assert_close(padded[..., :5, :7], x)


def test_predict_marks_pixels_outside_each_image():
    module = SegmentationModule(num_classes=3, model_kwargs={"decoder_channels": [8] * 5}).eval()
    batch = {"image": torch.randn(2, 3, 32, 32), "size": torch.tensor([[32, 32], [20, 24]])}
    with torch.no_grad():
        masks = module.predict_step(batch, 0)
    assert (masks[0] < 3).all()
    assert (masks[1, :20, :24] < 3).all() and (masks[1, 20:] == 255).all()
    assert (masks[1, :, 24:] == 255).all()


def test_torchvision_model_by_name():
    module = SegmentationModule(arch="torchvision.lraspp_mobilenet_v3_large", num_classes=3)
    logits = module(torch.randn(2, 3, 45, 61))
    assert logits.shape == (2, 3, 45, 61)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"arch": "Unett"}, "unknown architecture 'Unett' \\(did you mean 'Unet'\\?\\)"),
        ({"encoder_name": "resnet19"}, "unknown encoder 'resnet19'"),
        ({"arch": "torchvision.fcn_resnet5"}, "did you mean 'fcn_resnet50'"),
        (
            {"model_kwargs": {"decoder_chanels": [8]}},
            "no argument 'decoder_chanels' \\(did you mean 'decoder_channels'\\?\\)",
        ),
        ({"model_kwargs": {"classes": 3}}, "set it as a model argument"),
        ({"encoder_weights": "weights/missing.pth"}, "file not found"),
    ],
)
def test_bad_model_config_is_a_clear_error(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        build_model(
            **{
                "arch": "Unet",
                "encoder_name": "resnet18",
                "encoder_weights": None,
                "in_channels": 3,
                "num_classes": 2,
                **kwargs,
            }
        )


def test_pretrained_weights_offline_say_how_to_proceed(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hf

    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    with pytest.raises(ConfigError, match="encoder_weights: null.*local"):
        build_model("Unet", "resnet18", "imagenet", 3, 2)


def test_encoder_weights_from_a_local_file(tmp_path):
    torch.manual_seed(0)
    source = build_model("Unet", "resnet18", None, 3, 2)
    path = tmp_path / "encoder.pth"
    state = source.encoder.state_dict() | {"fc.weight": torch.zeros(1)}  # a classifier head too
    torch.save(state, path)
    torch.manual_seed(1)
    loaded = build_model("Unet", "resnet18", str(path), 3, 2)
    for key, value in source.encoder.state_dict().items():
        torch.testing.assert_close(loaded.encoder.state_dict()[key], value)
    torch.save({"conv1.weight": torch.zeros(1)}, path)
    with pytest.raises(ConfigError, match="does not match the encoder"):
        build_model("Unet", "resnet18", str(path), 3, 2)


def test_torchvision_imagenet_offline_says_how_to_proceed(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache: it would have to download
    with pytest.raises(ConfigError, match="encoder_weights: null"):
        build_model("torchvision.lraspp_mobilenet_v3_large", "", "imagenet", 3, 2)


def test_other_input_channels():
    module = SegmentationModule(
        in_channels=4, num_classes=2, model_kwargs={"decoder_channels": [8] * 5}
    )
    assert module(torch.randn(2, 4, 32, 32)).shape == (2, 2, 32, 32)


# --- timm encoders as "tu-<timm name>" --------------------------------------------------------

# Three families (a ResNet, a MobileNet, a ConvNeXt) and DPT's ViT, each with a small decoder;
# (45, 61) is a multiple of no stride.
TIMM = [
    ("Unet", "tu-resnet18", {"decoder_channels": [16, 8, 8, 8, 8]}),
    ("FPN", "tu-mobilenetv3_small_050", {"decoder_pyramid_channels": 16}),
    ("UPerNet", "tu-convnext_atto", {"decoder_channels": 16}),
    (
        "DPT",
        "tu-vit_tiny_patch16_224",
        {"decoder_fusion_channels": 16, "decoder_intermediate_channels": [16] * 4},
    ),
]


@pytest.mark.parametrize(("arch", "encoder", "kwargs"), TIMM, ids=[t[1] for t in TIMM])
def test_timm_encoders(arch, encoder, kwargs):
    torch.manual_seed(0)
    module = SegmentationModule(arch=arch, encoder_name=encoder, num_classes=3, model_kwargs=kwargs)
    images, masks = torch.randn(2, 3, 45, 61), torch.randint(0, 3, (2, 45, 61))
    out = module.shared_step({"image": images, "mask": masks}, "train")
    assert out["logits"].shape == (2, 3, 45, 61)
    out["loss"].backward()
    assert next(module.net.encoder.parameters()).grad is not None
    module.eval()
    with torch.no_grad():
        assert module(torch.randn(1, 3, 33, 47)).shape == (1, 3, 33, 47)


def test_dpt_pads_to_what_its_decoder_needs():
    # A patch-16 ViT gives a 1/16 grid, but DPT's decoder also halves it once (1/32) and fuses by
    # factors of 2: 80 px = 5 patches would fail; so the stride is 32, 16 with 3 stages.
    kwargs = {"decoder_fusion_channels": 16, "decoder_intermediate_channels": [16] * 4}
    module = SegmentationModule(
        arch="DPT", encoder_name="tu-vit_tiny_patch16_224", model_kwargs=kwargs
    )
    assert module.stride == 32
    # The ViT's fixed 224x224 input became dynamic: any multiple of the stride runs.
    assert module.net.encoder.model.dynamic_img_size
    assert module.eval()(torch.randn(1, 3, 70, 80)).shape == (1, 2, 70, 80)
    kwargs = {"encoder_depth": 3, "decoder_intermediate_channels": [16] * 3}
    shallow = build_model("DPT", "tu-vit_tiny_patch16_224", None, 3, 2, kwargs)
    assert output_stride(shallow) == 16


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"encoder_name": "tu-resnt18"},
            "timm has no model 'resnt18' \\(did you mean 'tu-resnet18'",
        ),
        ({"encoder_name": "convnext_atto"}, "did you mean 'tu-convnext_atto'"),
        ({"encoder_name": "tu-resnet18.bogus"}, "no weights 'bogus' for 'resnet18'.*a1_in1k"),
        ({"arch": "DPT"}, "DPT takes a timm ViT-style encoder.*tu-vit_tiny_patch16_224"),
        (
            {"encoder_name": "tu-vit_tiny_patch16_224"},
            "strides \\[16, 16, 16\\].*multi-scale encoder.*ViTs fit DPT",
        ),
        (
            {"arch": "DeepLabV3", "encoder_name": "tu-fastvit_t8"},
            "encoder_name: DeepLabV3 dilates its encoder.*'fastvit_t8' does not support",
        ),
        (
            {"encoder_name": "tu-resnet18", "model_kwargs": {"decoder_chanels": [8]}},
            "decoder_chanels is neither an argument of Unet nor one timm's 'resnet18' takes",
        ),
        ({"encoder_name": "tu-resnet18", "encoder_weights": "ssl"}, "tag in encoder_name"),
        ({"in_channels": 0}, "model.in_channels: must be a whole number >= 1"),
    ],
)
def test_bad_timm_config_is_a_clear_error(kwargs, match):
    test_bad_model_config_is_a_clear_error(kwargs, match)


def test_timm_kwargs_reach_timm():
    model = build_model("Unet", "tu-resnet18", None, 3, 2, {"drop_path_rate": 0.1})
    assert model.encoder.model.layer4[1].drop_path.drop_prob > 0  # timm's linear schedule


def test_timm_pretrained_offline_says_how_to_proceed(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hf

    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    with pytest.raises(ConfigError, match="encoder_weights: null.*local"):
        build_model("Unet", "tu-resnet18.a3_in1k", "imagenet", 3, 2)


def test_timm_encoder_weights_from_a_local_file(tmp_path):
    import timm

    torch.manual_seed(0)
    path = tmp_path / "resnet18.pth"
    source = timm.create_model("resnet18")  # timm's own key names, classifier head included
    torch.save(source.state_dict(), path)
    loaded = build_model("Unet", "tu-resnet18", str(path), 3, 2)
    torch.testing.assert_close(loaded.encoder.model.conv1.weight, source.conv1.weight)
    with pytest.raises(
        ConfigError, match="'conv1.weight' has shape \\[64, 3, 7, 7\\].*in_channels"
    ):
        build_model("Unet", "tu-resnet18", str(path), 4, 2)


@pytest.mark.parametrize("depth", [3, 4])
def test_stages_left_out_by_encoder_depth_are_dropped(depth, tmp_path):
    # smp 0.6 builds resnet18's layer4 (8.4 M weights) for encoder_depth 4 and never runs it:
    # DDP refuses parameters without a gradient. seglight drops them; checkpoints that still
    # hold them (saved before) load.
    from seglight import SegmentationModule
    from seglight.checkpoints import check_matches_model

    kwargs = {"encoder_depth": depth, "decoder_channels": [16] * depth}
    module = SegmentationModule(num_classes=3, model_kwargs=kwargs)
    module.net(torch.randn(2, 3, 32, 32)).sum().backward()
    assert all(p.grad is not None for p in module.parameters())
    assert not any(k.startswith("net.encoder.layer4.") for k in module.state_dict())
    old = {**module.state_dict(), "net.encoder.layer4.0.conv1.weight": torch.zeros(512, 256, 3, 3)}
    check_matches_model("old.ckpt", {"state_dict": old}, module)  # no error: the key is dropped
    assert "net.encoder.layer4.0.conv1.weight" not in old


@pytest.mark.parametrize(
    "encoder, depth, dropped",
    [
        ("mobilenet_v2", 4, "features.14"),  # runs one stage too many, drops its output
        ("efficientnet-b0", 5, "_conv_head"),  # the classifier's conv head, unused at any depth
        ("timm-efficientnet-b0", 3, "blocks.3"),
        ("densenet121", 5, None),  # no get_stages (smp raises NotImplementedError): builds
    ],
)
def test_every_parameter_left_gets_a_gradient_and_the_outputs_are_unchanged(
    encoder, depth, dropped, monkeypatch
):
    import seglight.networks as networks

    kwargs = {"encoder_depth": depth, "decoder_channels": [8] * depth}
    torch.manual_seed(0)
    net = build_model("Unet", encoder, None, 3, 2, kwargs)
    after_build = torch.rand(3)
    names = net.encoder.seglight_dropped if dropped else []
    assert (dropped in names) if dropped else not hasattr(net.encoder, "seglight_dropped")
    with monkeypatch.context() as m:
        m.setattr(networks, "drop_unused_modules", lambda encoder, known: [])
        m.setattr(networks, "_UNUSED", {})  # the build cache as it was stays out of it
        torch.manual_seed(0)
        whole = build_model("Unet", encoder, None, 3, 2, kwargs)
        assert torch.equal(torch.rand(3), after_build)  # the probe left the global RNG alone
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(x), whole.eval()(x))
    net.train()(x).sum().backward()
    assert [n for n, p in net.named_parameters() if p.grad is None] == []
    # built the same way again, it drops the same modules without probing
    monkeypatch.setattr(networks.parts, "_probe_input", lambda encoder: pytest.fail("probed"))
    assert build_model("Unet", encoder, None, 3, 2, kwargs).encoder.seglight_dropped == names


@pytest.mark.slow
@pytest.mark.parametrize("encoder", smp.encoders.get_encoder_names())
def test_every_smp_encoder_trains_every_parameter_it_keeps(encoder):
    """What DDP without find_unused_parameters needs, for every smp encoder (~2 min in all)."""
    net = build_model("Unet", encoder, None, 3, 2)
    net.train()(torch.randn(2, 3, 64, 64)).sum().backward()
    assert [n for n, p in net.named_parameters() if p.grad is None] == []
