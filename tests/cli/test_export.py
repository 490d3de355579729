"""`seglight export`: ONNX / TorchScript with dynamic batch, height, width; metadata; parity."""

import json

import lightning
import pytest
import torch

from seglight.cli import main
from seglight.module import SegmentationModule

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

NAMES = ["background", "cat", "dog"]


def make_checkpoint(path, arch="Unet", module_class=SegmentationModule, class_path=None, **kw):
    """A checkpoint as Lightning writes it, without training: state dict + hyper-parameters."""
    model_kwargs = {"decoder_channels": [8] * 5} if arch == "Unet" else None
    torch.manual_seed(0)
    module = module_class(
        arch=arch,
        encoder_name="resnet18",
        num_classes=3,
        class_names=NAMES,
        model_kwargs=model_kwargs,
        **kw,
    )
    hparams = dict(module.hparams)
    if class_path:  # what LightningCLI adds for `--model path.to.Subclass`
        hparams["_class_path"] = class_path
        hparams["_instantiator"] = "lightning.pytorch.cli.instantiate_module"
    checkpoint = {
        "state_dict": module.state_dict(),
        "hyper_parameters": hparams,
        "pytorch-lightning_version": lightning.__version__,
    }
    torch.save(checkpoint, path)
    return path


@pytest.fixture(scope="module")
def unet_ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "unet.ckpt")


def export(capsys, *args) -> tuple[int, str, str]:
    # A small traced example keeps the tests fast (the default is > 256 px, for PAN).
    args = args if "--example_size" in args else (*args, "--example_size", "71x77")
    with pytest.raises(SystemExit) as exit_:
        main(["export", *map(str, args)])
    out = capsys.readouterr()
    return exit_.value.code, out.out, out.err


def test_onnx_dynamic_shapes_parity_and_metadata(unet_ckpt, capsys):
    code, out, err = export(capsys, "--ckpt_path", unet_ckpt, "--mean", "0.5,0.4,0.3")
    assert code == 0, err
    onnx_path = unet_ckpt.with_suffix(".onnx")  # default: next to the checkpoint
    assert onnx_path.is_file()
    # Two check sizes other than the traced one, 75x99 not a multiple of the stride (32).
    assert "1x3x64x96: max abs diff" in out and "2x3x75x99: max abs diff" in out
    assert out.count(" ok") == 2

    model = onnx.load(str(onnx_path))
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["class_names"]) == NAMES
    assert meta["num_classes"] == "3" and meta["output_stride"] == "32"
    assert meta["ignore_index"] == "255"
    assert json.loads(meta["mean"]) == [0.5, 0.4, 0.3]
    assert json.loads(meta["std"]) == pytest.approx([0.229, 0.224, 0.225])  # ImageNet default
    assert meta["arch"] == "Unet" and meta["encoder_name"] == "resnet18"
    assert "[0, 1]" in meta["preprocessing"]
    assert meta["min_side"] == "17"
    assert {"seglight_version", "input_name", "input_layout", "output_layout"} <= meta.keys()

    # Dynamic axes in the graph, and one more size (odd, batch 3) straight through onnxruntime.
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims] == ["batch", "", "height", "width"]
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 3, 41, 57)
    (logits,) = session.run(None, {"images": x.numpy()})
    module = SegmentationModule.load_from_checkpoint(unet_ckpt, map_location="cpu").eval()
    with torch.no_grad():
        expected = module(x)
    assert logits.shape == (3, 3, 41, 57)
    assert (torch.from_numpy(logits) - expected).abs().max() < 1e-4


def test_second_architecture(tmp_path, capsys):
    ckpt = make_checkpoint(tmp_path / "fpn.ckpt", arch="FPN")
    code, _, err = export(capsys, "--ckpt_path", ckpt, "--output", tmp_path / "out" / "m.onnx")
    assert code == 0, err
    assert (tmp_path / "out" / "m.onnx").is_file()


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_parity_and_metadata(unet_ckpt, tmp_path, capsys):
    output = tmp_path / "unet.pt"
    code, out, err = export(
        capsys, "--ckpt_path", unet_ckpt, "--format", "torchscript", "--output", output,
        "--check_sizes", "2x64x96,1x20x33",
    )  # fmt: skip
    assert code == 0, err
    assert "2x3x64x96" in out and "1x3x20x33" in out
    files = {"seglight.json": ""}
    torch.jit.load(str(output), _extra_files=files)
    assert json.loads(json.loads(files["seglight.json"])["class_names"]) == NAMES


def test_subclass_checkpoint(tmp_path, capsys):
    from seglight_testing.subclass_example import BoundaryWeighted

    ckpt = make_checkpoint(
        tmp_path / "sub.ckpt", module_class=BoundaryWeighted,
        class_path="seglight_testing.subclass_example.BoundaryWeighted", penalty=0.5,
    )  # fmt: skip
    code, out, err = export(capsys, "--ckpt_path", ckpt, "--check_sizes", "32x32,40x50")
    assert code == 0, err
    assert "BoundaryWeighted" in out


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "does not exist"),
        (b"\x00\x01 not a checkpoint" * 10, "is not a checkpoint torch can load"),
        ({"weights": torch.zeros(2)}, "is not a Lightning checkpoint"),
        ({"state_dict": {}, "hyper_parameters": {"lr": 1}}, "not a checkpoint of a seglight"),
    ],
    ids=["missing", "random-bytes", "foreign-dict", "foreign-module"],
)
def test_unusable_checkpoints_are_one_line_errors(tmp_path, capsys, content, expected):
    path = tmp_path / "model.ckpt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    code, _, err = export(capsys, "--ckpt_path", path)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("seglight: error:"), err
    assert str(path) in lines[0] and expected in lines[0]


def test_architecture_without_dynamic_shapes_is_a_clear_error(tmp_path, capsys):
    # PSPNet's adaptive average pooling: the ONNX exporter cannot express it for unknown H, W.
    ckpt = make_checkpoint(tmp_path / "psp.ckpt", arch="PSPNet")
    code, _, err = export(capsys, "--ckpt_path", ckpt)
    assert code == 2
    assert err.startswith("seglight: error:") and len(err.strip().splitlines()) == 1
    assert "'PSPNet'" in err and "cannot be exported with dynamic shapes" in err
    assert "adaptive_avg_pool2d" in err and "--format torchscript" in err
    assert not ckpt.with_suffix(".onnx").exists()


def test_size_baked_into_the_graph_is_caught(unet_ckpt, tmp_path, capsys, monkeypatch):
    # Simulated: an exported model that only reproduces PyTorch at the traced size.
    import seglight.cli.export as export_module

    def fixed_size_runner(output):
        def run(x):
            if tuple(x.shape[-2:]) != (71, 77):
                raise RuntimeError("Got invalid dimensions for input: images")
            return torch.zeros(1)

        return run

    monkeypatch.setattr(export_module, "export_onnx", lambda *a: a[2].write_bytes(b"graph"))
    monkeypatch.setattr(export_module, "onnx_runner", fixed_size_runner)
    output = tmp_path / "baked.onnx"
    code, out, err = export(capsys, "--ckpt_path", unet_ckpt, "--output", output)
    assert code == 2
    assert "FAILED" in out and "cannot be exported with dynamic shapes" in err
    assert "Got invalid dimensions" in err
    assert not output.exists()


def test_bad_options(unet_ckpt, capsys):
    code, _, err = export(capsys, "--ckpt_path", unet_ckpt, "--mean", "0.5,0.5")
    assert code == 2 and "mean: 2 values for a model with 3 input channels" in err
    code, _, err = export(capsys, "--ckpt_path", unet_ckpt, "--check_sizes", "64by64")
    assert code == 2 and "check_sizes" in err
    code, _, err = export(capsys, "--ckpt_path", unet_ckpt, "--check_sizes", "64x64,10x40")
    assert code == 2 and "10x40 is below the smallest side the exported model takes, 17" in err
