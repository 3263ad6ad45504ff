"""kit.predict.fold_average: the gain of averaging a --fold all run's fold models on the test images, which
its CV (one fold model per row) cannot see, estimated without labels; and kit predict saying it."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from kit.predict import fold_average


def test_identical_models_gain_nothing():
    rng = np.random.default_rng(0)
    one = rng.dirichlet(np.ones(4), size=30)
    assert fold_average.expected_gain(np.stack([one, one, one]), 0.005) == pytest.approx(0.0, abs=1e-12)


def test_disagreeing_models_gain_and_more_when_they_disagree_more():
    rng = np.random.default_rng(1)
    shared = rng.normal(size=(50, 5))
    little = [np.exp(shared + 0.2 * rng.normal(size=shared.shape)) for _ in range(5)]
    much = [np.exp(shared + 2.0 * rng.normal(size=shared.shape)) for _ in range(5)]
    little_gain = fold_average.expected_gain(np.stack([p / p.sum(1, keepdims=True) for p in little]))
    much_gain = fold_average.expected_gain(np.stack([p / p.sum(1, keepdims=True) for p in much]))
    assert 0 < little_gain < much_gain


def test_the_estimate_is_the_hand_computation():
    """Two models, one image: the gain for each possible class, weighted by their normalised geometric
    mean (the consensus), as written out by hand."""
    first, second = np.array([[0.8, 0.2]]), np.array([[0.4, 0.6]])
    average = [0.6, 0.4]
    gain = [
        (-math.log(0.8) - math.log(0.4)) / 2 + math.log(average[0]),
        (-math.log(0.2) - math.log(0.6)) / 2 + math.log(average[1]),
    ]
    geometric = [math.sqrt(0.8 * 0.4), math.sqrt(0.2 * 0.6)]
    consensus = [value / sum(geometric) for value in geometric]
    expected = consensus[0] * gain[0] + consensus[1] * gain[1]
    assert fold_average.expected_gain(np.stack([first, second])) == pytest.approx(expected, rel=1e-12)


def test_the_clip_applies_to_each_model_and_to_the_average():
    """A model sure of the wrong class gains less from the average once the upload's clip bounds its loss."""
    parts = np.stack([np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])])
    assert fold_average.expected_gain(parts, 0.01) < fold_average.expected_gain(parts, 1e-6)
    expected = (-math.log(0.99) - math.log(0.01)) / 2 + math.log(0.5)  # either class: half the images' mean
    assert fold_average.expected_gain(parts, 0.01) == pytest.approx(expected, rel=1e-9)


def test_each_fold_is_scaled_by_its_own_temperature_as_the_submission_is():
    """Temperatures that make the folds agree remove the gain: they are applied before the estimate."""
    sure = np.array([[0.9, 0.1], [0.2, 0.8]])
    softened = sure**0.5 / (sure**0.5).sum(1, keepdims=True)  # sure at temperature 2
    parts = {0: sure, 1: softened}
    raw = fold_average.estimate("log_loss", True, parts, {}, 0.005)["gain"]
    matched = fold_average.estimate("log_loss", True, parts, {"0": 2.0, "1": 1.0}, 0.005)["gain"]
    assert raw > 1e-3 and matched == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize(
    ("metric", "single_label", "folds"),
    [("accuracy", True, 2), ("log_loss", False, 2), ("log_loss", True, 1)],
)
def test_not_estimated_for_other_metrics_tags_or_one_model(metric, single_label, folds):
    parts = {fold: np.array([[0.7, 0.3]]) for fold in range(folds)}
    record = fold_average.estimate(metric, single_label, parts, {}, None)
    assert record == {"fold_models": folds, "metric": metric, "gain": None}
    assert "not estimated" in fold_average.gain_line(record)


def test_the_line_gives_the_gain():
    line = fold_average.gain_line({"fold_models": 5, "metric": "log_loss", "gain": 0.2775})
    assert line == (
        "the submission averages 5 fold models; CV scores one per row: expect the leaderboard about 0.2775 "
        "better (log loss; estimated from how the fold models disagree on the test images)"
    )


@pytest.mark.slow
def test_kit_predict_of_a_fold_run_says_and_records_the_averages_gain(digits, project):
    """Two folds of digits scored by log loss: kit predict prints the line and submission.json records it;
    the report shows it."""
    import pandas as pd
    from conftest import TINY, invoke

    sample = project / "data" / "raw" / "digits" / "sample_submission.csv"
    ids = pd.read_csv(sample)["id"]
    pd.DataFrame({"id": ids, **{str(digit): 0.1 for digit in range(10)}}).to_csv(sample, index=False)
    settings = [*TINY, "train.folds=2", "competition.metric=log_loss", "submission.format=probabilities"]
    overrides = [item for value in settings for item in ("--set", value)]
    assert invoke("train", "digits", "--fold", "all", *overrides).exit_code == 0
    (run_dir,) = (project / "runs" / "digits").iterdir()
    result = invoke("predict", "digits")
    assert result.exit_code == 0, result.output
    record = json.loads((run_dir / "submission.json").read_text())["fold_average"]
    assert record["fold_models"] == 2 and record["metric"] == "log_loss" and record["gain"] > 0
    assert fold_average.gain_line(record) in result.output
    assert invoke("report", "digits").exit_code == 0
    assert "the submission averages 2 fold models" in (run_dir / "report.html").read_text()


def test_kit_train_of_several_folds_says_the_file_averages_them():
    from kit.commands import cv_line
    from kit.run import Summary

    record = {"metric": "log_loss", "cv": 0.1193, "cv_uncalibrated": 0.1871, "folds_trained": [0, 1, 2, 3, 4]}
    assert cv_line(Summary(record)).splitlines()[-1] == (
        "the submission averages 5 fold models; CV scores one per row: `kit predict` estimates how much "
        "better the leaderboard should be"
    )
    one = cv_line(Summary({**record, "folds_trained": [0]}))
    assert "averages" not in one


def test_the_squared_error_gain_is_exact_whatever_the_truth():
    """Averaging values gains, in squared error, exactly their spread across the models: checked against
    three made-up truths, which the estimate never sees."""
    rng = np.random.default_rng(2)
    parts = rng.normal(size=(4, 40, 1))
    spread = fold_average.squared_error_gain(parts)
    for truth in (np.zeros(40), rng.normal(size=40), 10 + rng.normal(size=40)):
        alone = np.mean([np.mean((truth - part[:, 0]) ** 2) for part in parts])
        averaged = np.mean((truth - parts.mean(0)[:, 0]) ** 2)
        assert alone - averaged == pytest.approx(spread, rel=1e-9)
    assert fold_average.squared_error_gain(np.stack([parts[0]] * 3)) == pytest.approx(0.0, abs=1e-12)


def test_the_rmse_gain_is_taken_from_the_cv():
    parts = {0: np.array([[1.0], [2.0]]), 1: np.array([[3.0], [2.0]])}  # spread: (1 + 0) / 2 = 0.5
    record = fold_average.estimate("rmse", False, parts, {}, None, cv=1.5)
    assert record["squared_error_gain"] == pytest.approx(0.5)
    assert record["gain"] == pytest.approx(1.5 - math.sqrt(1.5**2 - 0.5))
    line = fold_average.gain_line(record)
    assert "RMSE" in line and f"{record['gain']:.4f}" in line
    assert fold_average.estimate("rmse", False, parts, {}, None)["gain"] is None  # no CV: not estimated
