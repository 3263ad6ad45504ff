"""Stopping a recipe that stops paying (train.stop_when_worse): the decision as pure functions of plain
values, then digits runs with a deliberately harmful stage."""

from __future__ import annotations

import math

import pytest

from kit.train import stopping


def test_a_check_point_pays_only_when_better_than_the_best_by_more_than_the_minimum():
    # log loss: lower is better
    assert stopping.pays(0.30, None, 0.0, higher_is_better=False)  # the first check point always pays
    assert stopping.pays(0.30, 0.31, 0.0, higher_is_better=False)
    assert not stopping.pays(0.31, 0.31, 0.0, higher_is_better=False)  # equal is not better
    assert not stopping.pays(0.35, 0.31, 0.0, higher_is_better=False)
    assert not stopping.pays(0.305, 0.31, 0.01, higher_is_better=False)  # better, but by less than 0.01
    assert stopping.pays(0.295, 0.31, 0.01, higher_is_better=False)
    # accuracy: higher is better
    assert stopping.pays(0.91, 0.90, 0.0, higher_is_better=True)
    assert not stopping.pays(0.89, 0.90, 0.0, higher_is_better=True)
    assert not stopping.pays(math.nan, 0.90, 0.0, higher_is_better=True)  # a diverged check never pays
    assert stopping.pays(0.90, math.nan, 0.0, higher_is_better=True) is False  # NaN best: gain is NaN


def test_the_stop_compares_with_the_best_so_far_not_the_last():
    # Head stages improve, then an unfrozen cycle is better than the last check but not than the best.
    assert not stopping.should_stop([0.9, 0.7, 0.6], 0.0, higher_is_better=False)
    assert stopping.should_stop([0.9, 0.5, 0.6], 0.0, higher_is_better=False)
    assert stopping.should_stop([0.9, 0.5, 0.8, 0.7], 0.0, higher_is_better=False)
    assert not stopping.should_stop([0.9, 0.5, 0.8, 0.4], 0.0, higher_is_better=False)
    assert not stopping.should_stop([0.2, 0.5, 0.6], 0.0, higher_is_better=True)
    assert stopping.should_stop([0.2, 0.6, 0.6], 0.0, higher_is_better=True)
    assert not stopping.should_stop([0.9], 0.0, higher_is_better=False) and not stopping.should_stop(
        [], 0, True
    )
    assert stopping.best_of([0.9, math.nan, 0.5], higher_is_better=False) == 0.5
    assert stopping.best_of([math.nan], higher_is_better=True) is None


def test_checks_follow_the_cycles_that_end_and_the_stage_end():
    # SGDR cycles of 1, 2, 4 epochs end after epochs 1, 3 and 7: the checks, the last being the stage's end.
    assert stopping.check_epochs([1.0, 3.0, 7.0], 7.0) == [1, 3, 7]
    # A cycle ending mid-epoch is checked at that epoch's end; one 3-epoch cycle is checked once.
    assert stopping.check_epochs([0.5, 1.0], 1.0) == [1]
    assert stopping.check_epochs([1.5, 3.0], 3.0) == [2, 3]
    assert stopping.check_epochs([3.0], 3.0) == [3]
    assert stopping.check_epochs([0.5], 0.5) == [1]


def test_the_time_saved_counts_the_rest_of_the_stage_and_the_later_stages():
    stage_epochs = [2.0, 2.0, 7.0, 3.0]
    assert stopping.epochs_left(stage_epochs, 2, 1) == 6 + 3
    assert stopping.epochs_left(stage_epochs, 3, 3) == 0
    assert stopping.seconds_saved(stage_epochs, 2, 1, [100.0]) == pytest.approx(900.0)
    assert stopping.seconds_saved(stage_epochs, 2, 3, [90.0, 110.0, 100.0]) == pytest.approx(700.0)
    assert stopping.seconds_saved(stage_epochs, 0, 1, []) == 0.0


def test_the_stop_line_says_where_the_two_figures_and_the_time_saved():
    checkpoint = stopping.Checkpoint(2, "unfrozen", 1, "cycle", 0.4123, "snapshot-1")
    line = stopping.stop_line(0, checkpoint, 0.3512, "log_loss", 6, 540.0, 0.0)
    assert "fold 0" in line and "'unfrozen'" in line and "epoch 1" in line
    assert "0.4123" in line and "0.3512" in line and "6 epochs" in line and "9.0 min" in line
    assert "\n" not in line and "train.stop_when_worse" in line and "train.min_stage_gain" in line


def test_stage_outcomes_say_which_ran_which_stopped_and_which_were_skipped():
    names, epochs = ["head", "augmented", "unfrozen", "again"], [2.0, 1.0, 7.0, 1.0]
    history = [{"stage_index": index} for index in (0, 0, 1, 2)]
    stop = {"stage_index": 2, "epoch": 1, "reason": "OOF log_loss 0.41 not better than 0.35"}
    outcomes = stopping.stage_outcomes(names, epochs, history, stop)
    assert [item["status"] for item in outcomes] == ["ran", "ran", "stopped", "skipped"]
    assert [item["epochs"] for item in outcomes] == [2, 1, 1, 0]
    assert outcomes[2]["why"] == outcomes[3]["why"] == stop["reason"] and "why" not in outcomes[0]
    # A stop at a stage's last check: that stage ran (its weights did not pay), the later ones skipped.
    at_end = stopping.stage_outcomes(names, epochs, [*history, *[{"stage_index": 2}] * 6], stop)
    assert [item["status"] for item in at_end] == ["ran", "ran", "ran", "skipped"] and "why" in at_end[2]
    assert [item["status"] for item in stopping.stage_outcomes(names, epochs, history, None)] == [
        "ran",
        "ran",
        "unfinished",
        "unfinished",
    ]
