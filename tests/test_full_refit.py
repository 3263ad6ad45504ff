"""`kit train COMP --fold full [--seeds N]`: every training row, what a fold run chose reused; then kit
predict and kit ensemble with it. The reuse rules on plain values, then tiny digits runs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import invoke

from kit import commands
from kit.data.labels import load_labels
from kit.predict import calibrate, refit
from kit.run import Calibration, Run, Summary
from kit.train import stage


def test_one_temperature_for_every_seed_is_the_geometric_mean_of_the_folds():
    source = Calibration({"0": 2.0, "1": 0.5, "2": 1.0}, 0.01, 0.4, 0.3)
    full = refit.full_calibration(source, ["full-seed-0", "full-seed-1"])
    assert full.temperatures == {"full-seed-0": pytest.approx(1.0), "full-seed-1": pytest.approx(1.0)}
    assert full.epsilon == 0.01
    lopsided = refit.full_calibration(Calibration({"0": 4.0, "1": 1.0}, None), ["full-seed-0"])
    assert lopsided.temperatures["full-seed-0"] == pytest.approx(2.0)  # not the arithmetic 2.5
    assert refit.full_calibration(Calibration({}, 0.02), ["full-seed-0"]).temperatures == {}


def test_best_weights_become_the_recipes_last_with_no_validation_to_pick_them():
    chosen = {"weights": ["best", "snapshot-2", "last"], "views": [0, 1]}
    assert refit.full_prediction(chosen) == {"weights": ["last", "snapshot-2"], "views": [0, 1]}
    assert refit.full_prediction(None) is None


def test_full_refit_without_a_fold_run_is_refused_in_one_line(digits, project):
    digits()  # the competition in the project
    result = invoke("train", "digits", "--fold", "full")
    assert result.exit_code == 1
    assert "no finished fold run" in result.output and "--fold all" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert not list(project.glob("runs/digits/*"))  # no run folder left behind


def test_full_refit_trains_every_row_per_seed_predicts_averaged_and_blends(digits, project, monkeypatch):
    settings = ("competition.metric=log_loss", "train.folds=10", "predict.tta=0")
    fold_run = commands.train(digits(*settings), "0")
    labels = load_labels(digits())

    seen: list[np.ndarray] = []  # the rows each training loader was built on
    original = stage.BatchDataset

    def recording(images, targets, rows, transform):
        seen.append(np.asarray(rows).copy())
        return original(images, targets, rows, transform)

    monkeypatch.setattr(stage, "BatchDataset", recording)
    full_run = commands.train(digits(*settings), "full", seeds=2)
    assert len(seen) == 2  # one stage, two seeds
    for rows in seen:  # every training row, each once: nothing held out
        assert np.array_equal(np.sort(rows), np.arange(len(labels.ids)))
    monkeypatch.setattr(stage, "BatchDataset", original)

    run = Run(full_run)
    summary = run.read_summary()
    source = Run(fold_run).read_summary()
    assert summary["folds_trained"] == ["full-seed-0", "full-seed-1"]
    assert summary["full"]["chosen_on"] == fold_run.name and summary["full"]["seeds"] == 2
    assert summary["cv"] == source["cv"]  # reported from the fold run it was chosen on
    assert summary.get("prediction", {}).get("views") == source.get("prediction", {}).get("views")
    (temperature,) = Run(fold_run).read_calibration().temperatures.values()
    assert run.read_calibration().temperatures == {
        "full-seed-0": pytest.approx(temperature),
        "full-seed-1": pytest.approx(temperature),
    }
    for seed in (0, 1):
        assert run.full(seed).last.exists() and run.full(seed).read_result().valid_rows == []
    # Two seeds: two different models.
    first, second = (run.full(seed).last.read_bytes() for seed in (0, 1))
    assert first != second

    # kit predict: each seed predicts; the test probabilities are their average, calibrated as recorded.
    assert invoke("predict", "digits", full_run.name).exit_code == 0
    per_seed = {}
    for seed in (0, 1):
        kept = sorted(run.full(seed).folder.glob("test-*.npy"))
        assert kept, "each seed keeps its test views"
        per_seed[f"full-seed-{seed}"] = np.mean([np.load(path).mean(0) for path in kept], axis=0)
    averaged = np.load(run.test_probabilities)
    assert np.allclose(averaged, np.mean(list(per_seed.values()), axis=0), atol=1e-6)
    assert not np.allclose(per_seed["full-seed-0"], per_seed["full-seed-1"])
    record = json.loads(run.submission_record_file.read_text())
    assert any(path.startswith("full-seed-1/") for path in record["weights"])
    expected = calibrate.apply_to_parts(per_seed, run.read_calibration())
    assert math.isfinite(float(expected.sum()))

    # kit ensemble blends it with a fold run.
    result = invoke("ensemble", "digits", fold_run.name, full_run.name)
    assert result.exit_code == 0, result.output
    (blend_dir,) = (project / "runs" / "digits").glob("*-ensemble")
    assert Run(blend_dir).read_summary()["ensemble"]["runs"] == [fold_run.name, full_run.name]

    # A variant of a refit (RUN@WEIGHTS) needs kept OOF, which its seeds have not: one line naming the seed.
    result = invoke("ensemble", "digits", fold_run.name, f"{full_run.name}@last")
    assert result.exit_code == 1 and "/full-seed-0" in result.output, result.output

    # An interrupted refit (seed 1 unfinished) continues with --resume: the missing seed, then the refit step.
    run.summary_file.unlink()
    run.full(1).result_file.unlink()
    result = invoke("train", "digits", "--resume", "--run", full_run.name)
    assert result.exit_code == 0, result.output
    assert run.full(1).result_file.exists() and run.read_summary()["full"]["chosen_on"] == fold_run.name

    # --chosen-on a run that is not a fold run is refused in one line.
    result = invoke("train", "digits", "--fold", "full", "--chosen-on", full_run.name)
    assert result.exit_code == 1 and "not a finished fold run" in result.output, result.output


def test_runs_table_says_a_refit_trained_every_row_and_on_whose_recipe():
    from kit.report.runs_table import trained

    summary = {"folds_trained": ["full-seed-0", "full-seed-1"], "full": {"seeds": 2, "chosen_on": "RUN-A"}}
    assert trained(Summary(summary)) == "every row, 2 seed(s) (recipe of RUN-A)"
    assert trained(Summary({"folds_trained": [0, 1, 2]})) == "folds 0-2"
    assert trained(Summary({"folds_trained": [0], "seeds": 3})) == "fold 0, 3 seeds each"


def test_report_lists_a_refits_seeds_after_folds_by_number():
    from kit.report.report import fold_table

    history = [{"valid_loss": 0.5, "seconds": 2.0}]
    summary = {
        "metric": "log_loss",
        "folds": {"full-seed-1": {"score": None, "history": history}, "full-seed-0": {"score": None}},
    }
    assert list(fold_table(Summary(summary))["fold"]) == ["full-seed-0", "full-seed-1"]
    numbered = {"metric": "log_loss", "folds": {"10": {"score": 1.0}, "2": {"score": 2.0}}}
    assert list(fold_table(Summary(numbered))["fold"]) == ["2", "10"]


def test_refit_settings_differences_name_what_trains_otherwise_and_leave_the_rest(digits):
    recorded = digits(
        "train.epochs=2",
        "train.lr_find=true",
        "predict.tta=2",
        "train.stop_patience=3",
        "train.min_stage_gain=0.1",
    )
    now = digits()
    found = refit.training_differences(recorded, now)
    # predict.*, train.lr_find and the stop's settings (nothing held out in a refit): not training
    assert found == ["train.epochs = 2 (competition.toml now: 1)"]
    assert refit.settings_note("RUN-A", recorded, recorded) == ""
    note = refit.settings_note("RUN-A", recorded, now)
    assert "fold run RUN-A" in note and "train.epochs = 2" in note and "\n" not in note


def test_full_refit_trains_the_recipe_its_fold_run_was_trained_with(digits, project, capsys):
    settings = ("competition.metric=log_loss", "train.folds=10", "predict.tta=0")
    # The fold run was trained with a --set that changes the recipe: two stages, not TINY's one.
    fold_run = commands.train(digits(*settings, "stages=[{cycle_len=1}, {cycle_len=2}]"), "0")
    capsys.readouterr()
    full_run = commands.train(digits(*settings), "full", overrides=("train.lr=1e-3",))
    said = capsys.readouterr().out
    assert f"fold run {fold_run.name}" in said and "stages.1.cycle_len = 2.0" in said, said

    history = Run(full_run).full(0).read_result().history
    assert [record["stage"] for record in history] == [
        record["stage"] for record in Run(fold_run).fold(0).read_result().history
    ]
    assert len(history) == 3  # 1 + 2 epochs: the fold run's two stages, not the TOML's one epoch
    recorded = json.loads(Run(full_run).config_file.read_text())
    assert len(recorded["stages"]) == 2 and recorded["train"]["lr"] == 1e-3  # the refit's own --set on top


@pytest.mark.slow
def test_full_refit_stops_where_its_fold_run_stopped(digits, project, capsys):
    """A fold run whose recipe stopped (train.stop_when_worse, here at a stage whose rate wrecks the weights)
    chose among the files it trained up to the stop: the refit trains the same, not the stages it skipped."""
    from test_stopping import HARMFUL

    config = digits(*HARMFUL, "predict.select=false")
    fold_run = commands.train(config, "0")
    assert Run(fold_run).fold(0).read_result().recipe["stop"]["stage_index"] == 1
    capsys.readouterr()
    full_run = commands.train(config, "full")
    assert f"{fold_run.name} stopped in stage" in capsys.readouterr().out
    history = Run(full_run).full(0).read_result().history
    assert [record["stage_index"] for record in history] == [0, 1]  # not stage 1's other cycles, nor stage 2
    stop = Run(full_run).full(0).read_result().recipe["stop"]
    assert stop["decided_by"] == f"fold run {fold_run.name}" and "fold 0" not in stop["reason"]
    commands.predict(config, full_run.name)
    record = json.loads(Run(full_run).submission_record_file.read_text())
    assert record["weights"] == ["full-seed-0/stage-0.pt"]  # the fold run's choice, trained on every row
