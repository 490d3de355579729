"""The private Lightning APIs of seglight/compat.py: each still behaves as seglight relies on,
every overridden private method still exists with the parameters the override expects, and the
installed Lightning is inside the range pyproject.toml states."""

import importlib
import inspect
import re

import lightning
import pytest
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.demos.boring_classes import BoringModel
from packaging.requirements import Requirement

from seglight import compat

from seglight_testing import ROOT


def test_every_use_is_listed_and_exported():
    assert set(compat.USES) <= set(compat.__all__)
    assert all(getattr(compat, name) is not None for name in compat.USES)


def test_is_local_file_protocol():
    assert compat._is_local_file_protocol("outputs/run/last.ckpt")
    assert compat._is_local_file_protocol("file:///tmp/last.ckpt")
    assert not compat._is_local_file_protocol("s3://bucket/last.ckpt")


def test_tuner_exit_ends_fit_quietly(tmp_path):
    class StopAtStart(Callback):
        def on_train_start(self, trainer, pl_module):
            raise compat._TunerExitException()

    trainer = Trainer(default_root_dir=tmp_path, max_steps=5, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, callbacks=[StopAtStart()])  # fmt: skip
    trainer.fit(BoringModel())  # no exception reaches the caller
    assert trainer.global_step == 0


def test_jit_is_scripting_lets_a_detached_module_be_traced():
    module = BoringModel()
    with pytest.raises(RuntimeError, match="not attached"):
        module.trainer  # noqa: B018 - the attribute access is what raises
    with compat._jit_is_scripting():
        assert module.trainer is None
    assert LightningModule._jit_is_scripting is False


def test_restricted_classmethod_refuses_an_instance():
    from seglight import SegmentationModule

    model = SegmentationModule(model_kwargs={"decoder_channels": [8, 8, 8, 8, 8]})
    with pytest.raises(TypeError, match="cannot be called on an instance"):
        model.load_from_checkpoint("any.ckpt")


@pytest.mark.parametrize(
    "class_path, method, params",
    [(c, m, p) for c, methods in compat.OVERRIDDEN.items() for m, p in methods.items()],
)
def test_overridden_private_methods_still_exist(class_path, method, params):
    module, _, name = class_path.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    assert hasattr(cls, method), f"{class_path}.{method} is gone: seglight's override is dead"
    names = [p for p in inspect.signature(getattr(cls, method)).parameters if p != "self"]
    assert names[: len(params)] == params


def test_installed_lightning_is_in_the_tested_range():
    text = (ROOT / "pyproject.toml").read_text()  # tomllib is Python 3.11+; 3.10 is supported
    lightning_req = Requirement(re.search(r'^\s*"(lightning[^"]*)"', text, re.M).group(1))
    assert lightning_req.specifier.contains(lightning.__version__)
    assert any(s.operator == "<" for s in lightning_req.specifier)  # an upper bound
