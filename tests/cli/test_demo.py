"""The README's claim about `make demo`: the quickstart reaches test mIoU >= 0.85 (about 3 min)."""

import pytest

from seglight.cli import main

from seglight_testing import QUICKSTART


@pytest.mark.slow
def test_quickstart_reaches_the_quoted_miou(in_tmp):
    main(["fit", "--config", QUICKSTART, "--trainer.enable_progress_bar=false"])
    c = main(
        [
            "test",
            "--config",
            QUICKSTART,
            "--trainer.enable_progress_bar=false",
            "--ckpt_path=outputs/quickstart/checkpoints/best.ckpt",
        ]
    )
    assert float(c.model.last_metrics["test"]["mIoU"]) >= 0.85
