"""Schedules and LR-finder suggestions are pure functions: tested with floats alone."""

from __future__ import annotations

import math

import pytest

from kit.config import total_epochs
from kit.train.schedule import (
    cycle_ends,
    diverged,
    lr_find_rates,
    one_cycle_lr,
    sched_cos,
    sgdr_lr,
    sgdr_position,
    smooth,
    suggest_lr,
)


def test_sched_cos_ends_and_middle():
    assert sched_cos(1.0, 0.0, 0.0) == pytest.approx(1.0)
    assert sched_cos(1.0, 0.0, 0.5) == pytest.approx(0.5)
    assert sched_cos(1.0, 0.0, 1.0) == pytest.approx(0.0)
    assert sched_cos(2.0, 1.0, 0.25) == pytest.approx(1 + (1 + math.cos(math.pi / 4)) / 2)


def test_sgdr_cycle_mult_1_restarts_every_cycle_len():
    # Starts, middles and ends of three 2-epoch cycles.
    for start in (0.0, 2.0, 4.0):
        assert sgdr_lr(start, 0.1, 2.0, 1.0) == pytest.approx(0.1)
        assert sgdr_lr(start + 1.0, 0.1, 2.0, 1.0) == pytest.approx(0.05)
        assert sgdr_lr(start + 1.999999, 0.1, 2.0, 1.0) == pytest.approx(0.0, abs=1e-9)


def test_sgdr_cycle_mult_2_cycles_double():
    # cycle_len 1, cycle_mult 2: cycles [0,1), [1,3), [3,7)
    assert [sgdr_position(e, 1.0, 2.0)[0] for e in (0.0, 0.99, 1.0, 2.9, 3.0, 6.9)] == [0, 0, 1, 1, 2, 2]
    assert sgdr_lr(0.5, 1.0, 1.0, 2.0) == pytest.approx(0.5)  # middle of cycle 0
    assert sgdr_lr(1.0, 1.0, 1.0, 2.0) == pytest.approx(1.0)  # restart
    assert sgdr_lr(2.0, 1.0, 1.0, 2.0) == pytest.approx(0.5)  # middle of cycle 1 (1..3)
    assert sgdr_lr(5.0, 1.0, 1.0, 2.0) == pytest.approx(0.5)  # middle of cycle 2 (3..7)
    assert sgdr_lr(6.99999, 1.0, 1.0, 2.0) == pytest.approx(0.0, abs=1e-8)
    assert sgdr_lr(3.0, 1.0, 1.0, 2.0, lr_min=0.1) == pytest.approx(1.0)


def test_total_epochs_and_cycle_ends():
    assert total_epochs(3, 1, 2) == 7
    assert cycle_ends(3, 1, 2) == [1, 3, 7]
    assert total_epochs(4, 2, 1) == 8
    assert cycle_ends(4, 2, 1) == [2, 4, 6, 8]
    assert len(cycle_ends(5, 0.5, 1.5)) == 5  # one snapshot per cycle


def test_one_cycle_warms_up_then_anneals():
    assert one_cycle_lr(0.0, 1.0) == pytest.approx(1 / 25)
    assert one_cycle_lr(0.25, 1.0) == pytest.approx(1.0)
    assert one_cycle_lr(1.0, 1.0) == pytest.approx(1e-4)
    values = [one_cycle_lr(f / 100, 1.0) for f in range(101)]
    peak = values.index(max(values))
    assert all(a <= b for a, b in zip(values[:peak], values[1 : peak + 1], strict=True))
    assert all(a >= b for a, b in zip(values[peak:], values[peak + 1 :], strict=False))


def test_lr_find_rates_span_the_range_exponentially():
    rates = lr_find_rates(1e-7, 10, 100)
    assert rates[0] == pytest.approx(1e-7) and rates[-1] == pytest.approx(10)
    ratios = {round(b / a, 9) for a, b in zip(rates, rates[1:], strict=False)}
    assert len(ratios) == 1


def test_smooth_is_bias_corrected():
    assert smooth([2.0, 2.0, 2.0]) == pytest.approx([2.0, 2.0, 2.0])


def test_diverged():
    assert not diverged([1.0, 0.9, 0.8])
    assert diverged([1.0, 0.5, 2.5])
    assert diverged([1.0, float("nan")])


def test_suggest_lr_on_a_typical_curve():
    rates = lr_find_rates(1e-6, 1.0, 60)
    # Flat, then falling fastest around 1e-3, lowest near 1e-1, then exploding.
    losses = [2.3 - 2.0 / (1 + math.exp(-3 * (math.log10(r) + 3))) + (30 * r) ** 3 for r in rates]
    suggestion, reason = suggest_lr(rates, losses)
    assert rates[0] <= suggestion <= rates[-1]
    smoothed = smooth(losses)
    lowest = rates[min(range(len(smoothed)), key=smoothed.__getitem__)]
    assert suggestion <= lowest / 10 + 1e-12
    assert reason


def test_suggest_lr_needs_points():
    with pytest.raises(ValueError):
        suggest_lr([1e-3, 1e-2], [1.0, 0.5])


def test_suggest_lr_ignores_noise_while_the_average_warms_up():
    rates = lr_find_rates(1e-7, 1.0, 100)
    losses = [2.3 - 2.0 / (1 + math.exp(-3 * (math.log10(r) + 2))) + (10 * r) ** 3 for r in rates]
    losses[1], losses[2] = 2.3, 1.2  # a lucky early batch: a steep drop at 1.2e-7 in the raw losses
    suggestion, _ = suggest_lr(rates, losses)
    assert 1e-4 < suggestion < 1e-1
