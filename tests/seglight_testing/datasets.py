"""Tiny dataset trees on disk, in the layouts the data modules read (your own folder, PASCAL VOC,
Cityscapes), and the CLI overrides that run the dataset recipes on them in seconds."""

from pathlib import Path

import numpy as np
from PIL import Image

from seglight.render import voc_palette

from seglight_testing import QUICKSTART

# Your own folder (FolderDataModule): index masks 0..2 and 255 (ignore), or these colours.
COLORS = [[0, 0, 0], [128, 64, 128], [220, 20, 60]]
NAMES = ["background", "road", "person"]


def make_folder(root, n=10, rgb=False, size=(24, 32), seed=0) -> dict[str, np.ndarray]:
    """images/<stem>.jpg|png and masks/<stem>.png; returns stem -> expected class ids."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    expected = {}
    for i in range(n):
        stem = f"scene_{i:02d}"
        image = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
        Image.fromarray(image).save(root / "images" / f"{stem}{'.png' if i % 2 else '.jpg'}")
        ids = rng.choice(np.array([0, 1, 2, 255]), size).astype(np.uint8)
        if rgb:
            colours = np.array(COLORS + [[255, 255, 255]] * 253, np.uint8)
            Image.fromarray(colours[ids]).save(root / "masks" / f"{stem}.png")
        else:
            Image.fromarray(ids, mode="L").save(root / "masks" / f"{stem}.png")
        expected[stem] = ids
    return expected


# The quickstart config (its checkpointing, logging) on a folder of 4 images of 24 x 32 px:
# scene_00 (.jpg), scene_01 (.png), scene_02 train, scene_03 validates.
FOLDER = [
    "--config", QUICKSTART,
    "--data=seglight.data.FolderDataModule", "--data.root=data",
    f"--data.classes=[{', '.join(NAMES)}]",
    "--data.train_list=train.txt", "--data.val_list=val.txt",
    "--data.batch_size=4", "--data.num_workers=0",
    "--model.model_kwargs={decoder_channels: [16, 16, 8, 8, 8]}",
    "--trainer.accelerator=cpu", "--trainer.devices=1",
    "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
    "--trainer.log_every_n_steps=1",
]  # fmt: skip

# PASCAL VOC 2012: the ids of make_voc's default tree (2 train, 1 val).
IDS = ["2007_000032", "2007_000039", "2008_000002"]


def palette_png(path, indices: np.ndarray) -> None:
    """Save class indices the way the VOC devkit does: mode P with the VOC colour map."""
    image = Image.fromarray(indices.astype(np.uint8), mode="P")
    image.putpalette([c for rgb in voc_palette(256) for c in rgb])
    image.save(path)


def make_voc(root, ids=IDS, size=(30, 40), seed=0) -> dict[str, np.ndarray]:
    """A VOC 2012 tree in tmp: JPEG images, palette masks, split lists. Returns id -> mask."""
    rng = np.random.default_rng(seed)
    voc = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    masks = {}
    for image_id in ids:
        rgb = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(voc / "JPEGImages" / f"{image_id}.jpg", quality=95)
        mask = rng.choice(np.array([0, 1, 15, 20, 255]), size).astype(np.uint8)
        palette_png(voc / "SegmentationClass" / f"{image_id}.png", mask)
        masks[image_id] = mask
    lists = voc / "ImageSets" / "Segmentation"
    (lists / "train.txt").write_text("\n".join(ids[:2]) + "\n")
    (lists / "val.txt").write_text(ids[2] + "\n")
    return masks


# Cityscapes: images of H x W px in these cities.
H, W = 32, 64
CITIES = ("aachen", "bochum")


def make_cityscapes(
    root: Path, splits=("train", "val"), per_city: int = 2, train_ids: bool = False, seed: int = 0
) -> dict[Path, np.ndarray]:
    """Real PNGs in the official layout; returns label file -> the labelIds stored in it."""
    rng = np.random.default_rng(seed)
    stored = {}
    for split in splits:
        for city in CITIES:
            (root / "leftImg8bit" / split / city).mkdir(parents=True)
            (root / "gtFine" / split / city).mkdir(parents=True)
            for k in range(per_city):
                prefix = f"{city}_{k:06d}_{19 + k:06d}"
                image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
                Image.fromarray(image).save(
                    root / "leftImg8bit" / split / city / f"{prefix}_leftImg8bit.png"
                )
                # Every stored id 0..33 appears (ignored ones too), in random places.
                ids = rng.permutation(np.resize(np.arange(34, dtype=np.uint8), H * W))
                ids = ids.reshape(H, W)
                path = root / "gtFine" / split / city / f"{prefix}_gtFine_labelIds.png"
                Image.fromarray(ids, mode="L").save(path)
                stored[path] = ids
                if train_ids:
                    # Deliberately not the labelIds' mapping: shows which file was read.
                    tid = ((ids.astype(int) + 3) % 19).astype(np.uint8)
                    tid[:, :4] = 255
                    tpath = root / "gtFine" / split / city / f"{prefix}_gtFine_labelTrainIds.png"
                    Image.fromarray(tid, mode="L").save(tpath)
                    stored[tpath] = tid
    return stored


def make_ade(
    root: Path, splits=("training", "validation"), n: int = 3, seed: int = 0, size=(32, 48)
) -> Path:
    """Real JPEG images and PNG annotations in the official layout, under root; returns the
    ADEChallengeData2016 folder. Annotations hold every stored value 0..150."""
    rng = np.random.default_rng(seed)
    h, w = size
    base = root / "ADEChallengeData2016"
    for split in splits:
        (base / "images" / split).mkdir(parents=True)
        (base / "annotations" / split).mkdir(parents=True)
        tag = "train" if split == "training" else "val"
        for k in range(n):
            name = f"ADE_{tag}_{k + 1:08d}"
            image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            Image.fromarray(image).save(base / "images" / split / f"{name}.jpg", quality=90)
            stored = rng.permutation(np.resize(np.arange(151, dtype=np.uint8), h * w))
            Image.fromarray(stored.reshape(h, w), mode="L").save(
                base / "annotations" / split / f"{name}.png"
            )
    return base


def add_voc_aug(root: Path, ids=IDS, size=(30, 40)) -> None:
    """SBD-augmented masks (SegmentationClassAug, grey index PNGs of class 7 with one ignore
    pixel) and DeepLab's train_aug.txt on top of make_voc's tree."""
    voc = root / "VOCdevkit" / "VOC2012"
    aug = voc / "SegmentationClassAug"
    aug.mkdir()
    extra = np.full(size, 7, np.uint8)
    extra[0, 0] = 255
    for image_id in ids:
        Image.fromarray(extra, mode="L").save(aug / f"{image_id}.png")
    (voc / "ImageSets/Segmentation/train_aug.txt").write_text(
        "".join(f"/JPEGImages/{i}.jpg /SegmentationClassAug/{i}.png\n" for i in ids)
    )


def make_binary(root, n=16, size=32, suffix="", same_dir=False, one_bit=False, seed=0):
    """Dark noisy photos (JPEG) with one bright square, the foreground; masks 0/255 grey PNGs
    (or 0/1 1-bit PNGs) named <stem><suffix>.png, in masks/ or beside the images."""
    rng = np.random.default_rng(seed)
    images = root / "images"
    masks = images if same_dir else root / "masks"
    images.mkdir(parents=True)
    masks.mkdir(exist_ok=True)
    for i in range(n):
        image = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
        mask = np.zeros((size, size), bool)
        side = int(rng.integers(size // 4, size // 2))
        y, x = rng.integers(0, size - side, 2)
        mask[y : y + side, x : x + side] = True
        image[mask] = rng.integers(190, 256, (int(mask.sum()), 3), dtype=np.uint8)
        Image.fromarray(image).save(images / f"img_{i:02d}.jpg", quality=95)
        if one_bit:
            Image.fromarray(mask).save(masks / f"img_{i:02d}{suffix}.png")  # mode "1"
        else:
            Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(
                masks / f"img_{i:02d}{suffix}.png"
            )


# Shrink the published recipe to seconds on a CPU; everything else comes from the config file.
SMALL = [
    "--model.encoder_weights=null",
    "--trainer.precision=32-true",
    "--model.arch=Unet",
    "--model.encoder_name=resnet18",
    "--model.model_kwargs={decoder_channels: [16, 16, 8, 8, 8]}",
    "--data.crop_size=[32, 32]",
    "--data.batch_size=2",
    "--data.num_workers=0",
    "--trainer.max_steps=2",
    "--trainer.val_check_interval=null",
    "--trainer.check_val_every_n_epoch=1",
    "--trainer.log_every_n_steps=1",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]


def make_multilabel_folder(
    root,
    layout="folders",
    n=6,
    size=32,
    labels=("a", "b", "c"),
    ext=".png",
    zero_255=False,
    channels_first=False,
    seed=0,
) -> dict[str, np.ndarray]:
    """images/<stem>.png with multi-label masks; returns stem -> expected (H, W, L) uint8 0/1
    (255 = unlabelled: a corner of label 0). layout "folders": masks/<label>/<stem><ext>, grey
    8-bit; "stack": masks/<stem><ext> (.tif or .npy) of (H, W, L), or (L, H, W) when
    `channels_first`. `zero_255`: positives stored as 255 (the corner then stays 0)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    masks = root / "masks"
    for label in labels if layout == "folders" else ():
        (masks / label).mkdir(parents=True)
    masks.mkdir(exist_ok=True)
    expected = {}
    for i in range(n):
        stem = f"img_{i:02d}"
        image = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
        mask = np.zeros((size, size, len(labels)), np.uint8)
        for k in range(len(labels)):  # one overlapping square per label, in every image
            side = int(rng.integers(size // 4, size // 2))
            y, x = rng.integers(0, size - side, 2)
            mask[y : y + side, x : x + side, k] = 1
            image[y : y + side, x : x + side, k % 3] = 220
        if not zero_255:
            mask[:4, :4, 0] = 255  # unlabelled
        Image.fromarray(image).save(root / "images" / f"{stem}.png")
        stored = mask * 255 if zero_255 else mask
        if layout == "folders":
            for k, label in enumerate(labels):
                Image.fromarray(stored[..., k], mode="L").save(masks / label / f"{stem}{ext}")
        else:
            array = np.moveaxis(stored, -1, 0) if channels_first else stored
            if ext == ".npy":
                np.save(masks / f"{stem}.npy", array)
            else:
                import tifffile

                tifffile.imwrite(masks / f"{stem}{ext}", array, photometric="minisblack")
        expected[stem] = mask
    return expected
