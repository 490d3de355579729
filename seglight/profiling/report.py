"""What `seglight benchmark` prints and writes from its measurements: the report lines, the
Markdown rows for a paper table, and the warning when loading, not the model, limits training."""

import math
from typing import Any

DATA_WARNING = 0.2  # warn when waiting for data exceeds this fraction of the step's compute


def _mib(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 2**20:.0f} MiB"


def _memory(memory: dict[str, Any]) -> str:
    if memory.get("kind") == "cuda_max_memory_allocated":
        return f"{_mib(memory['peak_bytes'])}"
    return f"RSS {_mib(memory['peak_bytes'])} (+{_mib(memory['growth_bytes'])})"


def loading_warning(training: dict[str, Any] | None, threshold: float = DATA_WARNING) -> str | None:
    """One line when waiting for data exceeds `threshold` of the step's compute, else None."""
    if not training:
        return None
    wait, step = training["data_wait"]["median_ms"], training["step"]["median_ms"]
    total_wait = training["data_fraction"] / max(1 - training["data_fraction"], 1e-9)
    ratio = max(wait / step if step > 0 else math.inf, total_wait)
    if ratio <= threshold:
        return None
    return (
        f"warning: loading limits training: waiting for data is {ratio:.0%} of the step's compute "
        f"(median {wait:.1f} ms vs {step:.1f} ms per batch; {training['data_fraction']:.0%} of "
        f"all the time spent waiting); raise data.num_workers (now "
        f"{training['num_workers']}), or make decoding / augmentation cheaper"
    )


def format_report(result: dict[str, Any]) -> str:
    env, s = result["environment"], result["settings"]
    params, flops = result["parameters"], result["flops"]
    size = "x".join(map(str, s["input_size"]))
    padded = "x".join(map(str, s["padded_to"]))
    pad = "" if padded == size else f", padded to {padded} (output stride {s['output_stride']})"
    threads = f"{env['torch_threads']} torch threads"
    load = env.get("load_average_1_5_15")
    load_note = f", load average {load[0]:.1f} on {env['cpu_count']} cores" if load else ""
    check = flops["conv_linear_count"]
    agree = "equal"
    if check != flops["per_image"]:
        agree = (f"{check / 1e9:.4g} G, {check / max(flops['per_image'], 1):.1%} of torch's (ops "
                 f"outside Conv/Linear modules: attention, functional convolutions)")  # fmt: skip
    lines = [
        f"benchmark of {result['model']} on {env['device']} ({env['device_name']}; {threads}"
        f"{load_note}); torch {env['torch']}, lightning {env['lightning']}",
        f"  input: {size} ({s['input_size_from']}){pad}; latency at batch 1, throughput at batch "
        f"{s['batch_size']}; {s['warmup']} warm-up + {s['repeats']} timed calls",
        f"  parameters: {params['total']:,} ({params['total'] / 1e6:.2f} M), trainable "
        f"{params['trainable']:,}",
        f"  FLOPs: {flops['gflops']:.4g} GFLOPs per {padded} image = {flops['gmacs']:.4g} GMACs "
        f"(torch.utils.flop_counter, 2 FLOPs per multiply-accumulate); Conv/Linear shape count: "
        f"{agree}",
        f"  {'mode':<14} {'latency ms: median [q1-q3] (min-max)':<38} {'images/s':>10}  "
        f"peak memory",
    ]
    for mode, m in result["inference"].items():
        lat = m["latency"]
        spread = (f"{lat['median_ms']:.2f} [{lat['q1_ms']:.2f}-{lat['q3_ms']:.2f}] "
                  f"({lat['min_ms']:.2f}-{lat['max_ms']:.2f})")  # fmt: skip
        lines.append(f"  {mode:<14} {spread:<38} {m['images_per_s']:>10.1f}  "
                     f"{_memory(m['peak_memory'])}")  # fmt: skip
    for mode, why in result["skipped_modes"].items():
        lines.append(f"  {mode:<14} skipped: {why}")
    if any(m["peak_memory"]["kind"] == "process_peak_rss" for m in result["inference"].values()):
        lines.append("  (CPU peak memory: the whole process's peak resident set size, and its "
                     "growth in that mode; not tensors alone)")  # fmt: skip
    training = result["training"]
    if training:
        lines.append(
            f"  training ({training['precision']}, batch {training['batch_size']}, "
            f"{training['num_workers']} workers, {training['steps']} steps): "
            f"{training['images_per_s']:.1f} images/s ({training['compute_images_per_s']:.1f} "
            f"without the data wait); step {training['step']['median_ms']:.1f} ms, data wait "
            f"{training['data_wait']['median_ms']:.1f} ms (medians); peak memory "
            f"{_memory(training['peak_memory'])}"
        )
        warning = loading_warning(training, s["data_warning_fraction"])
        if warning:
            lines.append(warning)
    return "\n".join(lines)


def markdown_rows(result: dict[str, Any]) -> str:
    """A Markdown table: one row per inference mode, then the training throughput."""
    env, s, flops = result["environment"], result["settings"], result["flops"]
    size = "x".join(map(str, s["padded_to"]))
    head = (
        "| model | input | params (M) | GFLOPs | device | mode | latency ms (b=1, median "
        f"[IQR]) | images/s (b={s['batch_size']}) | peak memory |\n"
        "|---|---|---|---|---|---|---|---|---|"
    )
    rows = [head]
    for mode, m in result["inference"].items():
        lat = m["latency"]
        rows.append(
            f"| {result['model']} | {size} | {result['parameters']['total'] / 1e6:.2f} | "
            f"{flops['gflops']:.3g} | {env['device_name']} | {mode} | {lat['median_ms']:.2f} "
            f"[{lat['iqr_ms']:.2f}] | {m['images_per_s']:.1f} | {_memory(m['peak_memory'])} |"
        )
    training = result["training"]
    if training:
        rows.append(
            f"\nTraining ({training['precision']}, batch {training['batch_size']}, "
            f"{training['num_workers']} workers): {training['images_per_s']:.1f} images/s; data "
            f"wait {training['data_fraction']:.0%} of the time. Measured {env['date']}, torch "
            f"{env['torch']}, {env['torch_threads']} threads."
        )
    return "\n".join(rows)
