"""train.stop_patience: the recipe stops at the stop_patience + 1-th check point in a row that does not
beat the best so far (kit.train.stopping), on plain values, then the trick as the loop drives it, its
resume, and fold 0's decision for the other folds of a --fold all run."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from kit.train import stopping

HEAD, BODY = True, False

# digits' check points, recorded on 2026-12-03 (docs/2026-12-03-stop-when-worse.md): the two head stages,
# the unfrozen stage's cycles of 1, 2 and 4 epochs, the larger stage's three 1-epoch cycles (accuracy)
DIGITS = [0.8021, 0.7847, 0.4757, 0.9549, 0.9757, 0.9688, 0.9826, 0.9757]
DIGITS_HEAD_ONLY = [HEAD, HEAD, BODY, BODY, BODY, BODY, BODY, BODY]


def test_patience_counts_the_check_points_in_a_row_that_do_not_pay():
    # log loss, no head stages: 0.5 pays (the first), 0.6 and 0.7 do not, 0.4 pays, 0.45 does not
    scores = [0.5, 0.6, 0.7, 0.4, 0.45, 0.5, 0.55]
    assert stopping.stop_at(scores, 0.0, False, patience=0) == 1
    assert stopping.stop_at(scores, 0.0, False, patience=1) == 2
    assert stopping.stop_at(scores, 0.0, False, patience=2) == 6  # 0.4 reset the count after two misses
    assert stopping.stop_at(scores, 0.0, False, patience=3) is None
    assert [stopping.misses(scores[: index + 1], 0.0, False) for index in range(7)] == [0, 1, 2, 0, 1, 2, 3]
    # a gain smaller than min_stage_gain is a miss: 0.49 and 0.48 beat 0.5, by less than 0.05
    assert stopping.stop_at([0.5, 0.49, 0.48], 0.05, False, patience=1) == 2
    assert stopping.stop_at([0.5, 0.49, 0.48], 0.0, False, patience=0) is None


def test_a_diverged_check_point_stops_at_once_whatever_the_patience():
    for patience in (0, 1, 2):
        assert stopping.stop_at([0.5, math.nan], 0.0, False, patience=patience) == 1
        assert stopping.stop_at([0.9, 0.95, math.nan], 0.0, True, [HEAD, BODY, BODY], patience) == 2
    # even in a head stage, and before the count reached the patience
    assert stopping.stop_at([0.9, math.nan], 0.0, True, [HEAD, HEAD], patience=2) == 1
    assert stopping.stop_at([0.9, 0.8, math.nan], 0.0, True, [HEAD, BODY, BODY], patience=2) == 2


def test_head_only_check_points_are_compared_with_but_never_count():
    # head-only misses are passed over: two of them, then one unfrozen miss, is one miss
    scores, flags = [0.8, 0.7, 0.75, 0.6, 0.65], [HEAD, HEAD, HEAD, BODY, BODY]
    assert stopping.misses(scores[:3], 0.0, True, flags[:3]) == 0
    assert stopping.stop_at(scores, 0.0, True, flags, patience=0) == 3
    assert stopping.stop_at(scores, 0.0, True, flags, patience=1) == 4
    assert stopping.stop_at(scores, 0.0, True, flags, patience=2) is None
    # a head stage after an unfrozen one: its miss neither counts nor resets; its gain resets
    assert stopping.stop_at([0.8, 0.7, 0.6, 0.65], 0.0, True, [HEAD, BODY, HEAD, BODY], 1) == 3
    assert stopping.stop_at([0.8, 0.7, 0.9, 0.85], 0.0, True, [HEAD, BODY, HEAD, BODY], 1) is None


def test_digits_runs_to_its_end_with_patience_one_and_stopped_at_its_first_unfrozen_cycle_without():
    assert stopping.stop_at(DIGITS, 0.0, True, DIGITS_HEAD_ONLY, patience=0) == 2  # 0.4757 < 0.8021
    assert stopping.stop_at(DIGITS, 0.0, True, DIGITS_HEAD_ONLY, patience=1) is None
    assert stopping.stop_at(DIGITS, 0.0, True, DIGITS_HEAD_ONLY, patience=2) is None
    # a recipe whose unfrozen stage never pays (the five-breed set, log loss) stops after two of its cycles
    never = [1.20, 1.15, 1.30, 1.25, 1.40, 1.35]
    flags = [HEAD, HEAD, BODY, BODY, BODY, BODY]
    assert stopping.stop_at(never, 0.0, False, flags, patience=0) == 2
    assert stopping.stop_at(never, 0.0, False, flags, patience=1) == 3
    assert stopping.stop_at(never, 0.0, False, flags, patience=2) == 4


def test_the_stop_line_names_the_patience_and_the_check_points_in_a_row():
    checkpoint = stopping.Checkpoint(2, "unfrozen", 3, "cycle", 0.4123, "snapshot-2")
    line = stopping.stop_line(0, checkpoint, 0.3512, "log_loss", 4, 540.0, 0.0, 2, 1)
    assert "2 check points in a row not better than the best so far, 0.3512" in line
    assert "0.4123" in line and "train.stop_patience = 1" in line and "4 epochs" in line
    assert "9.0 min" in line and "epoch 3" in line and "\n" not in line
    one = stopping.stop_line(0, checkpoint, 0.3512, "log_loss", 4, 540.0, 0.0, 1, 0)
    assert "OOF log_loss 0.4123 not better than the best so far, 0.3512" in one
    assert "train.stop_patience = 0" in one and "in a row" not in one
    # at the recipe's last check point nothing is skipped: the line says what the stop still changes
    at_end = stopping.Checkpoint(2, "unfrozen", 7, "stage", 0.4123, "last")
    last = stopping.stop_line(0, at_end, 0.3512, "log_loss", 0, 0.0, 0.0, 2, 1)
    assert "the recipe's last check point" in last and "skipping" not in last and "best check point" in last
    diverged = stopping.Checkpoint(2, "unfrozen", 1, "cycle", math.nan, None)
    assert "the loss diverged" in stopping.stop_line(0, diverged, 0.3512, "log_loss", 4, 540.0, 0.0, 1, 1)


def recipe_config(patience: int, stop_per_fold: bool = False):
    """Two head stages, then an unfrozen stage of four 1-epoch cycles (accuracy)."""
    from kit.config_build import config_from_dict

    stages = [
        {"name": "head-precomputed", "freeze_to": -1, "cycle_len": 1},
        {"name": "head-augmented", "freeze_to": -1, "cycle_len": 1},
        {"name": "unfrozen", "n_cycles": 4, "cycle_len": 1},
    ]
    train = {"stop_patience": patience, "stop_per_fold": stop_per_fold}
    return config_from_dict(
        {"competition": {"metric": "accuracy"}, "train": train, "stages": stages},
        Path("x/competition.toml"),
    )


class Driver:
    """The trick driven as kit.train.loop drives it, on plain values: one call per epoch."""

    def __init__(self, trick: stopping.StopWhenWorse, config):
        self.trick, self.config, self.history = trick, config, []

    def epoch(self, stage_index: int, number: int, score: float, starts: bool | None = None) -> str | None:
        """One epoch's end; `starts`: the stage (re)starts first (default: at its first epoch)."""
        view = SimpleNamespace(
            config=self.config,
            stage_index=stage_index,
            stage=self.config.stages[stage_index],
            state=SimpleNamespace(history=self.history),
            stop_reason=None,
        )
        if starts or (starts is None and number == 1):
            self.trick.on_stage_start(view)
        record = {"epoch": number, "accuracy": score, "seconds": 1.0, "valid_loss": 1.0}
        self.trick.on_epoch_end(view, record)
        self.history.append({**record, "stage_index": stage_index})
        return view.stop_reason


def test_the_trick_with_patience_one_lets_a_cycle_recover_and_stops_at_the_second_miss():
    config = recipe_config(patience=1)
    recovers = Driver(stopping.StopWhenWorse(config, fold=0), config)
    assert recovers.epoch(0, 1, 0.8021) is None and recovers.epoch(1, 1, 0.7847) is None
    assert recovers.epoch(2, 1, 0.4757) is None  # the first unfrozen cycle: one miss, patience 1
    assert recovers.epoch(2, 2, 0.9549) is None  # beats 0.8021: the count starts again
    assert recovers.epoch(2, 3, 0.9500) is None and not recovers.trick.stopped
    never = Driver(stopping.StopWhenWorse(config, fold=0), config)
    never.epoch(0, 1, 0.80), never.epoch(1, 1, 0.78)
    assert never.epoch(2, 1, 0.60) is None
    reason = never.epoch(2, 2, 0.70)
    assert reason is not None and "2 check points in a row" in reason and "train.stop_patience = 1" in reason
    stop = never.trick.stop
    assert (stop["stage_index"], stop["epoch"], stop["best"]) == (2, 2, 0.80)
    assert stop["patience"] == 1 and stop["misses"] == 2 and stop["epochs_skipped"] == 2
    outcomes = never.trick.recipe(config, never.history)["stages"]
    assert [item["status"] for item in outcomes] == ["ran", "ran", "stopped"]


def test_a_resumed_fold_keeps_counting_the_misses_before_the_interruption():
    # the resume file holds the trick's state (its check points): one miss before, one after, is a stop
    config = recipe_config(patience=1)
    before = Driver(stopping.StopWhenWorse(config, fold=0), config)
    before.epoch(0, 1, 0.80), before.epoch(1, 1, 0.78), before.epoch(2, 1, 0.60)
    saved = json.loads(json.dumps(before.trick.state_dict()))  # as the resume file stores it
    resumed = stopping.StopWhenWorse(config, fold=0)
    resumed.load_state_dict(saved)
    after = Driver(resumed, config)
    reason = after.epoch(2, 2, 0.70, starts=True)  # the loop starts the stage again, mid-stage, on resume
    assert reason is not None and resumed.stop["misses"] == 2 and resumed.stop["best"] == 0.80


def test_fold_zeros_decision_stops_the_later_folds_where_it_stopped_and_carries_its_patience():
    config = recipe_config(patience=1)
    fold_zero = Driver(stopping.StopWhenWorse(config, fold=0), config)
    for stage_index, number, score in [(0, 1, 0.80), (1, 1, 0.78), (2, 1, 0.60), (2, 2, 0.70)]:
        fold_zero.epoch(stage_index, number, score)
    planned = {"stop": json.loads(json.dumps(fold_zero.trick.stop))}
    fold_one = Driver(stopping.StopWhenWorse(config, fold=1, planned=planned), config)
    fold_one.epoch(0, 1, 0.70), fold_one.epoch(1, 1, 0.75)
    assert fold_one.epoch(2, 1, 0.90) is None  # fold 1's own scores are not what decides
    reason = fold_one.epoch(2, 2, 0.95)
    assert reason is not None and "fold 0 stopped here" in reason and "train.stop_patience = 1" in reason
    stop = fold_one.trick.stop
    assert stop["decided_by"] == "fold 0" and stop["patience"] == 1 and stop["misses"] == 2


def test_a_fold_that_follows_fold_zero_still_stops_on_its_own_when_its_loss_diverges():
    # fold 0 ran every stage ({"stop": None}); fold 1's unfrozen stage diverges: diverged weights never
    # train on (before, the loop raised its error for a fold that followed fold 0)
    config = recipe_config(patience=1)
    fold_one = Driver(stopping.StopWhenWorse(config, fold=1, planned={"stop": None}), config)
    assert not fold_one.trick.ends_diverged_stage  # no weights kept yet: the loop's error
    fold_one.epoch(0, 1, 0.70), fold_one.epoch(1, 1, 0.75)
    assert fold_one.trick.ends_diverged_stage
    assert fold_one.epoch(2, 1, 0.50) is None  # not better, but fold 0 decides
    reason = fold_one.epoch(2, 2, math.nan)
    assert reason is not None and "diverged" in reason and fold_one.trick.stop["decided_by"] == "fold 1"


def test_stop_patience_below_zero_is_a_one_line_error():
    from kit.config_build import config_from_dict
    from kit.errors import ConfigError

    with pytest.raises(ConfigError, match=r"train\.stop_patience' = -1 must be 0 .*or more"):
        config_from_dict({"train": {"stop_patience": -1}}, Path("x/competition.toml"))


@pytest.mark.slow
def test_a_fold_all_run_stops_every_fold_where_fold_zero_stopped(digits, project):
    # stage 1 at a learning rate 100x too high diverges in fold 0 (a stop at once, whatever the patience);
    # fold 1 does not decide: it stops at the same check point, and says fold 0 decided (with its patience)
    from kit import commands

    config = digits(
        "stages=[{cycle_len=1}, {n_cycles=3, cycle_len=1, lr=0.3, snapshots=true}, {cycle_len=1}]",
        "train.folds=2",
        "train.stop_when_worse=true",  # the default (the tiny runs of other tests turn it off)
        "predict.select=false",
    )
    assert config.train.stop_patience == 1  # the default
    run_dir = commands.train(config, "all")
    summary = json.loads((run_dir / "metrics.json").read_text())
    for fold in ("0", "1"):
        assert [record["stage_index"] for record in summary["folds"][fold]["history"]] == [0, 1]
        assert [stage["status"] for stage in summary["stages"][fold]] == ["ran", "stopped", "skipped"]
    zero, one = (summary["folds"][fold]["recipe"]["stop"] for fold in ("0", "1"))
    assert (
        zero["decided_by"] == "fold 0" and one["decided_by"] == "fold 0" and "fold 0 stopped" in one["reason"]
    )
    assert zero["patience"] == one["patience"] == 1
