"""The dataset recipes run end to end through the CLI on tiny trees in the official layouts."""

import csv

import numpy as np
from PIL import Image

from seglight.cli import main

from seglight_testing import ROOT
from seglight_testing.datasets import SMALL, make_cityscapes, make_folder, make_voc


def test_voc_recipe_fits_and_predicts(in_tmp):
    make_voc(in_tmp / "data" / "voc", ids=[f"2007_{i:06d}" for i in range(5)], size=(37, 45))
    config = str(ROOT / "configs" / "voc.yaml")
    main(["fit", "--config", config, *SMALL])
    rows = list(csv.DictReader(open(in_tmp / "outputs/voc/logs/version_0/metrics.csv")))
    assert any(r.get("val/IoU/person") for r in rows)  # VOC's 21 class names reach the logs
    main(["predict", "--config", config, *SMALL,
          "--ckpt_path=outputs/voc/checkpoints/last.ckpt"])  # fmt: skip
    written = Image.open(in_tmp / "outputs/voc/predictions/2007_000002.png")  # the val image
    assert written.size == (45, 37) and written.mode == "P"  # the image's own size


def test_folder_recipe_with_colour_masks(in_tmp):
    make_folder(in_tmp / "data" / "my_dataset", n=6, rgb=True)
    main(["fit", "--config", str(ROOT / "configs" / "folder.yaml"), *SMALL,
          "--data.classes=[background, road, person]", "--data.mask_format=rgb",
          "--data.colors=[[0, 0, 0], [128, 64, 128], [220, 20, 60]]",
          "--data.ignore_color=[255, 255, 255]"])  # fmt: skip
    rows = list(csv.DictReader(open(in_tmp / "outputs/folder/logs/version_0/metrics.csv")))
    miou = [float(r["val/mIoU"]) for r in rows if r.get("val/mIoU")]
    assert miou and 0 <= miou[-1] <= 1
    assert np.isfinite(miou).all()


def test_cityscapes_predictions_as_label_ids_for_the_official_script(in_tmp):
    make_cityscapes(in_tmp / "data" / "cityscapes")
    config = str(ROOT / "configs" / "cityscapes.yaml")
    main(["fit", "--config", config, *SMALL, "--data.eval_batch_size=1"])
    main(["predict", "--config", config, *SMALL,
          "--ckpt_path=outputs/cityscapes/checkpoints/last.ckpt"])  # fmt: skip
    written = sorted((in_tmp / "outputs/cityscapes/predictions").glob("*.png"))
    images = sorted((in_tmp / "data/cityscapes/leftImg8bit/val").rglob("*_leftImg8bit.png"))
    # Named as the image (<city>_<seq>_<frame>_leftImg8bit.png: what the evaluation script
    # matches on), holding labelIds, not training ids.
    assert [p.name for p in written] == sorted(p.name for p in images)
    values = set(np.unique(np.array(Image.open(written[0]))).tolist())
    native = {7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33}
    assert values <= native and Image.open(written[0]).mode == "L"


def test_split_without_labels_warns_and_reports_nan(in_tmp, recwarn):
    make_folder(in_tmp / "data" / "my_dataset", n=4)
    for mask in (in_tmp / "data/my_dataset/masks").iterdir():
        Image.fromarray(np.full((24, 32), 255, np.uint8), mode="L").save(mask)
    config = str(ROOT / "configs" / "folder.yaml")
    c = main(["validate", "--config", config, *SMALL, "--data.classes=[a, b, c]"])
    assert np.isnan(float(c.model.last_metrics["val"]["mIoU"]))
    assert any("no labelled pixel" in str(w.message) for w in recwarn)
