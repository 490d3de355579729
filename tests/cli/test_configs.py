"""Every YAML file in configs/ parses and instantiates model, data and trainer."""

import pytest

from seglight.cli import main

from seglight_testing import ROOT

CONFIGS = sorted(p for p in (ROOT / "configs").rglob("*.yaml") if "sweeps" not in p.parts)


def test_there_are_configs():
    assert any(p.name == "quickstart.yaml" for p in CONFIGS)


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(ROOT)) for p in CONFIGS])
def test_config_instantiates(path, in_tmp):
    # This machine has no network and no GPU: pretrained weights and mixed precision are the
    # only settings overridden; everything else is built exactly as written.
    c = main(
        [
            "--config",
            str(path),
            "--data.num_workers=0",
            "--model.encoder_weights=null",
            "--trainer.precision=32-true",
        ],
        run=False,
    )
    assert c.model.num_classes == c.datamodule.num_classes
    assert c.trainer is not None
