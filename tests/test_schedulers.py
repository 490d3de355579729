"""Learning-rate schedules whose length comes from the Trainer."""

import math

import pytest
import torch

from seglight.schedulers import PolyLR, WarmupCosineLR


def lrs(scheduler, steps):
    out = []
    for _ in range(steps):
        out.append(scheduler.optimizer.param_groups[0]["lr"])
        scheduler.optimizer.step()
        scheduler.step()
    return out


def optimizer(lr=1.0):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def test_poly_matches_formula_after_warmup():
    got = lrs(PolyLR(optimizer(0.1), power=0.9, total_steps=20, warmup_steps=4), 20)
    for step, lr in enumerate(got):
        expected = 0.1 * (step + 1) / 4 if step < 4 else 0.1 * (1 - (step - 4) / 16) ** 0.9
        assert lr == pytest.approx(expected, abs=1e-12)


def test_cosine_ends_at_min_ratio():
    got = lrs(WarmupCosineLR(optimizer(), total_steps=10, min_lr_ratio=0.1), 11)
    assert got[0] == pytest.approx(1.0)
    assert got[5] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert got[10] == pytest.approx(0.1)


def test_length_left_open_is_filled_in_later():
    scheduler = PolyLR(optimizer(), total_steps=None)
    assert lrs(scheduler, 3) == [1.0, 1.0, 1.0]  # no decay until the length is known
    scheduler.total_steps = 6
    scheduler.step()
    assert scheduler.get_last_lr()[0] == pytest.approx((1 - 4 / 6) ** 0.9)


def test_bad_lengths_rejected():
    with pytest.raises(ValueError, match="total_steps"):
        PolyLR(optimizer(), total_steps=0)
    with pytest.raises(ValueError, match="warmup_steps"):
        WarmupCosineLR(optimizer(), warmup_steps=-1)
