"""The streamed format `seglight convert` writes and seglight.data.StreamingDataModule reads:
LitData chunks (index.json, chunk-*.bin) of one item per sample, and seglight.json, the
manifest, written last (a folder without it is an unfinished conversion).

An item (strings as UTF-8 bytes: LitData would store a str naming an existing file as that
file's contents):
    index         the sample's position in the source split (its augmentation seed follows it)
    name          the source's sample name (output files, per-image reports)
    image         the source file's bytes as stored, when they decode to exactly the pixels the
                  file-based module trains on (checked for every sample at conversion), and
                  image_format is the file's suffix ("jpg", "png", "tif", ...; decoded with the
                  manifest's exif_orientation and bands); else image_format is "npy.zlib": the
                  pixels (H, W, C) uint8 or float32 in [0, 1] as a zlib-compressed .npy
    mask          "npy.zlib" of the training ids after the dataset's label map: (H, W) uint8,
                  or (H, W, L) 0/1 for multilabel; b"" for an unlabelled image
"""

import io
import json
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from seglight.data.dataset import Sample
from seglight.data.images import decode_image_bytes
from seglight.errors import DataError

MANIFEST = "seglight.json"
FORMAT = "seglight-stream"
VERSION = 1
ARRAY = "npy.zlib"


def encode_array(array: np.ndarray) -> bytes:
    """Lossless: an .npy (dtype and shape kept) compressed by zlib (level 1: fast)."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return zlib.compress(buffer.getvalue(), 1)


def decode_array(data: bytes, name: str) -> np.ndarray:
    try:
        return np.load(io.BytesIO(zlib.decompress(data)), allow_pickle=False)
    except (zlib.error, ValueError, OSError) as e:
        raise DataError(f"{name}: corrupt streamed array ({e}); convert the split again") from None


def encode_item(
    index: int, sample: Sample, source: Path | None, exif_orientation: bool, bands
) -> dict[str, Any]:
    """The stored item of `sample` (decoded and checked by its dataset's load); `source`: its
    image file, whose bytes are kept when they decode to the same pixels."""
    image_format, image = ARRAY, None
    if source is not None:
        data = source.read_bytes()
        try:
            pixels = decode_image_bytes(data, source, exif_orientation, bands).pixels
        except DataError:
            pixels = None
        if (pixels is not None and pixels.dtype == sample.image.dtype
                and np.array_equal(pixels, sample.image)):  # fmt: skip
            image_format, image = source.suffix.lstrip(".").lower(), data
    if image is None:
        image = encode_array(sample.image)
    mask = b"" if sample.mask is None else encode_array(sample.mask)
    return {
        "index": int(index),
        "name": sample.name.encode(),
        "image": image,
        "image_format": image_format.encode(),
        "mask": mask,
    }


def decode_item(item: dict[str, Any], manifest: dict[str, Any]) -> tuple[int, Sample]:
    """(source index, Sample) of a stored item (bytes may come as memoryviews)."""
    name = bytes(item["name"]).decode()
    image_format = bytes(item["image_format"]).decode()
    if image_format == ARRAY:
        image = decode_array(bytes(item["image"]), name)
    else:
        image = decode_image_bytes(
            bytes(item["image"]), f"{name}.{image_format}", manifest["exif_orientation"],
            manifest["bands"],
        ).pixels  # fmt: skip
    mask_bytes = bytes(item["mask"])
    mask = decode_array(mask_bytes, name) if mask_bytes else None
    return int(item["index"]), Sample(image, mask, name)


def check_manifest(manifest: Any, where: str) -> dict[str, Any]:
    """The manifest, checked to be one this version reads."""
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"{where}: not a seglight streamed dataset manifest")
    if manifest.get("version") != VERSION:
        raise DataError(
            f"{where}: streamed format version {manifest.get('version')}, this seglight reads "
            f"version {VERSION}; convert the split again with this seglight"
        )
    return manifest


def parse_manifest(text: bytes | str, where: str) -> dict[str, Any]:
    try:
        return check_manifest(json.loads(text), where)
    except json.JSONDecodeError as e:
        raise DataError(f"{where}: corrupt manifest ({e}); convert the split again") from None
