"""Images read as people see them: EXIF orientation, 16-bit and float pixels, unreadable formats."""

import cv2
import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

import seglight.data.images
from seglight.data.folder import FolderDataModule
from seglight.data.images import check_same_size, decode_image, read_image
from seglight.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_pipeline
from seglight.errors import DataError
from seglight.module import SegmentationModule

NAMES = ["background", "thing"]
MEAN, STD = np.array(IMAGENET_MEAN, np.float32), np.array(IMAGENET_STD, np.float32)


def exif(orientation: int) -> Image.Exif:
    tags = Image.Exif()
    tags[0x0112] = orientation
    return tags


def stored_from_displayed(displayed: np.ndarray, orientation: int) -> np.ndarray:
    """The pixels a camera stores for a photo displayed as `displayed` (orientation 6 or 8)."""
    return np.rot90(displayed, 1 if orientation == 6 else -1)  # 6: viewers turn it clockwise


def phone_photo(path, orientation: int, size=(64, 32)):
    """A JPEG stored landscape with EXIF `orientation`, displayed portrait (H, W) = size, with a
    white square in the displayed top-left corner; returns the mask drawn on the displayed photo
    (class 1 on the square) and the square's bounds."""
    displayed = np.zeros((*size, 3), np.uint8)
    displayed[2:14, 2:10] = 255
    stored = stored_from_displayed(displayed, orientation)
    Image.fromarray(np.ascontiguousarray(stored)).save(path, quality=95, exif=exif(orientation))
    mask = np.zeros(size, np.uint8)
    mask[2:14, 2:10] = 1
    return mask


def folder(root, n: int, write) -> None:
    """images/ and masks/ under root: write(i, images_dir) saves image i, returns its mask."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        mask = write(i, root / "images")
        Image.fromarray(mask, mode="L").save(root / "masks" / f"img_{i}.png")


def data_module(root, **kwargs) -> FolderDataModule:
    return FolderDataModule(root=str(root), classes=NAMES, num_workers=0, **kwargs)


def samples(dm, split="train"):
    ds = dm.build_dataset(split, dm.pipelines["eval"])
    return [ds.load(i) for i in range(len(ds))]


def train_one_step(dm) -> None:
    model = SegmentationModule(
        encoder_weights=None, num_classes=2, class_names=NAMES,
        model_kwargs={"decoder_channels": [16, 16, 8, 8, 8]},
    )  # fmt: skip
    trainer = L.Trainer(
        accelerator="cpu", max_steps=1, limit_val_batches=1, num_sanity_val_steps=0,
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(model, datamodule=dm)
    assert trainer.global_step == 1
    assert torch.isfinite(trainer.callback_metrics["train/loss"])


# --- orientation ------------------------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_is_pils_exif_transpose(tmp_path, orientation):
    pixels = np.random.default_rng(orientation).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    path = tmp_path / "a.png"
    Image.fromarray(pixels).save(path, exif=exif(orientation))
    with Image.open(path) as im:
        expected = np.asarray(ImageOps.exif_transpose(im))
    decoded = decode_image(path)
    np.testing.assert_array_equal(decoded.pixels, expected)
    assert decoded.orientation == orientation and decoded.stored_size == (5, 7)
    np.testing.assert_array_equal(read_image(path, exif_orientation=False), pixels)


@pytest.mark.parametrize("orientation", [6, 8])
def test_phone_photo_lands_where_its_mask_was_drawn(tmp_path, orientation):
    folder(tmp_path, 2, lambda i, d: phone_photo(d / f"img_{i}.jpg", orientation))
    for sample in samples(data_module(tmp_path, val_fraction=0.5), "train"):
        assert sample.image.shape == (64, 32, 3) and sample.mask.shape == (64, 32)
        bright = sample.image.mean(-1) > 128  # the white square, as displayed
        assert (bright == (sample.mask == 1)).mean() > 0.99  # JPEG blurs the square's edges


@pytest.mark.parametrize("orientation", [6, 8])
def test_mask_drawn_on_the_stored_pixels_is_explained(tmp_path, orientation):
    image = tmp_path / "photo.jpg"
    drawn_as_displayed = phone_photo(image, orientation)
    on_stored = np.ascontiguousarray(stored_from_displayed(drawn_as_displayed, orientation))
    method = "ROTATE_270" if orientation == 6 else "ROTATE_90"
    for read in (decode_image(image), read_image(image)):  # ndarray: the header is re-read
        with pytest.raises(DataError) as error:
            check_same_size(read, on_stored, image, "m.png")
        message = str(error.value)
        assert "photo.jpg is 32x64, m.png is 64x32" in message
        assert f"matches the image's pixels as stored, not the photo as displayed (its EXIF " \
               f"orientation {orientation}" in message  # fmt: skip
        assert f"Image.Transpose.{method}" in message and "exif_orientation: false" in message
        assert "\n" not in message
        fixed = Image.fromarray(on_stored).transpose(getattr(Image.Transpose, method))
        check_same_size(read, np.asarray(fixed), image, "m.png")  # the suggested fix fits
    # Read as stored, the mask drawn on the displayed photo is the one that is off.
    with pytest.raises(DataError, match="matches the photo as displayed .* set exif_orientation"):
        check_same_size(decode_image(image, exif_orientation=False), drawn_as_displayed, image, "m")


def test_mask_turned_without_exif_is_named(tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray(np.zeros((10, 20, 3), np.uint8)).save(path)
    with pytest.raises(DataError, match=r"image turned by 90° \(the image has no EXIF rotation"):
        check_same_size(read_image(path), np.zeros((20, 10), np.uint8), path, "m.png")
    with pytest.raises(DataError, match=r"m.png is 11x10 \(width x height\)$"):
        check_same_size(read_image(path), np.zeros((10, 11), np.uint8), path, "m.png")


# --- 16-bit and float pixels -------------------------------------------------------------------

LEVELS = np.arange(4000, dtype=np.uint16).reshape(40, 100)  # 12-bit camera data: 0..3999


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_grey_keeps_every_level(tmp_path, suffix):
    path = tmp_path / f"a{suffix}"
    Image.fromarray(LEVELS).save(path)  # PIL mode "I;16"
    with Image.open(path) as im:
        assert im.mode == "I;16"
    pixels = read_image(path)
    assert pixels.dtype == np.float32 and pixels.shape == (40, 100, 3)
    assert len(np.unique(pixels)) == 4000  # no level lost, nothing clipped to white
    np.testing.assert_array_equal(pixels[..., 0] * 65535, LEVELS)
    assert (pixels == pixels[..., :1]).all()  # grey: 3 equal channels


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_colour_keeps_every_level(tmp_path, suffix):
    rgb = np.stack([LEVELS, LEVELS // 2, 3999 - LEVELS], -1)
    path = tmp_path / f"a{suffix}"
    cv2.imwrite(str(path), rgb[..., ::-1])  # PIL cannot write 16-bit colour; OpenCV is BGR
    pixels = read_image(path)
    np.testing.assert_array_equal(np.rint(pixels * 65535), rgb)
    assert len(np.unique(pixels[..., 0])) == 4000


def test_16_bit_image_normalizes_as_its_8_bit_version(tmp_path):
    """v in 8 bits and v * 257 in 16 bits are the same intensity: the same network input, with
    no augmentation and through flips and colour jitter (seeded alike)."""
    rng = np.random.default_rng(0)
    eight = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    Image.fromarray(eight).save(tmp_path / "a8.png")
    cv2.imwrite(str(tmp_path / "a16.png"), eight[..., ::-1].astype(np.uint16) * 257)
    Image.fromarray(eight[..., 0]).save(tmp_path / "g8.png")
    Image.fromarray(eight[..., 0].astype(np.uint16) * 257).save(tmp_path / "g16.tif")
    mask = np.zeros((24, 32), np.uint8)
    jitter = [
        {"name": "HorizontalFlip", "p": 1.0},
        {"name": "ColorJitter", "brightness": 0.3, "contrast": 0.3, "saturation": 0.0,
         "hue": 0.0, "p": 1.0},
    ]  # fmt: skip
    for a, b in [("a8.png", "a16.png"), ("g8.png", "g16.tif")]:
        x8, x16 = read_image(tmp_path / a), read_image(tmp_path / b)
        assert x8.dtype == np.uint8 and x16.dtype == np.float32
        plain = build_pipeline([], 255)
        np.testing.assert_allclose(plain(image=x8, mask=mask)["image"],
                                   plain(image=x16, mask=mask)["image"], atol=1e-5)  # fmt: skip
        expected = (x8 / 255 - MEAN) / STD
        np.testing.assert_allclose(plain(image=x16, mask=mask)["image"], expected, atol=1e-5)
        outs = []
        for x in (x8, x16):
            pipeline = build_pipeline(jitter, 255)
            pipeline.set_random_seed(3)
            outs.append(pipeline(image=x, mask=mask)["image"])
        # uint8 jitter rounds each of its two steps to 8 bits: ~2/255 apart before / std.
        np.testing.assert_allclose(outs[0], outs[1], atol=2.5 / 255 / STD.min())


def test_float_tiff_taken_as_is(tmp_path):
    values = (LEVELS / 3999).astype(np.float32)
    Image.fromarray(values).save(tmp_path / "f.tif")  # PIL mode "F"
    pixels = read_image(tmp_path / "f.tif")
    assert pixels.dtype == np.float32
    np.testing.assert_array_equal(pixels[..., 1], values)
    cv2.imwrite(str(tmp_path / "rgb.tif"), np.stack([values] * 3, -1))  # PIL cannot open it
    np.testing.assert_array_equal(read_image(tmp_path / "rgb.tif")[..., 2], values)


def test_train_step_on_16_bit_images_and_phone_photos(tmp_path):
    """One folder, one batch: 16-bit PNGs (a 12-bit range) and EXIF-rotated JPEGs (6 and 8)
    whose masks were drawn on the photo as displayed; validation sees the 16-bit values."""

    def write(i, images):
        if i % 3 == 0:  # img_0, img_3: 16-bit
            Image.fromarray(sixteen(i)).save(images / f"img_{i}.png")
            mask = np.zeros((64, 32), np.uint8)
            mask[:, 16:] = 1
            return mask
        return phone_photo(images / f"img_{i}.jpg", 6 if i % 3 == 1 else 8)

    def sixteen(i):
        return np.roll(LEVELS[:, :64].T[:, :32], i, axis=0).copy()  # (64, 32), 0..3999

    folder(tmp_path, 5, write)
    (tmp_path / "train.txt").write_text("img_0\nimg_1\nimg_2\nimg_4\n")
    (tmp_path / "val.txt").write_text("img_3\n")
    dm = data_module(tmp_path, train_list="train.txt", val_list="val.txt", batch_size=4)
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    raw = (batch["image"][0].numpy().transpose(1, 2, 0) * STD + MEAN) * 65535
    np.testing.assert_allclose(raw, np.repeat(sixteen(3)[..., None], 3, -1), atol=0.05)
    train_one_step(dm)


# --- JPEG: OpenCV's decoder, PIL's pixels ------------------------------------------------------


def photo(seed: int, size=(45, 61)) -> np.ndarray:
    """(H, W, 3) uint8 with smooth areas and edges (what a JPEG codec's choices show on)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : size[0], 0 : size[1]]
    image = np.stack([xx * 4, yy * 5, (xx + yy) * 2], -1) + rng.integers(0, 40, (*size, 3))
    image[10:30, 20:40] = rng.integers(0, 256, 3)
    return np.clip(image, 0, 255).astype(np.uint8)


JPEG_KINDS = {  # what cameras, phones and image libraries write
    "4:2:0": dict(quality=90),
    "4:4:4": dict(quality=95, subsampling=0),
    "4:2:2": dict(quality=75, subsampling=1),
    "progressive": dict(quality=85, progressive=True),
    "optimized": dict(quality=60, optimize=True),
    "grey": dict(quality=90),
    "rotated": dict(quality=90, exif=exif(6)),
}


@pytest.mark.parametrize("kind", list(JPEG_KINDS))
def test_jpeg_pixels_are_pils(tmp_path, monkeypatch, kind):
    """JPEGs are decoded by OpenCV (faster); every kind gives exactly PIL's pixels."""
    path = tmp_path / "a.jpg"
    image = Image.fromarray(photo(len(kind)))
    (image.convert("L") if kind == "grey" else image).save(path, **JPEG_KINDS[kind])
    with Image.open(path) as im:
        expected = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    decoded = []
    jpeg_rgb = seglight.data.images._jpeg_rgb
    monkeypatch.setattr(
        seglight.data.images, "_jpeg_rgb", lambda d: decoded.append(d) or jpeg_rgb(d)
    )
    np.testing.assert_array_equal(read_image(path), expected)
    assert len(decoded) == 1  # OpenCV decoded it, not PIL


def test_jpeg_with_bytes_after_its_end_reads_and_a_truncated_one_is_an_error(tmp_path):
    path = tmp_path / "a.jpg"
    Image.fromarray(photo(0)).save(path, quality=90)
    whole = path.read_bytes()
    expected = read_image(path)
    path.write_bytes(whole + b"\0" * 7 + b"camera trailer")  # PIL reads it: the same pixels
    np.testing.assert_array_equal(read_image(path), expected)
    path.write_bytes(whole[: len(whole) * 2 // 3])  # OpenCV would fill the rest grey
    with pytest.raises(DataError, match=r"a\.jpg: cannot decode image \(corrupt or truncated"):
        read_image(path)


# --- what cannot be read right -----------------------------------------------------------------


def cmyk(path):
    Image.new("CMYK", (4, 4), (10, 20, 30, 40)).save(path)


def pages(path):
    frame = Image.fromarray(np.zeros((4, 4), np.uint8))
    frame.save(path, save_all=True, append_images=[frame, frame])


def int32(values):
    return lambda path: Image.fromarray(np.asarray(values, np.int32).reshape(1, -1)).save(path)


def float32(values):
    return lambda path: Image.fromarray(np.asarray(values, np.float32).reshape(1, -1)).save(path)


@pytest.mark.parametrize(
    "name, write, match",
    [
        ("a.jpg", cmyk, r"CMYK image .* convert it to RGB"),
        ("a.tif", pages, r"has 3 frames .* save the frame to use as its own file"),
        ("a.tif", int32([0, 70000]), r"span 0\.\.70000, beyond 16 bits; .* save as 16-bit"),
        ("a.tif", int32([-5, 10]), r"span -5\.\.10"),
        ("a.tif", float32([0.0, 1.5]), r"float pixel values span 0\.\.1\.5; .* rescale them"),
        ("a.tif", float32([0.0, np.nan]), r"NaN or infinite"),
        ("a.png", lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n junk"), r"cannot decode image"),
        ("a.tif", lambda p: p.write_bytes(b"II*\x00\x08\x00\x00\x00junk"), r"cannot decode"),
    ],
)
def test_unreadable_formats_are_one_line_errors(tmp_path, name, write, match):
    path = tmp_path / name
    write(path)
    with pytest.raises(DataError, match=match) as error:
        read_image(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_truncated_16_bit_colour_png_is_an_error(tmp_path):
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), np.stack([LEVELS] * 3, -1))
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(DataError, match="a.png: cannot decode image"):
        read_image(path)


def test_readable_odd_formats(tmp_path):
    """32-bit integers within 16 bits, 1-bit, grey + alpha: read, not refused."""
    int32([0, 4095, 65535])(tmp_path / "i.tif")
    np.testing.assert_allclose(read_image(tmp_path / "i.tif")[0, :, 0], [0, 4095 / 65535, 1])
    Image.fromarray(np.array([[0, 1]], bool)).save(tmp_path / "b.png")
    np.testing.assert_array_equal(read_image(tmp_path / "b.png")[0, :, 0], [0, 255])
    Image.fromarray(np.zeros((2, 2, 2), np.uint8), mode="LA").save(tmp_path / "la.png")
    assert read_image(tmp_path / "la.png").shape == (2, 2, 3)


def test_exif_orientation_false_reads_the_stored_pixels_everywhere(tmp_path):
    """data.exif_orientation: false (masks drawn on the stored pixels, e.g. from Labelbox)
    reaches every reader: the splits set up for fit, audit's dataset and predict_dir."""

    def write(i, images):
        drawn = phone_photo(images / f"img_{i}.jpg", 6)
        return np.ascontiguousarray(stored_from_displayed(drawn, 6))  # mask on the stored pixels

    folder(tmp_path, 2, write)
    dm = data_module(tmp_path, val_fraction=0.5, exif_orientation=False,
                     predict_dir=str(tmp_path / "images"))  # fmt: skip
    dm.setup("fit")
    dm.setup("predict")
    for split in ("train", "val"):
        sample = dm.datasets[split].load(0)
        assert sample.image.shape == (32, 64, 3) == (*sample.mask.shape, 3)
    assert dm.datasets["predict"].load(0).image.shape == (32, 64, 3)
    assert dm.prepared_dataset("train", dm.pipelines["eval"]).exif_orientation is False
    with pytest.raises(DataError, match="as stored"):  # the default reads them as displayed
        data_module(tmp_path, val_fraction=0.5).build_dataset("train", None).load(0)
