"""Measuring a model for a paper table: parameters, FLOPs, latency, throughput, peak memory, and
training throughput of the real data pipeline (`seglight benchmark` prints and stamps them).

    count_parameters(module)                 {"total", "trainable"}: sum(p.numel()), shared once
    count_flops(net, x)                      torch.utils.flop_counter's total for one forward
    count_conv_flops(net, x)                 the same from Conv/Linear shapes (an independent check)
    time_forward(fn, x, repeats, warmup)     seconds per call: median, IQR, min, max
    train_throughput(module, datamodule...)  images/s of real training steps, data wait vs compute

FLOPs convention: 2 per multiply-accumulate (torch's flop_counter; "GFLOPs" = 2 x "GMACs") of
convolutions and matrix products; element-wise work (activations, norms, bias, resizing) is not
counted. Timing: warm-up calls first, every call bracketed by torch.cuda.synchronize() on a GPU.
Peak memory: on CUDA the caching allocator's max_memory_allocated (tensors only); on a CPU the
process's peak resident set size (ru_maxrss), a high-water mark of the whole process, not of
tensors alone (torch's CPU allocator keeps no peak counter).
"""

import contextlib
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from importlib import metadata
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

# --- size ----------------------------------------------------------------------------------------


def count_parameters(module: nn.Module) -> dict[str, int]:
    """{"total": every parameter's numel, "trainable": those with requires_grad}; a parameter
    shared between submodules counts once (nn.Module.parameters() yields it once)."""
    params = list(module.parameters())
    return {
        "total": sum(p.numel() for p in params),
        "trainable": sum(p.numel() for p in params if p.requires_grad),
    }


@torch.no_grad()
def count_flops(net: nn.Module, example: torch.Tensor) -> int:
    """FLOPs of one forward of `net` on `example` (its whole batch), as torch.utils.flop_counter
    counts them: 2 per multiply-accumulate of convolutions and matrix products."""
    with FlopCounterMode(display=False) as counter:
        net(example)
    return int(counter.get_total_flops())


@torch.no_grad()
def count_conv_flops(net: nn.Module, example: torch.Tensor) -> int:
    """FLOPs of the nn.Conv*/ConvTranspose*/Linear modules of `net` on `example`, from their
    weight and output shapes (2 x Cin/groups x Cout x kernel x output positions): a count that
    shares no code with torch's. Functional convolutions (F.conv2d outside a module) are missed."""
    total = 0

    def hook(module: nn.Module, inputs: tuple, output: Any) -> None:
        nonlocal total
        x, y = inputs[0], output
        if isinstance(module, nn.Linear):
            total += 2 * x.numel() // x.shape[-1] * module.in_features * module.out_features
            return
        kernel = module.weight.shape[2:].numel()
        per_position = module.in_channels // module.groups * module.out_channels * kernel
        if isinstance(module, nn.modules.conv._ConvTransposeNd):  # each input position scatters
            positions = x.shape[0] * x.shape[2:].numel()
        else:  # each output position gathers
            positions = y.shape[0] * y.shape[2:].numel()
        total += 2 * per_position * positions

    kinds = (nn.modules.conv._ConvNd, nn.Linear)
    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, kinds)]
    try:
        net(example)
    finally:
        for handle in handles:
            handle.remove()
    return total


# --- time ---------------------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA kernels run asynchronously); no-op on a CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def spread(seconds: list[float]) -> dict[str, float]:
    """median, IQR (q3 - q1, with its q1 and q3), min, max and n of a list of durations, in ms."""
    ms = sorted(s * 1000 for s in seconds)
    q1, _, q3 = statistics.quantiles(ms, n=4) if len(ms) > 1 else (ms[0], ms[0], ms[0])
    return {
        "median_ms": statistics.median(ms),
        "q1_ms": q1,
        "q3_ms": q3,
        "iqr_ms": q3 - q1,
        "min_ms": ms[0],
        "max_ms": ms[-1],
        "n": len(ms),
    }


@torch.no_grad()
def time_forward(
    fn: Callable[[torch.Tensor], Any], x: torch.Tensor, repeats: int, warmup: int
) -> dict[str, float]:
    """Wall-clock seconds of `fn(x)`: `warmup` untimed calls (allocator, cuDNN autotuning,
    compilation), then `repeats` timed ones, each between two synchronizations of x's device."""
    for _ in range(warmup):
        fn(x)
    synchronize(x.device)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(x)
        synchronize(x.device)
        seconds.append(time.perf_counter() - start)
    return spread(seconds)


# --- memory -------------------------------------------------------------------------------------


def peak_rss_bytes() -> int:
    """The process's peak resident set size so far (Linux reports KiB, macOS bytes); 0 where
    the `resource` module is missing (Windows)."""
    try:
        import resource
    except ImportError:
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


@contextlib.contextmanager
def peak_memory(device: torch.device) -> Iterator[dict[str, Any]]:
    """Fills the yielded dict with the peak memory of the block: on CUDA the most bytes tensors
    held (max_memory_allocated, after a reset); on a CPU the process's peak RSS after the block
    and its growth during it (0 when an earlier peak was higher: RSS peaks never go down)."""
    out: dict[str, Any] = {}
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    else:
        before = peak_rss_bytes()
    yield out
    if device.type == "cuda":
        synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        out.update(kind="cuda_max_memory_allocated", peak_bytes=peak, growth_bytes=peak - before)
    else:
        peak = peak_rss_bytes()
        out.update(kind="process_peak_rss", peak_bytes=peak, growth_bytes=peak - before)


# --- inference modes ----------------------------------------------------------------------------

MODES = ("fp32", "bf16", "fp16", "channels_last", "compile")


def mode_support(mode: str, device: torch.device) -> str | None:
    """Why `mode` cannot run on `device`, or None when it can."""
    if mode not in MODES:
        return f"unknown mode (one of {', '.join(MODES)})"
    if mode == "fp16" and device.type != "cuda":
        return "fp16 autocast is for GPUs (on a CPU it is emulated, not a speed-up): use bf16"
    if mode == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return f"{torch.cuda.get_device_name(device)} has no bf16"
    return None


def default_modes(device: torch.device) -> list[str]:
    """fp32, bf16 and channels_last everywhere; fp16 and compile on a GPU (compiling on a CPU
    takes minutes and needs a C++ compiler: ask for it with --modes)."""
    modes = ["fp32", "bf16", "fp16", "channels_last", "compile"]
    if device.type != "cuda":
        modes = ["fp32", "bf16", "channels_last"]
    return [m for m in modes if mode_support(m, device) is None]


@contextlib.contextmanager
def inference_mode(net: nn.Module, mode: str, device: torch.device) -> Iterator[Callable]:
    """A callable images -> logits running `net` (in place, restored after) in `mode`: fp32;
    bf16 / fp16 autocast (weights stay fp32, as under Lightning's *-mixed precision);
    channels_last weights and inputs; or torch.compile of the fp32 network."""
    if mode in ("bf16", "fp16"):
        dtype = torch.bfloat16 if mode == "bf16" else torch.float16

        def run(x: torch.Tensor):
            with torch.autocast(device.type, dtype=dtype):
                return net(x)

        yield run
    elif mode == "channels_last":
        net.to(memory_format=torch.channels_last)
        try:
            yield lambda x: net(x.contiguous(memory_format=torch.channels_last))
        finally:
            net.to(memory_format=torch.contiguous_format)
    elif mode == "compile":
        yield torch.compile(net)  # a wrapper: `net` itself stays uncompiled
    else:
        yield net


# --- training ----------------------------------------------------------------------------------


class StepTimer(Callback):
    """Lightning callback: per training step, the compute (on_train_batch_start -> end, GPU
    synchronized) and the wait before it (previous end -> start: the loader's next batch plus
    Lightning's bookkeeping)."""

    def __init__(self, device: torch.device) -> None:
        super().__init__()
        self.device = device
        self.step: list[float] = []
        self.data: list[float] = []
        self._end: float | None = None
        self._start = 0.0
        self.batch_sizes: list[int] = []

    def on_train_epoch_start(self, trainer, module) -> None:
        if self._end is None:
            self._end = time.perf_counter()  # the first batch's wait: loader (workers) start-up
        # later epochs: the wait includes the new epoch's loader start, as training has it

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        synchronize(self.device)
        self._start = time.perf_counter()
        self.data.append(self._start - (self._end or self._start))
        self.batch_sizes.append(int(batch["image"].shape[0]))

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        synchronize(self.device)
        self._end = time.perf_counter()
        self.step.append(self._end - self._start)


def train_throughput(
    module,
    datamodule,
    device: torch.device,
    steps: int,
    warmup: int,
    precision: Any = "32-true",
    root_dir: str | None = None,
) -> dict[str, Any]:
    """`warmup` + `steps` training steps of `module` on `datamodule`'s training loader (its
    workers, transforms and batch size) under a bare Lightning Trainer (no validation, logger,
    checkpoints or callbacks of the config): images/s, and the share of time spent waiting for
    data. The module's weights change (it trains)."""
    timer = StepTimer(device)
    trainer = L.Trainer(
        accelerator=device.type,
        devices=[device.index or 0] if device.type == "cuda" else 1,
        precision=precision,
        max_steps=warmup + steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
        default_root_dir=root_dir,
    )
    with peak_memory(device) as memory:
        trainer.fit(module, datamodule=datamodule)
    step, data = timer.step[warmup:], timer.data[warmup:]
    images = sum(timer.batch_sizes[warmup:])
    if not step:
        raise RuntimeError(f"training ran {len(timer.step)} steps, none after the warm-up")
    wall = sum(step) + sum(data)
    return {
        "steps": len(step),
        "warmup_steps": warmup,
        "batch_size": datamodule.batch_size,
        "num_workers": datamodule.num_workers,
        "precision": str(trainer.precision),
        "images_per_s": images / wall,
        "compute_images_per_s": images / sum(step),
        "step": spread(step),
        "data_wait": spread(data),
        "data_fraction": sum(data) / wall,
        "peak_memory": memory,
    }


# --- the stamp ----------------------------------------------------------------------------------


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else what `platform` knows."""
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_name()


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def environment(device: torch.device) -> dict[str, Any]:
    """Hardware and software a number was measured on, and how loaded the machine was."""
    env: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": str(device),
        "device_name": device_name(device),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": _version("lightning"),
        "segmentation_models_pytorch": _version("segmentation-models-pytorch"),
        "timm": _version("timm"),
        "seglight": _version("seglight"),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            gpu_memory_bytes=props.total_memory,
            gpu_count=torch.cuda.device_count(),
        )
    return env
