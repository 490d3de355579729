"""Latency and peak memory of a network per inference mode (fp32, bf16 / fp16 autocast,
channels_last, torch.compile): warm-up first, GPU synchronized, median and IQR over repeats."""

import contextlib
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

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
