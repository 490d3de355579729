"""A checkpoint written before the redesign (issue 11) keeps loading: in plain Python, through
the CLI's --ckpt_path and in `export`'s loader. When classes move, this file must keep passing.

tests/fixtures/pre_redesign.ckpt (3.9 MB) was written at commit 28018a2 by
    python -m seglight fit --config configs/quickstart.yaml --data.image_size=32
      --data.train_size=8 --data.val_size=4 --data.test_size=4 --data.predict_size=3
      --data.batch_size=4 --data.num_workers=0 --model.encoder_name=tu-mobilenetv3_small_050
      "--model.model_kwargs={decoder_channels: [8, 8, 8, 8, 8]}" --trainer.max_epochs=1
(last.ckpt): class path seglight.module.SegmentationModule, callbacks seglight.best_checkpoint.
ModelCheckpoint and seglight.resume.RngState, data module state of SyntheticDataModule.
"""

import json

import torch

from seglight import SegmentationModule
from seglight.cli import main
from seglight.cli.export import load_module
from seglight.data.synthetic import CLASS_NAMES

from seglight_testing import QUICKSTART, ROOT, TINY

OLD = ROOT / "tests" / "fixtures" / "pre_redesign.ckpt"


def test_loads_in_plain_python_and_predicts():
    model = SegmentationModule.load_from_checkpoint(OLD).eval()
    assert model.hparams.encoder_name == "tu-mobilenetv3_small_050"
    assert model.class_names == CLASS_NAMES
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 45, 61))
    assert logits.shape == (1, len(CLASS_NAMES), 45, 61)


def test_cli_tests_it_and_export_loads_it(in_tmp):
    main(["test", "--config", QUICKSTART, *TINY, f"--ckpt_path={OLD}",
          "--trainer.default_root_dir=run"])  # fmt: skip
    report = json.loads(next((in_tmp / "run").rglob("test_report.json")).read_text())
    assert [c["name"] for c in report["classes"]] == CLASS_NAMES
    assert sum(c["pixels"] for c in report["classes"]) > 0
    module = load_module(OLD)
    assert isinstance(module, SegmentationModule) and module.num_classes == len(CLASS_NAMES)
