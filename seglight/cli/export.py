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

import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from seglight import checkpoints
from seglight.cli.parser import SeglightArgumentParser
from seglight.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from seglight.deployment import (  # noqa: F401 - ExportWrapper, INPUT_NAME...: their old home
    DYNAMIC_AXES,
    INPUT_NAME,
    METADATA_FILE,
    OUTPUT_NAME,
    ExportWrapper,
    build_metadata,
    cannot_export,
    check_parity,
    export_onnx,
    export_torchscript,
    first_line,
    min_side,
    onnx_runner,
    reference_outputs,
    torchscript_runner,
)
from seglight.errors import ConfigError
from seglight.module import SegmentationModule
from seglight.networks.compiled import PLAIN

FORMATS = ("onnx", "torchscript")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt"}
DEFAULT_CHECK_SIZES = "64x96,75x99"  # batch 1 then 2; 64x96 needs no padding, 75x99 does


def load_module(ckpt_path: str | Path) -> SegmentationModule:
    """The SegmentationModule (or the subclass the checkpoint names) of a Lightning checkpoint,
    on the CPU, in eval mode, fp32, with the plain network (not compiled, default memory
    format: a compiled graph cannot be traced); the file is read once
    (seglight.checkpoints.load_module). Unusable files raise ConfigError saying why."""
    try:
        module = checkpoints.load_module(
            ckpt_path, map_location="cpu", base=SegmentationModule, **PLAIN
        )
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - state-dict mismatch, bad hparams: one line
        raise ConfigError(
            f"ckpt_path: could not rebuild the module of {ckpt_path}: {first_line(e)}"
        ) from None
    return module.float().eval()


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
        help="Per-channel normalization mean, e.g. 0.485,0.456,0.406 (default: the run's "
        "data.mean, stored in the checkpoint; ImageNet's for files that lack it).",
    )
    parser.add_argument(
        "--std",
        type=str | None,
        default=None,
        help="Per-channel normalization std, e.g. 0.229,0.224,0.225 (default: the run's "
        "data.std, as --mean).",
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
        if len(values) != channels:  # ImageNet's 3 values cannot serve a multispectral model
            raise ConfigError(
                f"{key}: the model takes {channels} input channels, the default (the checkpoint "
                f"records no data.{key}: ImageNet's) "
                f"has {len(values)} values; pass --mean and --std with {channels} values each, "
                f"the data config's data.mean / data.std"
            )
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
    # The run's data.mean / data.std, from the checkpoint; ImageNet's for files without them.
    stored = getattr(module, "data_normalization", None) or (IMAGENET_MEAN, IMAGENET_STD)
    mean = _floats(cfg.mean, stored[0], "mean", in_channels)
    std = _floats(cfg.std, stored[1], "std", in_channels)
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
            f"format: {cfg.format} export needs `pip install seglight[export]` ({first_line(e)})"
        ) from None
    except Exception as e:  # noqa: BLE001 - the exporter's traceback says little to a user
        output.unlink(missing_ok=True)
        why = first_line(e)
        if cfg.format == "onnx":  # tracing keeps ops such as adaptive pooling size-generic
            why += " (--format torchscript may still export it with dynamic shapes)"
        raise cannot_export(module, why) from None

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
    raise cannot_export(module, why)
