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

from seglight.profiling.counts import count_conv_flops, count_flops, count_parameters
from seglight.profiling.stamp import cpu_name, device_name, environment
from seglight.profiling.timing import (
    MODES,
    default_modes,
    inference_mode,
    mode_support,
    peak_memory,
    peak_rss_bytes,
    spread,
    synchronize,
    time_forward,
)
from seglight.profiling.training import StepTimer, train_throughput

__all__ = [
    "MODES", "StepTimer", "count_conv_flops", "count_flops", "count_parameters", "cpu_name",
    "default_modes", "device_name", "environment", "inference_mode", "mode_support",
    "peak_memory", "peak_rss_bytes", "spread", "synchronize", "time_forward", "train_throughput",
]  # fmt: skip
