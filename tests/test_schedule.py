"""Schedules and LR-finder suggestions are pure functions: tested with floats alone."""

from __future__ import annotations

import math

import numpy as np
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


def test_warmup_climbs_linearly_from_a_hundredth_to_the_full_rate():
    from kit.train.schedule import warmup_factor

    assert warmup_factor(0.0, 0.05) == pytest.approx(0.01)
    assert warmup_factor(0.025, 0.05) == pytest.approx(0.505)
    assert warmup_factor(0.05, 0.05) == 1.0 and warmup_factor(3.0, 0.05) == 1.0
    assert warmup_factor(0.0, 0.0) == 1.0  # no warm-up: the full rate at once


def test_unfrozen_stages_warm_up_by_default_and_the_report_draws_it():
    # Issue 13, defect 5: each SGDR stage restarted at its full rate; unfreezing at full AdamW rate threw
    # the validation loss up. Body stages now warm up over 1/20 of their first cycle; head stages do not.
    from kit.competitions import load_competition
    from kit.report.figure_data import lr_schedule
    from kit.train import schedule

    config = load_competition("dog-breeds")
    head, _, unfrozen = config.stages
    assert config.stage_warmup(head) == 0 and config.stage_warmup(unfrozen) == pytest.approx(0.05)
    rates = schedule.for_stage("sgdr", unfrozen, [1e-4, 3e-4, 1e-3], config.stage_warmup(unfrozen))
    assert rates.rates(0.0) == pytest.approx([1e-6, 3e-6, 1e-5])
    assert rates.factor(0.05) == pytest.approx(sgdr_lr(0.05, 1.0, 1.0, 2.0))  # warm-up over
    assert rates.factor(1.0) == pytest.approx(1.0)  # later cycles restart without a warm-up
    epochs, drawn, starts = lr_schedule(config)
    unfrozen_start = starts[2][0]
    first = int(np.argmax(epochs >= unfrozen_start))
    assert drawn[first, -1] == pytest.approx(1e-3 * 0.01)  # the report's curve shows the warm-up
    assert drawn[0, -1] == pytest.approx(config.train.lr)  # a head stage starts at its full rate


def test_a_stage_that_ends_worse_than_it_started_is_found():
    from kit.train.cross_validation import worse_stages

    history = [
        {"stage": "head", "valid_loss": 0.30},
        {"stage": "head", "valid_loss": 0.123},
        {"stage": "unfrozen", "valid_loss": 0.25},  # starts from the head's 0.123
        {"stage": "unfrozen", "valid_loss": 0.18},
        {"stage": "larger", "valid_loss": 0.15},
    ]
    assert worse_stages(history) == [{"stage": "unfrozen", "start": 0.123, "end": 0.18}]
    assert worse_stages(history[:2]) == [] and worse_stages([]) == []
    from kit.commands import cv_line
    from kit.run import Summary

    line = cv_line(Summary({"metric": "log_loss", "cv": 0.112, "cv_uncalibrated": 0.1447,
                            "folds_trained": [0], "worse_stages": {"0": worse_stages(history)}}))  # fmt: skip
    assert line.splitlines() == [
        "CV log_loss: 0.1120 (uncalibrated 0.1447; folds [0])",
        "validation loss ended worse than it started in: 'unfrozen' 0.1230 -> 0.1800 (fold 0)"
        " (shorten those stages or lower their rates, or use recipe=quick)",
    ]
