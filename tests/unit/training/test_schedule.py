"""The one learning-rate schedule (warm-up then cosine) and the converter's gate annealing, against the
formulas written out independently here."""

from __future__ import annotations

import math

import pytest

from bilinear_lens.training.schedule import BetaSchedule, LRSchedule, lr_factor, resolved_warmup


def reference_lr(step, total, warmup, min_ratio):
    if step < warmup:
        return (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * (1 + math.cos(math.pi * t)) / 2


@pytest.mark.parametrize("total, warmup, min_ratio", [(100, 10, 0.1), (50, 0, 0.0), (7, 3, 0.5), (1, 1, 0.1)])
def test_lr_factor_is_warmup_then_cosine(total, warmup, min_ratio):
    got = [lr_factor(s, total, warmup, min_ratio) for s in range(total + 3)]
    assert got == pytest.approx([reference_lr(s, total, warmup, min_ratio) for s in range(total + 3)], abs=1e-15)
    if warmup:
        assert got[warmup - 1] == 1.0 and got[0] == pytest.approx(1 / warmup)  # full rate at the last warm-up step
    assert got[-1] == pytest.approx(min_ratio)  # ends (and stays) at the floor
    assert LRSchedule(total, warmup, "constant", min_ratio)(total) == 1.0


def test_image_schedule_is_the_same_function_with_a_zero_floor():
    """The classifier's old schedule (warm-up, then cosine to 0) is lr_factor with min_ratio 0, bit for bit."""
    total, warmup = 30, 4
    for s in range(total):
        old = (s + 1) / warmup if s < warmup else 0.5 * (1.0 + math.cos(math.pi * min(1.0, (s - warmup) / (total - warmup))))
        assert lr_factor(s, total, warmup) == old


def test_default_warmup_is_five_percent_between_one_and_a_hundred():
    assert [resolved_warmup(None, t) for t in (1, 10, 245, 4000)] == [1, 1, 12, 100]
    assert resolved_warmup(0, 245) == 0 and resolved_warmup(7, 245) == 7


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_beta_goes_from_one_to_zero_over_the_annealing_steps(kind):
    sched = BetaSchedule(total_steps=20, anneal_frac=0.25, kind=kind)
    betas = [sched(s) for s in range(20)]
    assert sched.anneal_steps == 5 and betas[4:] == [0.0] * 16  # zero from the last annealing step on
    assert all(a > b for a, b in zip(betas[:5], betas[1:5]))  # strictly decreasing before
    t = 1 / 5
    assert betas[0] == pytest.approx(1 - t if kind == "linear" else (1 + math.cos(math.pi * t)) / 2)


def test_bad_schedules_are_refused():
    with pytest.raises(ValueError, match="anneal_frac=0 must be in"):
        BetaSchedule(10, 0)
    with pytest.raises(ValueError, match="unknown beta schedule"):
        BetaSchedule(10, 0.5, "exp")
    with pytest.raises(ValueError, match="unknown learning-rate decay"):
        LRSchedule(10, 1, "step")
