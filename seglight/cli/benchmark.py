"""`seglight benchmark`: the row a paper table needs, measured on this machine and stamped.

    python -m seglight benchmark --config configs/quickstart.yaml
    python -m seglight benchmark --config configs/voc.yaml --ckpt_path best.ckpt \
        --input_size 512 512 --modes fp32,bf16,compile --output runs/voc_benchmark.json

Builds the model and data module of the same config files and flags `fit` takes (no run), then
measures (seglight.profiling; the report: seglight.profiling.report): parameters; FLOPs of one
forward at the input size (torch's flop_counter, 2 per multiply-accumulate, checked against a
count from the Conv/Linear shapes);
inference latency (batch 1) and throughput (--batch_size) per mode (fp32, bf16 / fp16 autocast,
channels_last, torch.compile; what the device cannot run is skipped with the reason), with
warm-up, GPU synchronization, median and spread over --repeats; peak memory; and a few real
training steps on the configured training loader: images/s, and whether waiting for data, not
the model, limits them. Writes <default_root_dir>/benchmark.json (every number, the hardware,
software versions and settings) and benchmark.md (the Markdown rows). Timings are of the network
alone on one input: the data's eval protocol (sliding window, TTA) multiplies them.
"""

import argparse
import json
import logging
import math
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from seglight import checkpoints, profiling
from seglight.cli.lightning import build_cli
from seglight.errors import ConfigError
from seglight.profiling.report import DATA_WARNING, format_report, markdown_rows


class _OneLineParser(argparse.ArgumentParser):
    """argparse prints its whole usage before an error; seglight's errors are one line."""

    def error(self, message: str):  # type: ignore[override]
        sys.stderr.write(f"seglight: error: benchmark: {message} (`seglight benchmark --help`)\n")
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="seglight benchmark",
        description="Parameters, FLOPs, latency, throughput, peak memory and training "
        "throughput of the configured model, as a JSON and a Markdown row. Every other flag "
        "(--config, --model.*, --data.*, --trainer.*) builds the model and data as `fit` does; "
        "--trainer.accelerator picks the device.",
    )
    add = parser.add_argument
    add("--ckpt_path", default=None, help="Checkpoint whose weights to load (default: none, "
        "random weights; the numbers other than accuracy do not depend on them).")  # fmt: skip
    add("--input_size", "--input-size", type=int, nargs=2, metavar=("H", "W"), default=None,
        help="Input height and width (default: data.crop_size, else data.image_size).")  # fmt: skip
    add("--batch_size", "--batch-size", type=int, default=None,
        help="Batch of the throughput measurement (default: data.batch_size).")  # fmt: skip
    add("--repeats", type=int, default=20, help="Timed calls per measurement.")
    add("--warmup", type=int, default=5, help="Untimed calls (and training steps) first.")
    add("--modes", default=None, help=f"Comma-separated, of {','.join(profiling.MODES)} "
        "(default: all the device supports; compile only on a GPU).")  # fmt: skip
    add(
        "--train_steps",
        "--train-steps",
        type=int,
        default=20,
        help="Timed training steps on the real training loader (0: no training measurement).",
    )
    add(
        "--output",
        default=None,
        help="JSON file (default: <default_root_dir>/benchmark.json; .md beside it).",
    )
    return parser


def run_benchmark(argv: Sequence[str]) -> int:
    args, rest = build_parser().parse_known_args(list(argv))
    _check_args(args)
    if rest[:1] and rest[0] in ("fit", "validate", "test", "predict"):
        rest = rest[1:]  # `seglight benchmark fit --config ...` reads naturally too
    with warnings.catch_warnings():  # the args are ours, sys.argv the `benchmark` line
        warnings.filterwarnings("ignore", "LightningCLI's args parameter is intended")
        cli = _quietly(build_cli, rest, False)
    module, datamodule = cli.model, cli.datamodule
    if args.ckpt_path:
        _load_weights(module, args.ckpt_path)
    device = cli.trainer.strategy.root_device
    modes, skipped = _modes(args.modes, device)
    size, size_from = _input_size(args.input_size, datamodule)
    batch = args.batch_size or datamodule.batch_size
    stride = int(getattr(module, "stride", 1) or 1)
    padded = tuple(math.ceil(s / stride) * stride for s in size)  # what the network runs on
    hp = module.hparams
    channels = int(hp.get("in_channels", 3))
    name = f"{hp.get('arch', type(module).__name__)} {hp.get('encoder_name', '')}".strip()

    module.to(device).eval()
    net = module.net
    generator = torch.Generator().manual_seed(0)
    one = torch.randn(1, channels, *padded, generator=generator).to(device)
    many = torch.randn(batch, channels, *padded, generator=generator).to(device)
    flops = profiling.count_flops(net, one)
    conv_flops = profiling.count_conv_flops(net, one)
    inference: dict[str, Any] = {}
    for mode in modes:
        try:
            with (
                profiling.peak_memory(device) as memory,
                profiling.inference_mode(net, mode, device) as forward,
            ):
                latency = profiling.time_forward(forward, one, args.repeats, args.warmup)
                throughput = profiling.time_forward(forward, many, args.repeats, args.warmup)
        except Exception as e:  # noqa: BLE001 - a mode this model/device cannot run: noted
            skipped[mode] = f"failed: {type(e).__name__}: {_first_line(e)}"
            continue
        inference[mode] = {
            "latency": latency,
            "throughput": throughput,
            "images_per_s": batch / (throughput["median_ms"] / 1000),
            "peak_memory": memory,
        }
    training = None
    if args.train_steps:
        module.train()
        training = _quietly(
            profiling.train_throughput, module, datamodule, device, args.train_steps,
            args.warmup, cli.trainer.precision, cli.trainer.default_root_dir,
        )  # fmt: skip
    result = {
        "model": name,
        "module": f"{type(module).__module__}.{type(module).__name__}",
        "checkpoint": args.ckpt_path,
        "parameters": profiling.count_parameters(module),
        "flops": {
            "per_image": flops,
            "gflops": flops / 1e9,
            "gmacs": flops / 2e9,
            "convention": "FLOPs = 2 x multiply-accumulates of convolutions and matrix products "
            "(torch.utils.flop_counter); element-wise ops not counted",
            "conv_linear_count": conv_flops,
            "input": [1, channels, *padded],
        },
        "inference": inference,
        "skipped_modes": skipped,
        "training": training,
        "environment": profiling.environment(device),
        "settings": {
            "argv": ["seglight", "benchmark", *argv],
            "input_size": list(size),
            "input_size_from": size_from,
            "padded_to": list(padded),
            "output_stride": stride,
            "batch_size": batch,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "modes": modes,
            "train_steps": args.train_steps,
            "trainer_precision": str(cli.trainer.precision),
            "model_compile": hp.get("compile"),
            "model_channels_last": hp.get("channels_last"),
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "data_warning_fraction": DATA_WARNING,
        },
    }
    root = Path(cli.trainer.default_root_dir)
    json_path = Path(args.output) if args.output else root / "benchmark.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2))
    rows = markdown_rows(result)
    json_path.with_suffix(".md").write_text(rows + "\n")
    print(format_report(result))
    print(rows)
    print(f"benchmark: {json_path} and {json_path.with_suffix('.md')}")
    return 0


def _check_args(args: argparse.Namespace) -> None:
    for key, low in (("repeats", 1), ("warmup", 0), ("train_steps", 0), ("batch_size", 1)):
        value = getattr(args, key)
        if value is not None and value < low:
            raise ConfigError(f"benchmark: --{key} must be >= {low}, got {value}")
    if args.input_size is not None and min(args.input_size) < 1:
        raise ConfigError(f"benchmark: --input_size must be two positive sizes, got "
                          f"{args.input_size}")  # fmt: skip


def _modes(text: str | None, device: torch.device) -> tuple[list[str], dict[str, str]]:
    """The modes to run and {mode: why not} for those requested or known that cannot run here."""
    if text is None:
        modes = profiling.default_modes(device)
        skipped = {m: profiling.mode_support(m, device) or "not a default on this device "
                   "(--modes ...,compile to measure it)"
                   for m in profiling.MODES if m not in modes}  # fmt: skip
        return modes, skipped
    asked = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in asked if m not in profiling.MODES]
    if unknown or not asked:
        raise ConfigError(f"benchmark: --modes {text!r}: expected a comma-separated list of "
                          f"{', '.join(profiling.MODES)}")  # fmt: skip
    skipped = {m: why for m in asked if (why := profiling.mode_support(m, device))}
    return [m for m in dict.fromkeys(asked) if m not in skipped], skipped


def _input_size(given, datamodule) -> tuple[tuple[int, int], str]:
    if given is not None:
        return (int(given[0]), int(given[1])), "--input_size"
    crop = getattr(datamodule, "crop_size", None)
    if crop:
        return (int(crop[0]), int(crop[1])), "data.crop_size"
    side = getattr(datamodule, "image_size", None)
    if isinstance(side, int):
        return (side, side), "data.image_size"
    if isinstance(side, Sequence) and len(side) == 2:
        return (int(side[0]), int(side[1])), "data.image_size"
    raise ConfigError(f"benchmark: {type(datamodule).__name__} states no crop_size or image_size; "
                      f"pass --input_size H W")  # fmt: skip


def _load_weights(module, path: str) -> None:
    """The checkpoint's weights into the configured model (seglight.checkpoints: read once,
    checked to be a seglight checkpoint that fits this model)."""
    checkpoint = checkpoints.read_checkpoint(path)
    checkpoints.check_seglight_checkpoint(path, checkpoint)
    checkpoints.check_matches_model(path, checkpoint, module)
    module.load_state_dict(checkpoint["state_dict"])


def _quietly(fn, *args):
    """`fn(*args)` without Lightning's info lines (GPU available, ...): the report is the output."""
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        return fn(*args)
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _first_line(error: BaseException, limit: int = 160) -> str:
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    line = lines[0] if lines else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."
