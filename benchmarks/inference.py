"""Inference cost on the CPU: sliding window vs whole image, channels_last, bf16, onnxruntime.

    .venv/bin/python benchmarks/inference.py [--size 256 512] [--window 256 256] [--repeats 5]

One smp Unet / resnet18 (random init, eval mode, 19 classes) on one (1, 3, H, W) image:
1. slide vs whole: a sliding window runs the network on every window, so its cost should be the
   whole-image cost times the ratio of window pixels to image pixels (windows x window area /
   padded image area). Prints measured slide / whole, that theoretical ratio, and the target
   check: slide time <= 1.15 x ratio x whole time (the 15% is the price of accumulating and
   weighting the window logits).
2. channels_last and bf16 autocast against fp32 eager, whole image.
3. onnxruntime against PyTorch eager (needs the `export` extra: onnx, onnxruntime).
Each number is the median of --repeats runs after a warm-up, in this one process.
"""

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch

from seglight.evaluation import EvalProtocol, predict_logits
from seglight.module import SegmentationModule


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: allocator, oneDNN kernel selection
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def window_pixel_ratio(size, window, stride, output_stride) -> float:
    """Pixels the windows cover (counting overlaps) / pixels of the padded whole image."""
    h, w = size
    counts = [
        max(math.ceil((s - k) / t), 0) + 1 for s, k, t in zip(size, window, stride, strict=True)
    ]
    padded = (
        math.ceil(h / output_stride) * output_stride * math.ceil(w / output_stride) * output_stride
    )
    return counts[0] * counts[1] * window[0] * window[1] / padded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=2, default=[256, 512])
    parser.add_argument("--window", type=int, nargs=2, default=[256, 256])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    module = SegmentationModule(arch="Unet", encoder_name="resnet18", num_classes=19).eval()
    image = torch.randn(1, 3, *args.size)
    protocol = EvalProtocol(mode="slide", window=tuple(args.window))
    print(f"threads={torch.get_num_threads()} image 1x3x{args.size[0]}x{args.size[1]}, "
          f"Unet/resnet18, 19 classes, median of {args.repeats}")  # fmt: skip

    with torch.inference_mode():
        whole = median_seconds(lambda: module(image), args.repeats)
        slide = median_seconds(
            lambda: predict_logits(module, image, module.stride, protocol, 19), args.repeats
        )
        ratio = window_pixel_ratio(args.size, protocol.window, protocol.stride, module.stride)
        print(f"\nwhole {whole * 1000:.1f} ms; {protocol.describe()} {slide * 1000:.1f} ms")
        print(f"slide/whole = {slide / whole:.2f}; window-pixel ratio = {ratio:.2f}; "
              f"slide <= 1.15 x ratio x whole: {slide <= 1.15 * ratio * whole} "
              f"({slide / (ratio * whole):.2f} x)")  # fmt: skip

        module_cl = SegmentationModule(arch="Unet", encoder_name="resnet18", num_classes=19).eval()
        module_cl.load_state_dict(module.state_dict())
        module_cl = module_cl.to(memory_format=torch.channels_last)
        image_cl = image.contiguous(memory_format=torch.channels_last)
        channels_last = median_seconds(lambda: module_cl(image_cl), args.repeats)

        def bf16():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return module(image)

        bf16_time = median_seconds(bf16, args.repeats)
        print(f"\nfp32 eager {whole * 1000:.1f} ms; channels_last {channels_last * 1000:.1f} ms "
              f"(ratio {channels_last / whole:.2f}); bf16 autocast {bf16_time * 1000:.1f} ms "
              f"(ratio {bf16_time / whole:.2f})")  # fmt: skip

    try:
        import onnxruntime as ort

        from seglight.cli.export import ExportWrapper, build_metadata, export_onnx
    except ImportError as e:
        print(f"\nonnxruntime: skipped ({e}); install the `export` extra")
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        example = torch.randn(1, 3, 263, 269)  # off the stride, as `seglight export` uses
        metadata = build_metadata(module, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
        export_onnx(ExportWrapper(module), example, path, 17, False, metadata)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        feed = {name: image.numpy()}
        onnx_time = median_seconds(lambda: session.run(None, feed), args.repeats)
    print(f"\nonnxruntime {onnx_time * 1000:.1f} ms vs PyTorch eager {whole * 1000:.1f} ms "
          f"(ratio onnxruntime/eager {onnx_time / whole:.2f})")  # fmt: skip


if __name__ == "__main__":
    main()
