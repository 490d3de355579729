"""What does reading files with PIL (seglight's choice) cost against OpenCV?

    .venv/bin/python benchmarks/decode.py [--repeats 30]

seglight reads images and masks with PIL because it is the correct reader for both jobs:
it raises on a truncated JPEG/PNG (OpenCV returns a partly grey image and only prints a warning),
and it returns a palette PNG's indices, which is what VOC masks store (OpenCV always expands the
palette to colours, so the labels are lost). This measures the price of that, on files shaped
like the benchmarks': a 500x375 JPEG (VOC), a 2048x1024 PNG photo (Cityscapes leftImg8bit) and a
2048x1024 8-bit label PNG. Prints the median decode time of each reader and the ratio
PIL / OpenCV, and shows what OpenCV makes of a truncated file and of a palette mask.
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from seglight.data.io import read_image, read_mask_raw


def median_time(fn, repeats: int) -> float:
    fn()  # warm the page cache
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def opencv_rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    cv2.setNumThreads(0)  # as in the data-loading workers
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # Smooth content with noise compresses like a photo, unlike pure noise.
        base = cv2.resize(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), (2048, 1024))
        photo = np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(photo[:375, :500]).save(tmp / "voc.jpg", quality=90)
        Image.fromarray(photo).save(tmp / "city.png")
        labels = cv2.resize(rng.integers(0, 34, (16, 32), dtype=np.uint8), (2048, 1024),
                            interpolation=cv2.INTER_NEAREST)  # fmt: skip
        Image.fromarray(labels, mode="L").save(tmp / "labels.png")

        rows = [
            ("500x375 JPEG image", lambda: read_image(tmp / "voc.jpg"),
             lambda: opencv_rgb(tmp / "voc.jpg")),
            ("2048x1024 PNG image", lambda: read_image(tmp / "city.png"),
             lambda: opencv_rgb(tmp / "city.png")),
            ("2048x1024 label PNG", lambda: read_mask_raw(tmp / "labels.png"),
             lambda: cv2.imread(str(tmp / "labels.png"), cv2.IMREAD_UNCHANGED)),
        ]  # fmt: skip
        print(f"{'file':<22}{'PIL (ms)':>10}{'OpenCV (ms)':>13}{'PIL/OpenCV':>12}")
        for name, ours, baseline in rows:
            a, b = median_time(ours, args.repeats), median_time(baseline, args.repeats)
            print(f"{name:<22}{a * 1000:>10.2f}{b * 1000:>13.2f}{a / b:>12.2f}")

        # What correctness buys.
        data = (tmp / "voc.jpg").read_bytes()
        (tmp / "cut.jpg").write_bytes(data[: len(data) // 2])
        cut = cv2.imread(str(tmp / "cut.jpg"))
        print(f"\ntruncated JPEG: OpenCV returns {'an image' if cut is not None else 'None'}",
              end="")  # fmt: skip
        try:
            read_image(tmp / "cut.jpg")
            print(", PIL returns an image too")
        except Exception as e:  # noqa: BLE001
            print(f"; seglight raises: {type(e).__name__}")
        mask = Image.fromarray(np.array([[0, 15], [255, 1]], np.uint8), mode="P")
        mask.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
        mask.save(tmp / "palette.png")
        cv_values = cv2.imread(str(tmp / "palette.png"), cv2.IMREAD_UNCHANGED)
        print(
            f"palette mask [[0, 15], [255, 1]]: OpenCV gives shape {cv_values.shape} (colours), "
            f"seglight gives {read_mask_raw(tmp / 'palette.png')[0].tolist()}"
        )


if __name__ == "__main__":
    main()
