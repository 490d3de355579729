"""Export a trained checkpoint for deployment: ONNX (default) or TorchScript, any batch/H/W.

python -m seglight export --ckpt_path runs/best.ckpt                      # -> runs/best.onnx
python -m seglight export --ckpt_path best.ckpt --format torchscript      # -> best.pt
python -m seglight export --ckpt_path best.ckpt --mean 0.5,0.5,0.5 --std 0.5,0.5,0.5

The exported graph is the module's `forward`: it pads H and W up to the encoder's output stride and
crops the logits back, so it takes images (B, 3, H, W) of any size. Input `images`: float32 RGB
scaled to [0, 1], then normalized with the `mean`/`std` stored in the file's metadata; output
`logits`: (B, num_classes, H, W). After writing the file the export runs it (onnxruntime for ONNX)
and PyTorch on inputs of sizes other than the one it was exported with, and fails when they differ
by more than --tolerance: that is what proves the shapes are really dynamic. Exits 0 on success;
an unusable checkpoint, or an architecture that cannot be exported with dynamic shapes, is a
ConfigError (the CLI prints one line and exits 2).
"""

import importlib
import json
import pickle
import sys
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from seglight.cli.parser import SeglightArgumentParser
from seglight.data.images import SCALING_RULE
from seglight.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from seglight.errors import ConfigError
from seglight.module import SegmentationModule

FORMATS = ("onnx", "torchscript")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt"}
INPUT_NAME, OUTPUT_NAME = "images", "logits"
DYNAMIC_AXES = {0: "batch", 2: "height", 3: "width"}
DEFAULT_CHECK_SIZES = "64x96,75x99"  # batch 1 then 2; 64x96 needs no padding, 75x99 does
METADATA_FILE = "seglight.json"  # TorchScript: the metadata as an extra file in the archive


class ExportWrapper(nn.Module):
    """images (B, C, H, W) -> logits (B, K, H, W): the module's padded forward, nothing else
    (no loss, no metrics), so the exported graph holds only the network."""

    def __init__(self, module: SegmentationModule):
        super().__init__()
        self.module = module

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.module(images)


# --- checkpoint -------------------------------------------------------------------------------


def _first_line(error: BaseException, limit: int = 300) -> str:
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    line = lines[0].split("  [Caused by")[0] if lines else ""  # the ONNX exporter's IR dump
    if len(line) > limit:
        line = line[: limit - 3] + "..."
    return f"{type(error).__name__}: {line}".rstrip(": ")


def load_module(ckpt_path: str | Path) -> SegmentationModule:
    """The SegmentationModule (or the subclass the checkpoint names) of a Lightning checkpoint,
    on the CPU, in eval mode, fp32. Unusable files raise ConfigError saying why."""
    path = Path(ckpt_path)
    if not path.is_file():
        what = "is a directory, not a checkpoint file" if path.is_dir() else "does not exist"
        raise ConfigError(f"ckpt_path: {path} {what}")
    try:  # weights_only: a foreign file must not run code; Lightning loads local files so too
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError,
            zipfile.BadZipFile, AttributeError, KeyError, TypeError) as e:  # fmt: skip
        raise ConfigError(
            f"ckpt_path: {path} is not a checkpoint torch can load ({_first_line(e)})"
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ConfigError(f"ckpt_path: {path} is not a Lightning checkpoint (no 'state_dict')")
    hparams = checkpoint.get("hyper_parameters")
    if not isinstance(hparams, dict) or "arch" not in hparams:
        raise ConfigError(
            f"ckpt_path: {path} is not a checkpoint of a seglight SegmentationModule "
            f"(its hyper_parameters do not name an 'arch')"
        )
    cls = _module_class(hparams.get("_class_path"), path)
    try:
        module = cls.load_from_checkpoint(path, map_location="cpu")
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - state-dict mismatch, bad hparams: one line
        raise ConfigError(
            f"ckpt_path: could not rebuild {cls.__name__} from {path}: {_first_line(e)}"
        ) from None
    return module.float().eval()


def _module_class(class_path: str | None, path: Path) -> type[SegmentationModule]:
    """The class LightningCLI recorded (`--model path.to.Subclass`), imported as `fit` would."""
    if not class_path:
        return SegmentationModule
    module_name, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as e:
        raise ConfigError(
            f"ckpt_path: {path} holds a {class_path}, which cannot be imported ({_first_line(e)});"
            f" put the module that defines it on PYTHONPATH"
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, SegmentationModule)):
        raise ConfigError(f"ckpt_path: {path} holds a {class_path}, not a SegmentationModule")
    return cls


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
        "output_layout": (
            f"{OUTPUT_NAME}: float32 (batch, num_classes, height, width), unnormalized class "
            f"scores at the input's size; argmax over dim 1 gives class indices"
        ),
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


def min_side(stride: int) -> int:
    """Smallest H and W the exported graph takes: reflect padding to `stride` needs pad < side."""
    return stride // 2 + 1 if stride > 1 else 1


# --- export -----------------------------------------------------------------------------------


def _cannot_export(module: SegmentationModule, why: str) -> ConfigError:
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
                f"check_sizes: the PyTorch model itself fails on {b}x{h}x{w} ({_first_line(e)});"
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
            results.append({"size": [b, h, w], "max_abs_diff": None, "error": _first_line(e)})
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


# --- the `seglight export` subcommand -----------------------------------------------------------


def build_parser():
    parser = SeglightArgumentParser(
        prog="seglight export",
        description=(
            "Export a checkpoint to ONNX (default) or TorchScript with dynamic batch, height and "
            "width; class names, normalization and output stride go into the file's metadata. "
            "The exported model is then run on inputs of other sizes and compared with PyTorch."
        ),
    )
    parser.add_argument("--ckpt_path", type=str, required=True, help="Lightning checkpoint.")
    parser.add_argument("--format", choices=FORMATS, default="onnx", help="Output format.")
    parser.add_argument(
        "--output",
        type=str | None,
        default=None,
        help="Output file (default: the checkpoint's path with .onnx / .pt).",
    )
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset version.")
    parser.add_argument(
        "--mean",
        type=str | None,
        default=None,
        help="Per-channel normalization mean, e.g. 0.485,0.456,0.406 (default: ImageNet's).",
    )
    parser.add_argument(
        "--std",
        type=str | None,
        default=None,
        help="Per-channel normalization std, e.g. 0.229,0.224,0.225 (default: ImageNet's).",
    )
    parser.add_argument(
        "--check_sizes",
        type=str,
        default=DEFAULT_CHECK_SIZES,
        help="Comma-separated HxW or BxHxW sizes the exported model is checked on "
        "(HxW: batch 1, 2, ...).",
    )
    parser.add_argument(
        "--example_size",
        type=str | None,
        default=None,
        help="HxW of the example input the graph is traced with "
        "(default: not a multiple of the output stride, and larger than 256).",
    )
    parser.add_argument(
        "--tolerance", type=float, default=1e-4, help="Max abs difference allowed (fp32)."
    )
    parser.add_argument(
        "--dynamo",
        type=bool,
        default=False,
        help="Use torch.onnx's dynamo exporter instead of the TorchScript-based one.",
    )
    return parser


def _floats(text: str | None, default: Sequence[float], key: str, channels: int) -> list[float]:
    if text is None:
        values = list(default)
    else:
        try:
            values = [
                float(v) for v in text.strip().strip("[]()").replace(" ", ",").split(",") if v
            ]
        except ValueError:
            raise ConfigError(f"{key}: expected numbers like 0.5,0.5,0.5, got {text!r}") from None
    if len(values) != channels:
        raise ConfigError(f"{key}: {len(values)} values for a model with {channels} input channels")
    return values


def _sizes(text: str, key: str) -> list[tuple[int, int, int]]:
    sizes = []
    for i, item in enumerate(p for p in text.replace(" ", "").split(",") if p):
        try:
            dims = [int(v) for v in item.lower().split("x")]
        except ValueError:
            dims = []
        if len(dims) == 2:
            dims = [i + 1, *dims]
        if len(dims) != 3 or min(dims) < 1:
            raise ConfigError(f"{key}: expected HxW or BxHxW sizes, got {item!r}")
        sizes.append(tuple(dims))
    if not sizes:
        raise ConfigError(f"{key}: no size given")
    return sizes


def _example_size(text: str | None, stride: int) -> tuple[int, int]:
    if text is not None:
        (_, h, w), *_ = _sizes(text, "example_size")
        return h, w
    # Off the stride in both dimensions, so the traced graph holds the padding; large enough
    # for decoders that pool the deepest features further (PAN).
    base = max(8 * stride, 256)
    return base + 7, base + 13


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return f"{n} B"


def run_export(argv: Sequence[str]) -> int:
    """`seglight export ...`: 0 when the exported model matches PyTorch on every check size."""
    cfg = build_parser().parse_args(list(argv))
    if cfg.tolerance <= 0:
        raise ConfigError(f"tolerance: must be > 0, got {cfg.tolerance}")
    check_sizes = _sizes(cfg.check_sizes, "check_sizes")
    module = load_module(cfg.ckpt_path)
    in_channels = int(module.hparams.get("in_channels", 3))
    mean = _floats(cfg.mean, IMAGENET_MEAN, "mean", in_channels)
    std = _floats(cfg.std, IMAGENET_STD, "std", in_channels)
    if any(s <= 0 for s in std):
        raise ConfigError(f"std: must be > 0, got {std}")
    ckpt = Path(cfg.ckpt_path)
    output = Path(cfg.output) if cfg.output else ckpt.with_suffix(SUFFIXES[cfg.format])
    output.parent.mkdir(parents=True, exist_ok=True)
    metadata = build_metadata(module, mean, std)
    h, w = _example_size(cfg.example_size, module.stride)
    clashes = [s for s in check_sizes if s[1:] == (h, w)]
    if clashes:
        raise ConfigError(
            f"check_sizes: {h}x{w} is the example size the graph is traced with; check other "
            f"sizes, or it proves nothing about dynamic shapes"
        )
    too_small = [s for s in check_sizes if min(s[1:]) < min_side(module.stride)]
    if too_small:
        size = "x".join(map(str, too_small[0][1:]))
        raise ConfigError(
            f"check_sizes: {size} is below the smallest side the exported model takes, "
            f"{min_side(module.stride)} px (it pads to multiples of the stride, "
            f"{module.stride}, by reflection)"
        )
    wrapper = ExportWrapper(module).eval()
    example = torch.randn(1, in_channels, h, w, generator=torch.Generator().manual_seed(1))
    references = reference_outputs(wrapper, check_sizes, in_channels)

    try:
        if cfg.format == "onnx":
            export_onnx(wrapper, example, output, cfg.opset, cfg.dynamo, metadata)
            run_exported = onnx_runner(output)
        else:
            export_torchscript(wrapper, example, output, metadata)
            run_exported = torchscript_runner(output)
    except ConfigError:
        raise
    except ImportError as e:
        raise ConfigError(
            f"format: {cfg.format} export needs `pip install seglight[export]` ({_first_line(e)})"
        ) from None
    except Exception as e:  # noqa: BLE001 - the exporter's traceback says little to a user
        output.unlink(missing_ok=True)
        why = _first_line(e)
        if cfg.format == "onnx":  # tracing keeps ops such as adaptive pooling size-generic
            why += " (--format torchscript may still export it with dynamic shapes)"
        raise _cannot_export(module, why) from None

    results = check_parity(run_exported, references, cfg.tolerance)
    print(f"exported {type(module).__name__} ({metadata['arch']}, {metadata['encoder_name']}) "
          f"to {output} ({cfg.format}, {_human(output.stat().st_size)})")  # fmt: skip
    print(f"  traced with a 1x{in_channels}x{h}x{w} input; dynamic axes: batch, height, width")
    keys = ("class_names", "num_classes", "ignore_index", "output_stride", "min_side", "mean")
    for key in (*keys, "std"):
        print(f"  {key}: {metadata[key]}")
    print(f"  inputs: {metadata['preprocessing']}")
    print(f"parity against PyTorch (tolerance {cfg.tolerance:g}):")
    for r in results:
        size = "x".join(map(str, [r["size"][0], in_channels, *r["size"][1:]]))
        if r["max_abs_diff"] is None:
            print(f"  {size}: FAILED ({r['error']})")
        else:
            verdict = "ok" if r["ok"] else "FAILED"
            print(f"  {size}: max abs diff {r['max_abs_diff']:.3g} {verdict}")
    sys.stdout.flush()
    failed = [r for r in results if r["max_abs_diff"] is None or not r["ok"]]
    if not failed:
        return 0
    first = failed[0]
    size = "x".join(map(str, first["size"]))
    if first["max_abs_diff"] is None:
        why = f"the exported model fails on a {size} input (BxHxW): {first['error']}"
    else:
        why = (
            f"on a {size} input (BxHxW) it differs from PyTorch by {first['max_abs_diff']:.3g} "
            f"(> {cfg.tolerance:g}); the trace may have baked in the example's size"
        )
    if cfg.format == "torchscript":
        why += "; try --format onnx"
    output.unlink(missing_ok=True)  # a file that does not work must not be picked up
    raise _cannot_export(module, why)
