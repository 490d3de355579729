"""Deploying a trained SegmentationModule: the exported graph, its metadata, ONNX and TorchScript
writers, runners for the written files and the parity check against PyTorch.

`seglight export` (seglight.cli.export) is the command line around these; each works alone too,
e.g. benchmarks/inference.py exports with ExportWrapper, build_metadata and export_onnx.
"""

import json
import warnings
from pathlib import Path

import torch
from torch import nn

from seglight.data.images import SCALING_RULE
from seglight.errors import ConfigError
from seglight.module import SegmentationModule

INPUT_NAME, OUTPUT_NAME = "images", "logits"
DYNAMIC_AXES = {0: "batch", 2: "height", 3: "width"}
METADATA_FILE = "seglight.json"  # TorchScript: the metadata as an extra file in the archive


class ExportWrapper(nn.Module):
    """images (B, C, H, W) -> logits (B, K, H, W): the module's padded forward, nothing else
    (no loss, no metrics), so the exported graph holds only the network."""

    def __init__(self, module: SegmentationModule):
        super().__init__()
        self.module = module

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.module(images)


# --- errors -----------------------------------------------------------------------------------


def first_line(error: BaseException, limit: int = 300) -> str:
    """Type and first line of an error: the exporters' messages run to pages."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    line = lines[0].split("  [Caused by")[0] if lines else ""  # the ONNX exporter's IR dump
    if len(line) > limit:
        line = line[: limit - 3] + "..."
    return f"{type(error).__name__}: {line}".rstrip(": ")


# --- metadata ---------------------------------------------------------------------------------


def build_metadata(module: SegmentationModule, mean, std) -> dict[str, str]:
    """What inference needs besides the graph, as strings (ONNX metadata_props are strings)."""
    from seglight import __version__

    hp = module.hparams
    in_channels = int(hp.get("in_channels", 3))
    layout = f"{INPUT_NAME}: float32 (batch, {in_channels}, height, width), any height/width"
    return {
        "class_names": json.dumps(list(module.class_names)),
        "num_classes": str(module.num_classes),
        "ignore_index": str(module.ignore_index),
        "output_stride": str(module.stride),
        "mean": json.dumps([float(m) for m in mean]),
        "std": json.dumps([float(s) for s in std]),
        "preprocessing": (
            "RGB as displayed (EXIF orientation applied, unless the data config set "
            "exif_orientation: false), channels first, scaled to [0, 1] by "
            "the file's pixel type (8-bit / 255, 16-bit / 65535, float as is), then "
            "(x - mean) / std per channel"
        ),
        "input_scaling": SCALING_RULE,
        "input_name": INPUT_NAME,
        "input_layout": layout,
        "output_name": OUTPUT_NAME,
        "output_layout": _output_layout(module),
        "task": str(getattr(module, "task", "multiclass")),
        "padding": (
            "inside the graph: H and W are padded (reflect) to multiples of output_stride "
            "and the logits cropped back"
        ),
        # The traced graph pads with "reflect", which needs the pad to be smaller than the side;
        # PyTorch switches to "replicate" for smaller images, the exported graph cannot.
        "min_side": str(min_side(module.stride)),
        "arch": str(hp.get("arch", "")),
        "encoder_name": str(hp.get("encoder_name", "")),
        "in_channels": str(in_channels),
        "model_class": f"{type(module).__module__}.{type(module).__qualname__}",
        "seglight_version": __version__,
        "torch_version": torch.__version__,
    }


def _output_layout(module: SegmentationModule) -> str:
    if getattr(module, "task", "multiclass") == "binary":
        return (
            f"{OUTPUT_NAME}: float32 (batch, 1, height, width), the foreground logit at the "
            f"input's size; sigmoid >= threshold ({module.threshold}) gives foreground (1)"
        )
    if getattr(module, "task", "multiclass") == "multilabel":
        return (
            f"{OUTPUT_NAME}: float32 (batch, num_classes, height, width), one logit per label "
            f"at the input's size; sigmoid >= threshold ({module.threshold}) gives the labels "
            f"of a pixel (several or none)"
        )
    return (
        f"{OUTPUT_NAME}: float32 (batch, num_classes, height, width), unnormalized class "
        f"scores at the input's size; argmax over dim 1 gives class indices"
    )


def min_side(stride: int) -> int:
    """Smallest H and W the exported graph takes: reflect padding to `stride` needs pad < side."""
    return stride // 2 + 1 if stride > 1 else 1


# --- export -----------------------------------------------------------------------------------


def cannot_export(module: SegmentationModule, why: str) -> ConfigError:
    """The one-line error of an architecture the exporter cannot take with dynamic shapes."""
    arch = module.hparams.get("arch", type(module).__name__)
    encoder = module.hparams.get("encoder_name", "")
    return ConfigError(
        f"export: architecture '{arch}' (encoder '{encoder}') cannot be exported with dynamic "
        f"shapes (batch, height, width): {why}"
    )


def export_onnx(wrapper, example, output: Path, opset: int, dynamo: bool, metadata) -> None:
    import onnx

    axes = {INPUT_NAME: DYNAMIC_AXES, OUTPUT_NAME: DYNAMIC_AXES}
    with warnings.catch_warnings():  # TracerWarnings about the padding's Python ints: checked
        warnings.simplefilter("ignore")
        if dynamo:
            # DYNAMIC, not named Dims: the padding branches on H % stride, which torch.export
            # records as guards; the parity check then shows whether other sizes really work.
            dynamic = torch.export.Dim.DYNAMIC
            shapes = {INPUT_NAME: {0: dynamic, 2: dynamic, 3: dynamic}}
            program = torch.onnx.export(
                wrapper,
                (example,),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=shapes,
                opset_version=opset,
                dynamo=True,
            )
            program.save(str(output))
        else:
            torch.onnx.export(
                wrapper,
                (example,),
                str(output),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes=axes,
                opset_version=opset,
                dynamo=False,
            )
    model = onnx.load(str(output))
    del model.metadata_props[:]
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name = "seglight"
    onnx.save(model, str(output))


def export_torchscript(wrapper, example, output: Path, metadata) -> None:
    # Tracing reads every attribute, LightningModule.trainer too, which raises when detached;
    # Lightning's own to_torchscript sets this flag around the trace for that reason.
    from seglight.compat import _jit_is_scripting

    with warnings.catch_warnings(), _jit_is_scripting():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(wrapper, (example,), check_trace=False)
        torch.jit.save(traced, str(output), _extra_files={METADATA_FILE: json.dumps(metadata)})


def onnx_runner(output: Path):
    import onnxruntime as ort

    session = ort.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0])


def torchscript_runner(output: Path):
    with warnings.catch_warnings():  # torch.jit is deprecated in favour of torch.export
        warnings.simplefilter("ignore", FutureWarning)
        loaded = torch.jit.load(str(output), map_location="cpu")

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return loaded(x)

    return run


def reference_outputs(wrapper, sizes, in_channels: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(input, PyTorch logits) for a random input of each (B, H, W) in sizes; computed before
    exporting, so a size the model itself cannot take fails before any file is written."""
    generator = torch.Generator().manual_seed(0)
    pairs = []
    for b, h, w in sizes:
        x = torch.randn(b, in_channels, h, w, generator=generator)
        try:
            with torch.no_grad():
                pairs.append((x, wrapper(x)))
        except Exception as e:  # noqa: BLE001
            raise ConfigError(
                f"check_sizes: the PyTorch model itself fails on {b}x{h}x{w} ({first_line(e)});"
                f" choose larger --check_sizes"
            ) from None
    return pairs


def check_parity(run_exported, references, tolerance: float) -> list[dict]:
    """Max |exported - PyTorch| on each (input, expected logits) of references."""
    results = []
    for x, expected in references:
        b, _, h, w = x.shape
        try:
            got = run_exported(x)
        except Exception as e:  # noqa: BLE001 - the exported graph does not take this size
            results.append({"size": [b, h, w], "max_abs_diff": None, "error": first_line(e)})
            continue
        if tuple(got.shape) != tuple(expected.shape):
            results.append(
                {
                    "size": [b, h, w],
                    "max_abs_diff": None,
                    "error": f"output shape {tuple(got.shape)}, expected {tuple(expected.shape)}",
                }
            )
            continue
        diff = float((got.detach().float() - expected).abs().max())
        results.append({"size": [b, h, w], "max_abs_diff": diff, "ok": diff <= tolerance})
    return results
