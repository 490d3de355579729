"""Optimisation as configured: schedulers stepped as asked, deterministic mode, reproducibility."""

import pytest
import torch

from seglight.cli import main

from seglight_testing import QUICKSTART, TINY

# 8 training images in batches of 4: 2 optimizer steps per epoch.
FIT = [
    "fit",
    "--config",
    QUICKSTART,
    *TINY,
    "--trainer.enable_checkpointing=false",
    "--trainer.logger=false",
    "--trainer.callbacks=[]",
    "--trainer.num_sanity_val_steps=0",
]


def scheduler_of(c):
    return c.trainer.lr_scheduler_configs[0].scheduler


def test_poly_length_comes_from_the_trainer(in_tmp):
    c = main([*FIT, "--trainer.max_epochs=3", "--model.lr_scheduler.warmup_steps=0"])
    scheduler = scheduler_of(c)
    assert scheduler.total_steps == 6  # 3 epochs x 2 steps, never written in the config
    assert scheduler.last_epoch == 6 and scheduler.get_last_lr()[0] == pytest.approx(0.0)


def test_torch_scheduler_stepped_per_epoch(in_tmp):
    c = main(
        [
            *FIT,
            "--trainer.max_epochs=2",
            "--model.lr_scheduler=StepLR",
            "--model.lr_scheduler.step_size=1",
            "--model.lr_scheduler.gamma=0.5",
            "--model.lr_scheduler_interval=epoch",
        ]
    )
    assert scheduler_of(c).get_last_lr()[0] == pytest.approx(0.002 * 0.25)


def test_one_cycle_with_explicit_length(in_tmp):
    c = main(
        [
            *FIT,
            "--trainer.max_epochs=2",
            "--model.lr_scheduler=OneCycleLR",
            "--model.lr_scheduler.max_lr=0.01",
            "--model.lr_scheduler.total_steps=4",
        ]
    )
    assert scheduler_of(c).last_epoch == 4


def test_deterministic_trainer_runs_and_repeats_exactly(in_tmp):
    def weights():
        c = main([*FIT, "--trainer.max_epochs=1", "--trainer.deterministic=true"])
        return [p.detach().clone() for p in c.model.parameters()]

    first, second = weights(), weights()
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
