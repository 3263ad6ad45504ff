"""Stopping a recipe that stops paying (train.stop_when_worse): the decision as pure functions of plain
values, then digits runs with a deliberately harmful stage."""

from __future__ import annotations

import json
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


def test_head_only_check_points_never_stop_the_recipe():
    # digits: the precomputed head 0.8021, the augmented head 0.7847 (worse, but head-only: no stop), then
    # the first unfrozen cycle, which pays or stops the recipe
    assert not stopping.may_stop(trains_head_only=True, score=0.7847)
    assert stopping.may_stop(trains_head_only=False, score=0.7847)
    assert stopping.may_stop(trains_head_only=True, score=math.nan)  # a diverged head stops at once
    head, body = True, False
    assert not stopping.should_stop([0.8021, 0.7847], 0.0, True, [head, head])
    assert stopping.should_stop([0.8021, 0.7847], 0.0, True, [body, body])  # without flags, as before
    assert stopping.should_stop([0.8021, 0.7847], 0.0, True)
    # the first unfrozen cycle is compared with the best of the head stages: it stops when it does not pay
    assert not stopping.should_stop([0.8021, 0.7847, 0.99], 0.0, True, [head, head, body])
    assert stopping.should_stop([0.8021, 0.7847, 0.80], 0.0, True, [head, head, body])
    # a head stage after an unfrozen one never stops, even when worse; the next unfrozen check may
    assert not stopping.should_stop([0.8, 0.99, 0.95], 0.0, True, [head, body, head])
    assert stopping.should_stop([0.8, 0.99, 0.95, 0.97], 0.0, True, [head, body, head, body])


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


# A tiny digits recipe: a stage that learns, then a stage at a learning rate 100x too high (it wrecks the
# weights: the loss diverges, which the stop takes as a check point that does not pay), then one more.
HARMFUL = [
    "stages=[{cycle_len=1}, {n_cycles=3, cycle_len=1, lr=0.3, snapshots=true}, {cycle_len=1}]",
    "train.stop_when_worse=true",
    "predict.weights='snapshots'",
]


def trained_epochs(run_dir) -> list[int]:
    summary = json.loads((run_dir / "metrics.json").read_text())
    return [record["stage_index"] for record in summary["folds"]["0"]["history"]]


@pytest.mark.slow
def test_a_harmful_stage_stops_the_recipe_and_the_earlier_weights_predict(digits, project):
    from kit import commands

    config = digits(*HARMFUL, "predict.select=false")
    run_dir = commands.train(config, "0")
    # stage 0's epoch, stage 1's first cycle (where it was checked), nothing of stage 2
    assert trained_epochs(run_dir) == [0, 1]
    summary = json.loads((run_dir / "metrics.json").read_text())
    recipe = summary["folds"]["0"]["recipe"]
    assert recipe["stop"]["stage_index"] == 1 and recipe["stop"]["epoch"] == 1
    assert recipe["stop"]["epochs_skipped"] == 2 + 1
    assert [stage["status"] for stage in summary["stages"]["0"]] == ["ran", "stopped", "skipped"]
    why = summary["stages"]["0"][2]["why"]
    assert "not better than the best so far" in why or "diverged" in why
    # the weights at the stop do not predict; stage 0's final weights do
    commands.predict(config, run_dir.name)
    record = json.loads((run_dir / "submission.json").read_text())
    assert record["weights"] == ["fold-0/stage-0.pt"]
    assert (run_dir / "fold-0" / "snapshot-1.pt").exists() and not (
        run_dir / "fold-0" / "snapshot-2.pt"
    ).exists()


@pytest.mark.slow
def test_selection_after_a_stop_never_takes_the_harmful_weights(digits, project):
    from kit import commands

    run_dir = commands.train(digits(*HARMFUL, "predict.select=true", "predict.min_gain=0.0"), "0")
    chosen = json.loads((run_dir / "metrics.json").read_text())["prediction"]
    # the earlier stage's final weights were a candidate and predict; the stopped stage's do not (a
    # diverged stage's files are not even candidates: NaN weights)
    tried = {name for candidate in chosen["candidates"] for name in candidate["weights"]}
    assert "stage-0" in tried and chosen["weights"] == ["stage-0"]
    assert chosen["image_sizes"] == {"stage-0": 32}  # the size it predicts at: its stage's (TINY: 32 px)


@pytest.mark.slow
def test_a_stage_that_helps_is_kept(digits, project):
    from kit import commands

    config = digits(
        "stages=[{cycle_len=1}, {cycle_len=2}]", "train.stop_when_worse=true", "predict.select=false"
    )
    run_dir = commands.train(config, "0")
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert trained_epochs(run_dir) == [0, 1, 1]
    assert summary["folds"]["0"]["recipe"]["stop"] is None
    assert [stage["status"] for stage in summary["stages"]["0"]] == ["ran", "ran"]
    commands.predict(config, run_dir.name)
    assert json.loads((run_dir / "submission.json").read_text())["weights"] == ["fold-0/last.pt"]


@pytest.mark.slow
def test_a_run_killed_after_its_stop_resumes_without_training_the_skipped_stages(digits, project):
    import os
    import signal
    import subprocess
    import sys

    from conftest import TINY

    digits()  # the data, in the temporary project
    command = [sys.executable, "-m", "kit", "train", "digits", "--fold", "0"]
    for value in [*TINY, *HARMFUL, "predict.select=false"]:
        command += ["--set", value]
    environment = {**os.environ, "KIT_PROJECT_ROOT": str(project), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    seen = []
    for line in process.stdout:  # killed as soon as the stop is decided: before the fold's OOF and result
        seen.append(line)
        if "stopped in stage" in line:
            process.send_signal(signal.SIGKILL)
            break
    process.wait()
    assert any("stopped in stage" in line for line in seen), "".join(seen)
    (run_dir,) = (project / "runs" / "digits").iterdir()
    assert not (run_dir / "metrics.json").exists()
    resumed = subprocess.run(
        [sys.executable, "-m", "kit", "train", "digits", "--resume"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert trained_epochs(run_dir) == [0, 1]  # the skipped stages stay skipped
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert [stage["status"] for stage in summary["stages"]["0"]] == ["ran", "stopped", "skipped"]
    assert summary["folds"]["0"]["recipe"]["stop"]["stage_index"] == 1


def test_kit_runs_says_where_a_fold_stopped_and_what_predicts():
    from kit.report import runs_table
    from kit.run import Summary

    summary = {
        "stages": {
            "0": [
                {"stage": "head", "status": "ran", "epochs": 2, "of": 2},
                {"stage": "unfrozen", "status": "stopped", "epochs": 1, "of": 7, "why": "worse"},
                {"stage": "final", "status": "skipped", "epochs": 0, "of": 1, "why": "worse"},
            ]
        },
        "prediction": {"weights": ["stage-0"]},
    }
    assert runs_table.stages_run(Summary(summary)) == "fold 0: 'unfrozen' 1/7 epochs, skipped 'final'"
    assert runs_table.predicts(Summary(summary)) == "stage-0"
    assert runs_table.stages_run(Summary({"stages": {"0": summary["stages"]["0"][:1]}})) == ""
    assert runs_table.stages_run(Summary({})) == "" and runs_table.predicts(Summary({})) == ""


def test_the_trick_never_stops_at_a_head_stage_but_at_the_first_unfrozen_cycle_that_does_not_pay():
    # The trick as the loop drives it, on plain values: digits' head stages (the augmented head worse than
    # the precomputed one), then an unfrozen stage of two 1-epoch cycles whose first cycle does not pay.
    from pathlib import Path
    from types import SimpleNamespace

    from kit.config_build import config_from_dict

    stages = [
        {"name": "head-precomputed", "freeze_to": -1, "cycle_len": 1},
        {"name": "head-augmented", "freeze_to": -1, "cycle_len": 1},
        {"name": "unfrozen", "n_cycles": 2, "cycle_len": 1},
    ]
    config = config_from_dict(
        {"competition": {"metric": "accuracy"}, "train": {"stop_patience": 0}, "stages": stages},
        Path("x/competition.toml"),
    )
    trick = stopping.StopWhenWorse(config, fold=0)
    history: list[dict] = []

    def epoch(stage_index: int, number: int, score: float) -> str | None:
        view = SimpleNamespace(
            config=config,
            stage_index=stage_index,
            stage=config.stages[stage_index],
            state=SimpleNamespace(history=history),
            stop_reason=None,
        )
        if number == 1:
            trick.on_stage_start(view)
        record = {"epoch": number, "accuracy": score, "seconds": 1.0, "valid_loss": 1.0}
        trick.on_epoch_end(view, record)
        history.append({**record, "stage_index": stage_index})
        return view.stop_reason

    assert epoch(0, 1, 0.8021) is None
    assert epoch(1, 1, 0.7847) is None  # worse, but head-only: compared with, no stop
    assert epoch(2, 1, 0.7900) is not None  # the first unfrozen cycle does not beat 0.8021: stop
    assert trick.stop["stage_index"] == 2 and trick.stop["best"] == 0.8021
    assert trick.stop["epochs_skipped"] == 1  # the second cycle
    assert trick.stop["patience"] == 0 and trick.stop["misses"] == 1


def test_the_stop_is_on_by_default_with_a_patience_of_one_check_point():
    # on digits the first unfrozen cycle is worse than the head before the later cycles pay (0.48 against
    # 0.80, then 0.98): patience 1 lets the next cycle recover (docs/2026-12-03-stop-patience.md)
    from pathlib import Path

    from kit.config_build import config_from_dict

    train = config_from_dict({}, Path("x/competition.toml")).train
    assert train.stop_when_worse is True and train.stop_patience == 1 and train.min_stage_gain == 0
