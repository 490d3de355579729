"""Multi-band images (issue 12): TIFF / GeoTIFF with any number of bands and .npy arrays read
exactly (seglight.data.multiband), `bands` selection, FolderDataModule.in_channels, N-value
Normalize, geometric transforms on N bands, RGB-only transforms refused."""

import albumentations as A
import numpy as np
import pytest
import tifffile
from PIL import Image

from seglight.data import base
from seglight.data.audit import channel_stats
from seglight.data.folder import FolderDataModule
from seglight.data.images import read_image
from seglight.data.io import IMAGE_EXTENSIONS
from seglight.data.multiband import image_channels
from seglight.data.transforms import (
    RGB_ONLY,
    Normalize,
    build_pipeline,
    check_normalization,
    train_preset,
)
from seglight.errors import ConfigError, DataError

MEAN4, STD4 = [0.1, 0.2, 0.3, 0.4], [0.5, 0.25, 0.2, 0.1]


@pytest.fixture
def n_values(monkeypatch):
    """base.py's own check insists on 3 mean/std values until it uses
    transforms.check_normalization (the change asked of base.py for issue 12); with that change
    made, this fixture changes nothing."""
    monkeypatch.setattr(base, "_check_normalization", check_normalization, raising=False)


def one_line(error, path) -> None:
    message = str(error.value)
    assert str(path) in message and "\n" not in message, message


def tiff(path, array, **kwargs) -> None:
    """(H, W, C) -> one page of C bands, interleaved unless planarconfig='separate'."""
    if kwargs.get("planarconfig") == "separate":
        array = np.moveaxis(array, -1, 0)
    kwargs = {"photometric": "minisblack", "planarconfig": "contig"} | kwargs
    tifffile.imwrite(path, array, **kwargs)


def unit(array: np.ndarray) -> np.ndarray:
    return array.astype(np.float32) / np.float32(65535)


def bands16(rng, shape=(16, 24, 4)) -> np.ndarray:
    return rng.integers(0, 65536, shape, dtype=np.uint16)


def make_bands_folder(root, n=4, shape=(16, 24, 4), seed=0, **tiff_kwargs) -> dict:
    """images/<stem>.tif (16-bit, `shape[2]` bands) with masks/<stem>.png (ids 0, 1, 255);
    returns stem -> (bands, mask)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    written = {}
    for i in range(n):
        stem = f"tile_{i}"
        image, mask = bands16(rng, shape), rng.choice(np.uint8([0, 1, 255]), shape[:2])
        tiff(root / "images" / f"{stem}.tif", image, **tiff_kwargs)
        Image.fromarray(mask, mode="L").save(root / "masks" / f"{stem}.png")
        written[stem] = image, mask
    return written


def module(root, **kwargs) -> FolderDataModule:
    kwargs = {"classes": ["land", "water"], "num_workers": 0, "val_fraction": 0.5} | kwargs
    return FolderDataModule(root=str(root), **kwargs)


def samples(dm, split="train") -> dict:
    ds = dm.build_dataset(split, dm.pipelines["eval"])
    return {s.name: s for s in (ds.load(i) for i in range(len(ds)))}


# --- reading -------------------------------------------------------------------------------


@pytest.mark.parametrize("planar", ["contig", "separate"])
def test_four_band_16_bit_tiff_folder_is_read_exactly(tmp_path, n_values, planar):
    written = make_bands_folder(tmp_path, planarconfig=planar)
    dm = module(tmp_path, mean=MEAN4, std=STD4)
    assert dm.in_channels == 4
    dm.setup("fit")
    read = samples(dm, "train") | samples(dm, "val")
    assert sorted(read) == sorted(written)
    for stem, (image, mask) in written.items():
        assert read[stem].image.dtype == np.float32
        np.testing.assert_array_equal(read[stem].image, unit(image))  # x / 65535, every band
        np.testing.assert_array_equal(read[stem].mask, mask)
    item = dm.datasets["val"][0]  # through the pipeline: per-band (x / 65535 - mean) / std
    image = written[item["name"]][0]
    assert item["image"].shape == (4, 16, 24)
    expected = (unit(image) - np.float32(MEAN4)) / np.float32(STD4)
    np.testing.assert_allclose(item["image"].numpy(), expected.transpose(2, 0, 1), atol=1e-5)


def test_bands_select_and_reorder(tmp_path, n_values):
    written = make_bands_folder(tmp_path, shape=(16, 16, 5))
    dm = module(tmp_path, bands=[3, 0, 4], mean=MEAN4[:3], std=STD4[:3])
    assert dm.in_channels == 3
    for stem, sample in samples(dm).items():
        np.testing.assert_array_equal(sample.image, unit(written[stem][0][..., [3, 0, 4]]))
    path = tmp_path / "images" / "tile_0.tif"
    with pytest.raises(
        DataError, match=r"data.bands \[1, 5\] asks for band 5, .* has 5 bands"
    ) as e:
        read_image(path, bands=[1, 5])
    one_line(e, path)
    with pytest.raises(DataError, match="asks for band 7"):
        module(tmp_path, bands=[7], mean=[0.5], std=[0.5]).in_channels  # noqa: B018
    rgb = np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3)  # RGB images too: BGR
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(read_image(tmp_path / "rgb.png", bands=[2, 1, 0]), rgb[..., ::-1])
    assert image_channels(tmp_path / "rgb.png", [0]) == 1


@pytest.mark.parametrize("bands", [[], [-1, 2], [0.5], "012", [True]])
def test_bad_bands_option(tmp_path, bands):
    with pytest.raises(ConfigError, match="data.bands"):
        module(tmp_path, bands=bands)


@pytest.mark.parametrize(
    "shape, layout", [((16, 24, 4), "hwc"), ((4, 16, 24), "chw"), ((16, 24), "hw")]
)
@pytest.mark.parametrize("dtype", [np.uint16, np.uint8, np.float32])
def test_npy_layouts(tmp_path, shape, layout, dtype):
    rng = np.random.default_rng(1)
    array = rng.integers(0, 256, shape).astype(dtype) / (255 if dtype == np.float32 else 1)
    array = array.astype(dtype)
    np.save(tmp_path / "a.npy", array)
    hwc = {"hwc": array, "chw": np.moveaxis(array, 0, -1), "hw": array[..., None]}[layout]
    pixels = read_image(tmp_path / "a.npy")
    assert pixels.shape == (16, 24, hwc.shape[2]) == (16, 24, image_channels(tmp_path / "a.npy"))
    if dtype == np.uint8:  # kept 8-bit, like RGB files (Normalize divides by 255)
        assert pixels.dtype == np.uint8
        np.testing.assert_array_equal(pixels, hwc)
    else:
        np.testing.assert_array_equal(pixels, unit(hwc) if dtype == np.uint16 else hwc)


@pytest.mark.parametrize(
    "shape, match",
    [
        ((8, 8, 8), r"shape \(8, 8, 8\) is ambiguous"),
        ((4, 16, 4), "is ambiguous"),
        ((16, 3, 16), "is ambiguous"),
        ((2, 8, 8, 3), r"expected \(H, W\), \(H, W, C\) or \(C, H, W\)"),
        ((16,), "expected"),
    ],
)
def test_ambiguous_or_invalid_npy_shapes_are_one_line_errors(tmp_path, shape, match):
    path = tmp_path / "x.npy"
    np.save(path, np.zeros(shape, np.uint16))
    for read in (read_image, image_channels):
        with pytest.raises(DataError, match=match) as e:
            read(path)
        one_line(e, path)


def test_npy_values_follow_the_rgb_rules(tmp_path):
    for name, array, match in [
        ("f.npy", np.full((8, 8, 4), 1.5, np.float32), r"float pixel values span 1\.5\.\.1\.5"),
        ("i.npy", np.full((8, 8, 4), -3, np.int16), r"span -3\.\.-3"),
        ("o.npy", np.array([[None] * 8] * 8), "cannot read .npy image"),
    ]:
        np.save(tmp_path / name, array, allow_pickle=True)
        with pytest.raises(DataError, match=match) as e:
            read_image(tmp_path / name)
        one_line(e, tmp_path / name)


def test_float_and_8_bit_multiband_tiffs(tmp_path):
    rng = np.random.default_rng(2)
    floats = rng.random((16, 16, 6)).astype(np.float32)
    tiff(tmp_path / "f.tif", floats)
    np.testing.assert_array_equal(read_image(tmp_path / "f.tif"), floats)  # as is
    tiff(tmp_path / "f64.tif", floats.astype(np.float64), planarconfig="separate")
    np.testing.assert_array_equal(read_image(tmp_path / "f64.tif"), floats)
    tiff(tmp_path / "bad.tif", floats * 2)
    with pytest.raises(DataError, match="float pixel values span") as e:
        read_image(tmp_path / "bad.tif")
    one_line(e, tmp_path / "bad.tif")
    eight = rng.integers(0, 256, (16, 16, 5), dtype=np.uint8)
    tiff(tmp_path / "u8.tif", eight)
    assert read_image(tmp_path / "u8.tif").dtype == np.uint8
    np.testing.assert_array_equal(read_image(tmp_path / "u8.tif"), eight)
    twelve = rng.integers(0, 4096, (16, 16, 2), dtype=np.uint16)  # 12-bit data: / 65535 too
    tiff(tmp_path / "u12.tif", twelve)
    np.testing.assert_array_equal(read_image(tmp_path / "u12.tif"), unit(twelve))


def test_which_tiffs_are_multiband(tmp_path):
    """Every sample of a grey TIFF with 2+ samples (GDAL's default) and of an RGB TIFF with
    4+ samples is a band, an alpha-tagged 4th one too (tifffile's default for (H, W, 4));
    single-band and RGB TIFFs keep the RGB rules."""
    rng = np.random.default_rng(3)
    four = bands16(rng, (16, 16, 4))
    tifffile.imwrite(tmp_path / "rgba.tif", four)  # tagged RGB + unassociated alpha
    assert tifffile.TiffFile(tmp_path / "rgba.tif").pages.first.extrasamples == (2,)
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.tif"), unit(four))
    assert image_channels(tmp_path / "rgba.tif") == 4
    for photometric in ("minisblack", "rgb"):  # 3 grey bands (PIL read 1 of them), or RGB
        tiff(tmp_path / "three.tif", four[..., :3], photometric=photometric)
        np.testing.assert_array_equal(read_image(tmp_path / "three.tif"), unit(four[..., :3]))
        assert image_channels(tmp_path / "three.tif") == 3
    tiff(tmp_path / "two.tif", four[..., :2])
    np.testing.assert_array_equal(read_image(tmp_path / "two.tif"), unit(four[..., :2]))
    assert image_channels(tmp_path / "two.tif") == 2
    tiff(tmp_path / "one.tif", four[..., 0])
    np.testing.assert_array_equal(read_image(tmp_path / "one.tif"), unit(four[..., [0, 0, 0]]))
    assert image_channels(tmp_path / "one.tif") == 3
    assert image_channels(tmp_path / "one.tif", [0]) == 1


def test_tiff_pages_orientation_and_codecs(tmp_path):
    rng = np.random.default_rng(4)
    image = bands16(rng, (16, 24, 4))
    path = tmp_path / "pages.tif"
    tifffile.imwrite(
        path, np.stack([image, image]), photometric="minisblack", planarconfig="contig"
    )
    with pytest.raises(
        DataError, match="has 2 full-resolution pages; .* planarconfig='contig'"
    ) as e:
        read_image(path)
    one_line(e, path)
    with tifffile.TiffWriter(tmp_path / "overview.tif") as tw:  # a GeoTIFF overview is skipped
        tw.write(image, photometric="minisblack", planarconfig="contig")
        tw.write(image[::2, ::2], photometric="minisblack", planarconfig="contig", subfiletype=1)
    np.testing.assert_array_equal(read_image(tmp_path / "overview.tif"), unit(image))
    tiff(tmp_path / "turned.tif", image, extratags=[(274, 3, 1, 6, True)])  # 90 deg clockwise
    np.testing.assert_array_equal(read_image(tmp_path / "turned.tif"), unit(np.rot90(image, -1)))
    stored = read_image(tmp_path / "turned.tif", exif_orientation=False)
    np.testing.assert_array_equal(stored, unit(image))
    try:
        import imagecodecs  # noqa: F401
    except ImportError:  # LZW (PIL writes it) needs imagecodecs in tifffile: named in the error
        Image.fromarray(np.zeros((8, 8, 2), np.uint8), mode="LA").save(
            tmp_path / "lzw.tif", compression="tiff_lzw"
        )
        with pytest.raises(DataError, match="compressed with LZW, .* pip install imagecodecs"):
            read_image(tmp_path / "lzw.tif")


@pytest.mark.parametrize("compression", ["lzw", "deflate", "zstd", "packbits"])
def test_compressed_16_bit_tiffs_are_read_exactly(tmp_path, compression):
    """GeoTIFF tools write LZW or deflate by default: imagecodecs (a dependency) decodes them."""
    image = bands16(np.random.default_rng(5), (16, 24, 4))
    path = tmp_path / f"{compression}.tif"
    tifffile.imwrite(path, image, photometric="minisblack", planarconfig="contig",
                     compression=compression)  # fmt: skip
    np.testing.assert_array_equal(read_image(path), unit(image))


def test_npy_images_are_found_and_other_band_counts_named(tmp_path, n_values):
    written = make_bands_folder(tmp_path, n=3)
    assert ".npy" in IMAGE_EXTENSIONS
    (tmp_path / "images" / "tile_2.tif").unlink()
    image = bands16(np.random.default_rng(5), (4, 16, 24))  # (C, H, W)
    np.save(tmp_path / "images" / "tile_2.npy", image)
    dm = module(tmp_path, mean=MEAN4, std=STD4, val_list=None, val_fraction=0.3)
    read = samples(dm, "train") | samples(dm, "val")
    np.testing.assert_array_equal(read["tile_2"].image, unit(np.moveaxis(image, 0, -1)))
    np.testing.assert_array_equal(read["tile_0"].image, unit(written["tile_0"][0]))
    np.save(tmp_path / "images" / "tile_2.npy", image[:3])  # 3 bands among 4-band images
    with pytest.raises(DataError, match="gives 3 channels, the first training image 4") as e:
        samples(module(tmp_path, mean=MEAN4, std=STD4), "train") | samples(
            module(tmp_path, mean=MEAN4, std=STD4), "val"
        )
    one_line(e, tmp_path / "images" / "tile_2.npy")


def test_channel_stats_measure_mean_and_std(tmp_path, n_values):
    written = make_bands_folder(tmp_path, n=4)
    dm = module(tmp_path, bands=[2, 0], mean=[0.5, 0.5], std=[0.2, 0.2])
    train = [written[s][0][..., [2, 0]] for s in samples(dm)]
    values = unit(np.concatenate([t.reshape(-1, 2) for t in train])).astype(np.float64)
    mean, std = dm.channel_stats()
    np.testing.assert_allclose(mean, values.mean(0), rtol=1e-9)
    np.testing.assert_allclose(std, values.std(0), rtol=1e-6)
    np.save(tmp_path / "u8.npy", np.full((8, 8, 2), 51, np.uint8))
    mean, std = channel_stats([tmp_path / "u8.npy"])
    np.testing.assert_allclose(mean, [0.2, 0.2])
    np.testing.assert_allclose(std, [0, 0], atol=1e-6)


def test_folder_mean_std_must_match_the_channels(tmp_path, n_values):
    make_bands_folder(tmp_path)
    with pytest.raises(ConfigError, match=r"data.mean / data.std have 3 values, .* 4 channels"):
        module(tmp_path).setup("fit")  # ImageNet's 3 values
    dm = module(tmp_path, mean=MEAN4, std=STD4)
    names = [type(t).__name__ for t in dm.pipelines["train"].transforms]
    assert "ColorJitter" not in names and "HorizontalFlip" in names  # the N-band preset
    dm = module(tmp_path, mean=MEAN4, std=STD4, crop_size=(8, 8))
    assert "ColorJitter" not in [type(t).__name__ for t in dm.pipelines["train"].transforms]
    dm.setup("fit")
    assert dm.datasets["train"][0]["image"].shape == (4, 8, 8)
    with pytest.raises(ConfigError, match=r"train_transforms\[0\]: ToGray works on RGB"):
        module(tmp_path, mean=MEAN4, std=STD4, train_transforms=[{"name": "ToGray"}])


# --- transforms ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_normalize_with_n_values(dtype):
    rng = np.random.default_rng(6)
    mean, std = [0.1, 0.2, 0.3, 0.4, 0.5], [0.5, 0.4, 0.3, 0.2, 0.1]
    image = rng.integers(0, 256, (8, 8, 5)).astype(np.uint8)
    scaled = image / 255.0
    if dtype == np.float32:
        image = scaled.astype(np.float32)
    out = build_pipeline([], 255, mean, std)(image=image, mask=np.zeros((8, 8), np.uint8))
    np.testing.assert_allclose(out["image"], (scaled - mean) / np.float64(std), atol=1e-5)
    with pytest.raises(DataError, match=r"data.mean / data.std have 3 values, .* 5 channels"):
        Normalize()(image=image)
    with pytest.raises(ConfigError, match="data.mean / data.std: one value each"):
        build_pipeline([], 255, mean, std[:4])


@pytest.mark.parametrize("channels", [4, 7])
def test_geometric_transforms_on_n_bands_equal_band_by_band(channels):
    """albumentations resamples > 4 channels in chunks of 4: each band as if alone."""
    image = np.random.default_rng(7).random((20, 28, channels)).astype(np.float32)
    for spec in [
        {"name": "Affine", "rotate": 17, "scale": 0.9, "p": 1.0},
        {"name": "Resize", "height": 13, "width": 19},
        {"name": "RandomResizedCrop", "size": [16, 16]},
    ]:
        pipeline = build_pipeline([spec], 255, [0.0] * channels, [1.0] * channels)
        pipeline.set_random_seed(0)
        whole = pipeline(image=image, mask=np.zeros((20, 28), np.uint8))["image"]
        single = build_pipeline([spec], 255, [0.0], [1.0])
        for band in range(channels):
            single.set_random_seed(0)
            alone = single(image=image[..., band : band + 1], mask=np.zeros((20, 28), np.uint8))
            np.testing.assert_array_equal(whole[..., band], alone["image"][..., 0])
    preset = build_pipeline(train_preset((8, 8), rgb=False), 255, [0.5] * channels, [1] * channels)
    out = preset(image=image, mask=np.zeros((20, 28), np.uint8))
    assert out["image"].shape == (8, 8, channels) and out["mask"].shape == (8, 8)


def test_rgb_only_transforms_refused_for_other_channel_counts():
    mean, std = [0.5] * 4, [0.2] * 4
    with pytest.raises(ConfigError, match=r"t\[1\]: ColorJitter works on RGB images only, but "
                       r"these have 4 channels") as e:  # fmt: skip
        build_pipeline([{"name": "HorizontalFlip"}, {"name": "ColorJitter"}], 255, mean, std, "t")
    assert "\n" not in str(e.value)
    nested = [{"name": "OneOf", "transforms": [{"name": "Blur"}, {"name": "HueSaturationValue"}]}]
    with pytest.raises(ConfigError, match=r"t\[0\].OneOf: HueSaturationValue works on RGB"):
        build_pipeline(nested, 255, mean, std, "t")
    ok = [{"name": "RandomBrightnessContrast"}, {"name": "GaussNoise"}, {"name": "RandomGamma"}]
    build_pipeline(ok, 255, mean, std)
    build_pipeline([{"name": "ColorJitter"}], 255)  # RGB: as before


@pytest.mark.parametrize("name", sorted(RGB_ONLY))
def test_rgb_only_list_matches_albumentations(name):
    """Each transform refused for non-RGB images does raise on 4 channels in albumentations."""
    transform = getattr(A, name)(p=1.0)
    with pytest.raises((TypeError, ValueError)):
        transform(image=np.zeros((16, 16, 4), np.uint8))
