"""LR schedules: values at the landmarks, and every parameter group keeps its own ratio."""

from __future__ import annotations

import functools

import pytest
import torch

from src.training.schedules import constant, cosine, wsd


def test_constant_with_warmup():
    assert [constant(s, 100, warmup=0.04) for s in (0, 1, 3, 4, 99)] == [0.25, 0.5, 1.0, 1.0, 1.0]
    assert constant(0, 100) == 1.0


def test_cosine_landmarks():
    f = functools.partial(cosine, total=110, warmup=10 / 110, final_ratio=0.1)
    assert f(0) == pytest.approx(0.1)
    assert f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.55)  # halfway through the cosine: (1 + 0.1) / 2
    assert f(110) == pytest.approx(0.1)
    values = [f(s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_wsd_landmarks():
    f = functools.partial(wsd, total=100, warmup=0.1, decay=0.2, final_ratio=0.0)
    assert f(5) == pytest.approx(0.6)
    assert f(10) == f(79) == 1.0
    assert f(80) == pytest.approx(1 - 1 / 20)
    assert f(99) == pytest.approx(0.0)


@pytest.mark.parametrize("schedule", [constant, cosine, wsd])
def test_lambda_lr_keeps_each_groups_ratio(schedule):
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.AdamW([{"params": [a], "lr": 1e-2}, {"params": [b], "lr": 1e-3}], lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, functools.partial(schedule, total=50))
    for _ in range(49):
        ratio = opt.param_groups[0]["lr"] / opt.param_groups[1]["lr"]
        assert ratio == pytest.approx(10.0)
        opt.step()
        sched.step()
