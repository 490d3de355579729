"""Shared fixtures (`in_tmp`) and the test environment; the helpers that tests import (paths,
CLI overrides, dataset trees, example classes) are in the seglight_testing package beside this."""

import os
import sys
from pathlib import Path

import pytest

# No test may touch the network: the Hugging Face client fails at once instead of retrying.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")


@pytest.fixture
def in_tmp(tmp_path, monkeypatch) -> Path:
    """Run in an empty folder, so configs' relative output paths land in tmp_path; the CLI is
    driven through `args`, so pytest's own argv must not reach it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["seglight"])
    return tmp_path
