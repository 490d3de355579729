"""Decode + augment throughput of seglight's VOC training pipeline vs PIL + torchvision v2.

    .venv/bin/python benchmarks/data.py [--images 64] [--repeats 7] [--quick] [--profile]

Generates `--images` VOC-sized photos (500x375 JPEG, quality 90: gradients, shapes, noise) and
their palette PNG masks (class ids 0..20, 255 on object borders) in VOC's on-disk layout, then
reads every image once per run inside one DataLoader worker process (one torch thread, seglight's
worker set-up), where training samples are loaded:

    ours      VOCDataModule(crop_size=512)'s train dataset, `dataset[i]`: seglight's decode
              (OpenCV for JPEGs, PIL for the PNG masks), label checks, then its default
              albumentations preset (transforms.train_preset: random scale 0.5-2.0, pad to
              512 (masks 255), random crop 512, flip, colour jitter p=0.5, Normalize) and the
              batch-dict tensors. "training path": `dataset[SampleKey(i,
              seed)]`, what the training sampler asks for: the same, plus reseeding the
              pipeline and the global RNGs per sample (seglight's resumable augmentations;
              in a worker the RNG states are not restored afterwards, in the main process
              with num_workers 0 they are, ~0.1 ms more per sample).
    baseline  PIL decode + torchvision.transforms.v2 on tv_tensors (Image + Mask) doing the same
              steps: ScaleJitter 0.5-2.0 of the image's own size (bilinear without antialias,
              as OpenCV's INTER_LINEAR in ours), RandomCrop 512 with pad_if_needed (mask fill
              255), flip, ColorJitter(0.25, 0.25, 0.25) p=0.5, ToDtype float / int64, Normalize.
    extra rows the baseline with v2's default antialias=True, and torchvision.io.decode_jpeg
              (libjpeg-turbo) instead of PIL for the image.

Each repeat reads every image once with every pipeline, image by image and pipeline after
pipeline (the order rotates each repeat), so a change of machine load hits all of them alike;
before each call the RNGs are seeded by the image's index, so every repeat does the same work.
Decode alone (ours: `dataset.load(i)`, the baseline: PIL open + convert) is timed the same way,
to tell decoding from augmenting. Time is taken on the wall clock and as process CPU time (the
steadier one on a shared machine). Prints images/s per repeat, medians, and the ratio
ours / baseline (> 1: seglight is faster); target >= 1.5. Exits 0 whatever the numbers: a
benchmark, not a test.
"""

import argparse
import cProfile
import io
import platform
import pstats
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import albumentations
import cv2
import numpy as np
import torch
import torchvision
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.io import ImageReadMode, decode_jpeg, read_file
from torchvision.transforms import v2

from seglight.data import VOCDataModule
from seglight.data.base import seed_worker
from seglight.data.sampling import SampleKey
from seglight.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from seglight.render import voc_palette

SIZE = (375, 500)  # (H, W) of a typical VOC photo
CROP = 512
TARGET = 1.5


def make_voc(root: Path, n: int, seed: int = 0) -> list[str]:
    """n photo-like JPEGs and palette PNG masks in VOCdevkit/VOC2012; returns the ids."""
    rng = np.random.default_rng(seed)
    voc = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True)
    palette = [c for rgb in voc_palette(256) for c in rgb]
    h, w = SIZE
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ids = [f"2007_{k:06d}" for k in range(n)]
    for image_id in ids:
        a, b = rng.uniform(0, 255, (2, 3))  # a gradient between two colours, at an angle
        t = np.cos(rng.uniform(0, np.pi)) * xx / w + np.sin(rng.uniform(0, np.pi)) * yy / h
        t = (t - t.min()) / (t.max() - t.min())
        image = np.ascontiguousarray(a + (b - a) * t[..., None]).astype(np.uint8)
        mask = np.zeros(SIZE, np.uint8)
        shapes = []
        for _ in range(rng.integers(2, 6)):  # objects: ellipses and boxes, a class id each
            colour = rng.integers(0, 256, 3).tolist()
            cls = int(rng.integers(1, 21))
            cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
            ax, ay = int(rng.integers(20, w // 3)), int(rng.integers(20, h // 3))
            if rng.random() < 0.5:
                shapes.append(("ellipse", (cx, cy), (ax, ay), cls))
                cv2.ellipse(image, (cx, cy), (ax, ay), 0, 0, 360, colour, -1)
                cv2.ellipse(mask, (cx, cy), (ax, ay), 0, 0, 360, cls, -1)
            else:
                shapes.append(("box", (cx - ax, cy - ay), (cx + ax, cy + ay), cls))
                cv2.rectangle(image, (cx - ax, cy - ay), (cx + ax, cy + ay), colour, -1)
                cv2.rectangle(mask, (cx - ax, cy - ay), (cx + ax, cy + ay), cls, -1)
        for kind, p, q, _ in shapes:  # VOC's 255 band (~5 px) on object borders
            if kind == "ellipse":
                cv2.ellipse(mask, p, q, 0, 0, 360, 255, 5)
            else:
                cv2.rectangle(mask, p, q, 255, 5)
        image = cv2.GaussianBlur(image, (5, 5), 1.5)
        image = np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(voc / "JPEGImages" / f"{image_id}.jpg", quality=90)
        png = Image.fromarray(mask, mode="P")
        png.putpalette(palette)
        png.save(voc / "SegmentationClass" / f"{image_id}.png")
    lists = voc / "ImageSets" / "Segmentation"
    for split in ("train", "val"):
        (lists / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return ids


# --- the baseline: PIL (or torchvision.io) decode + torchvision.transforms.v2 ---------------


def v2_pipeline(antialias: bool) -> v2.Compose:
    return v2.Compose([
        v2.ScaleJitter(target_size=SIZE, scale_range=(0.5, 2.0), antialias=antialias),
        v2.RandomCrop(CROP, pad_if_needed=True, fill={tv_tensors.Image: 0, tv_tensors.Mask: 255}),
        v2.RandomHorizontalFlip(p=0.5),
        v2.RandomApply([v2.ColorJitter(brightness=0.25, contrast=0.25, saturation=0.25)], p=0.5),
        v2.ToDtype({tv_tensors.Image: torch.float32, tv_tensors.Mask: torch.int64}, scale=True),
        v2.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD),
    ])  # fmt: skip


def pil_image(path: Path) -> torch.Tensor:
    with Image.open(path) as im:
        return v2.functional.pil_to_tensor(im.convert("RGB"))  # (3, H, W) uint8


def turbo_image(path: Path) -> torch.Tensor:
    return decode_jpeg(read_file(str(path)), mode=ImageReadMode.RGB, apply_exif_orientation=True)


def pil_mask(path: Path) -> torch.Tensor:
    with Image.open(path) as im:  # mode "P": the palette indices are the class ids
        return torch.from_numpy(np.array(im))  # (H, W) uint8


class Baseline:
    """dataset[i] -> {"image": (3, 512, 512) float32, "mask": (512, 512) int64}."""

    def __init__(self, pairs, decode: Callable[[Path], torch.Tensor], antialias: bool) -> None:
        self.pairs, self.decode, self.transform = pairs, decode, v2_pipeline(antialias)

    def load(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image_path, mask_path = self.pairs[i]
        return self.decode(image_path), pil_mask(mask_path)

    def __getitem__(self, i: int) -> dict:
        image, mask = self.load(i)
        image, mask = self.transform(tv_tensors.Image(image), tv_tensors.Mask(mask))
        return {"image": image.as_subclass(torch.Tensor), "mask": mask.as_subclass(torch.Tensor)}


# --- measuring -------------------------------------------------------------------------------


def images_per_second(fn: Callable[[int], object], n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        fn(i)
    return n / (time.perf_counter() - start)


def check_outputs(rows: dict[str, Callable[[int], dict]], n: int) -> None:
    """Every pipeline gives the same tensors' shapes and dtypes, with valid mask values."""
    for name, fn in rows.items():
        for i in range(min(n, 4)):
            out = fn(i)
            image, mask = out["image"], out["mask"]
            assert image.shape == (3, CROP, CROP) and image.dtype == torch.float32, (name, image)
            assert mask.shape == (CROP, CROP) and mask.dtype == torch.int64, (name, mask.shape)
            values = set(mask.unique().tolist())
            assert values <= set(range(21)) | {255}, (name, values)


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):7.1f} [{min(values):.1f}-{max(values):.1f}]"


class _Call(Dataset):
    """A dataset of one item: fn(), so that a DataLoader runs fn in its worker process."""

    def __init__(self, fn: Callable[[], object]) -> None:
        self.fn = fn

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> object:
        return self.fn()


def in_a_worker(fn: Callable[[], object]) -> object:
    """fn() run where seglight's training samples are loaded: in a DataLoader worker process
    (1 torch thread, seglight's worker set-up: OpenCV without its thread pool)."""
    loader = DataLoader(_Call(fn), batch_size=None, num_workers=1, worker_init_fn=seed_worker)
    return next(iter(loader))


def measure(rows: dict[str, Callable[[int], object]], ours, n: int, repeats: int):
    """({row: images/s per repeat}, {row: images per CPU second per repeat})."""
    for fn in rows.values():  # warm-up: page cache, lazy imports, first-call set-ups
        images_per_second(fn, min(n, 4))
    names = list(rows)
    print("repeat " + "".join(f"{name:>20}" for name in names))
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        seconds = {name: [0.0, 0.0] for name in names}
        order = names[r % len(names) :] + names[: r % len(names)]  # rotate who runs first
        for i in range(n):  # image by image, every pipeline in turn: load changes hit all
            for name in order:
                torch.manual_seed(i)  # image i draws the same every repeat: the same work
                ours.reseed(i)
                start, start_cpu = time.perf_counter(), time.process_time()
                rows[name](i)
                seconds[name][0] += time.perf_counter() - start
                seconds[name][1] += time.process_time() - start_cpu
        for name in names:
            wall[name].append(n / seconds[name][0])
            cpu[name].append(n / seconds[name][1])
        print(f"{r + 1:>6} " + "".join(f"{wall[name][-1]:>20.1f}" for name in names), flush=True)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64, help="generated images (default 64)")
    parser.add_argument("--repeats", type=int, default=7, help="passes per pipeline (default 7)")
    parser.add_argument("--quick", action="store_true", help="8 images, 2 repeats: a smoke run")
    parser.add_argument("--profile", action="store_true", help="cProfile ours on 20 images")
    args = parser.parse_args()
    if args.quick:
        args.images, args.repeats = min(args.images, 8), 2
    torch.set_num_threads(1)  # as in the worker, for the output check and the profile
    cv2.setNumThreads(0)

    with tempfile.TemporaryDirectory() as tmp:
        make_voc(Path(tmp), args.images)
        data = VOCDataModule(root=tmp, crop_size=(CROP, CROP), num_workers=0)
        data.setup("fit")
        ours = data.datasets["train"]
        pairs = ours.pairs
        n = len(ours)
        pipelines = {
            "ours (seglight)": ours.__getitem__,
            "ours, training path": lambda i: ours[SampleKey(i, i)],  # what the sampler calls
            "PIL + v2": Baseline(pairs, pil_image, antialias=False).__getitem__,
            "PIL + v2 antialias": Baseline(pairs, pil_image, antialias=True).__getitem__,
            "decode_jpeg + v2": Baseline(pairs, turbo_image, antialias=False).__getitem__,
        }
        decoders = {
            "ours: decode only": ours.load,
            "PIL: decode only": Baseline(pairs, pil_image, False).load,
        }
        check_outputs(pipelines, n)
        rows = {**pipelines, **decoders}
        print(f"{n} images {SIZE[1]}x{SIZE[0]} JPEG q90 + palette PNG masks, crop {CROP}, "
              f"in one DataLoader worker; images/s per run:")  # fmt: skip
        wall, cpu = in_a_worker(partial(measure, rows, ours, n, args.repeats))
        names = list(rows)

        print("\nmedian [min-max] over the repeats:   images/s (wall clock)   images/CPU-second")
        for name in names:
            print(f"  {name:<22}{spread(wall[name]):>30}{spread(cpu[name]):>26}")
        print("\nratio ours / baseline (throughput: > 1 = seglight is faster), median [min-max] of "
              "the per-repeat ratios:\n" + " " * 48 + "wall clock      CPU time")  # fmt: skip
        for mine in list(pipelines)[:2]:
            for name in list(pipelines)[2:]:
                line = f"  {mine + ' / ' + name:<44}"
                for table in (wall, cpu):
                    ratios = [x / y for x, y in zip(table[mine], table[name], strict=True)]
                    line += (
                        f"{statistics.median(ratios):5.2f} [{min(ratios):.2f}-{max(ratios):.2f}]"
                    )
                    line += "  "
                print(line.rstrip())
        for who, full, dec in (("ours", "ours (seglight)", "ours: decode only"),
                               ("PIL + v2", "PIL + v2", "PIL: decode only")):  # fmt: skip
            share = statistics.median(f / d for f, d in zip(cpu[full], cpu[dec], strict=True))
            print(f"decode share of {who}: {share:.0%} of its CPU time per image")

        def ratio(table: dict[str, list[float]], mine: str) -> float:
            pairs = zip(table[mine], table["PIL + v2"], strict=True)
            return statistics.median(x / y for x, y in pairs)

        print()
        for mine in list(pipelines)[:2]:  # the target is the training path's
            met = "met" if ratio(cpu, mine) >= TARGET else "NOT met"
            print(f"ratio {mine} / PIL + v2: {ratio(cpu, mine):.2f} (target >= {TARGET}: {met}; "
                  f"CPU time; wall clock: {ratio(wall, mine):.2f})")  # fmt: skip
        print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
              f"albumentations {albumentations.__version__}, opencv {cv2.__version__}, "
              f"Pillow {Image.__version__}, numpy {np.__version__}, "
              f"python {platform.python_version()}, {platform.machine()}")  # fmt: skip

        if args.profile:
            profiler = cProfile.Profile()
            profiler.runcall(images_per_second, ours.__getitem__, min(n, 20))
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(25)
            print(text.getvalue())


if __name__ == "__main__":
    main()
