"""Competition kinds (kit.tasks): losses, metrics, decisions fitted on OOF, submission labels and folds,
each against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from kit import metrics, tasks
from kit.config_build import config_from_dict
from kit.data.folds import assign_binned_folds, assign_tag_folds
from kit.errors import ConfigError
from kit.predict.ensemble import fit_weights_squared


def test_metrics_match_hand_computed_values():
    # F2 per image: row 1 has P = 2/3, R = 1 -> 5PR / (4P + R) = 10/11; row 2 is exact -> 1.
    tags = np.array([[1, 0, 1], [0, 1, 0]])
    assert metrics.score("f2_samples", tags, np.array([[1, 1, 1], [0, 1, 0]])) == pytest.approx(21 / 22)
    assert metrics.score("rmse", np.array([1.0, 2, 3]), np.array([[1.0], [2], [5]])) == pytest.approx(
        math.sqrt(4 / 3)
    )
    # Quadratic kappa with 3 grades: weighted observed 0.25, weighted expected 1.25 -> 1 - 0.2.
    assert metrics.score("qwk", np.array([0, 1, 2]), np.array([[0.0], [2], [2]])) == pytest.approx(0.8)
    assert not metrics.METRICS["rmse"].higher_is_better and metrics.METRICS["qwk"].higher_is_better


def test_losses_and_activations():
    single, multi = tasks.SingleLabel(), tasks.MultiLabel()
    logits = torch.tensor([[0.0, math.log(3)]])
    assert single.loss(logits, torch.tensor([1])).item() == pytest.approx(-math.log(3 / 4))
    assert single.activate(logits)[0].tolist() == pytest.approx([0.25, 0.75])
    assert multi.loss(torch.zeros(1, 2), torch.tensor([[1.0, 0.0]])).item() == pytest.approx(math.log(2))
    assert multi.activate(torch.zeros(1, 2)).tolist() == [[0.5, 0.5]]
    regression = tasks.Regression(mean=2.0, std=2.0)
    encoded = regression.encode(np.array([2.0, 4.0]))
    assert encoded.tolist() == [[0.0], [1.0]]  # standardised, one column like the head's output
    assert regression.loss(torch.zeros(2, 1), torch.from_numpy(encoded)).item() == pytest.approx(0.5)
    assert regression.activate(torch.tensor([[1.0]])).item() == pytest.approx(4.0)  # unscaled back
    assert regression.head_size(["value"]) == 1 and multi.head_size(["a", "b", "c"]) == 3


def test_labels_are_read_per_task():
    task, targets, classes = tasks.read_labels("multi_label", ["b a", "c", "a c"])
    assert classes == ["a", "b", "c"] and targets.tolist() == [[1, 1, 0], [0, 0, 1], [1, 0, 1]]
    task, targets, classes = tasks.read_labels("regression", ["1", "3", "2.5"])
    assert targets.tolist() == [1.0, 3.0, 2.5] and task.mean == pytest.approx(6.5 / 3)
    task, targets, classes = tasks.read_labels("ordinal", ["4", "0", "2", "2"])
    assert classes == ["0", "2", "4"] and targets.tolist() == [2, 0, 1, 1] and task.grade_count == 3
    with pytest.raises(tasks.LabelError, match="row 3: label 'x' is not a number"):
        tasks.read_labels("regression", ["1", "x"])
    with pytest.raises(tasks.LabelError, match="row 2: label '1.5' is not an integer grade"):
        tasks.read_labels("ordinal", ["1.5", "2"])
    # A run records its task; the same object comes back from the record.
    assert tasks.from_record(task.describe()) == task  # no default kind: kit.run refuses older records


def test_multi_label_thresholds_fitted_on_oof_raise_f2():
    # Tag 0's positives score only 0.3 (negatives 0.1): 0.5 misses them all; a threshold in (0.1, 0.3]
    # finds them. Tag 1 is already separated at 0.5.
    targets = np.array([[1, 0], [1, 1], [0, 1], [0, 0]], dtype=np.float32)
    predictions = np.array([[0.3, 0.2], [0.3, 0.9], [0.1, 0.8], [0.1, 0.1]])
    task = tasks.MultiLabel()
    before = task.score(metrics.METRICS["f2_samples"], targets, predictions)
    decisions = task.fit_decisions(predictions, targets, metrics.METRICS["f2_samples"])
    assert 0.1 < decisions["thresholds"][0] <= 0.3
    assert task.score(metrics.METRICS["f2_samples"], targets, predictions, decisions) == pytest.approx(1.0)
    assert before < 0.8
    assert task.submitted_labels(predictions, decisions, ["cloudy", "road"]) == [
        "cloudy",
        "cloudy road",
        "road",
        "",
    ]


def test_ordinal_cut_points_fitted_on_oof_raise_kappa():
    # Grade 1's predictions sit at 1.7 and grade 2's at 2.4: rounding calls grade 1 a 2; a cut-point
    # between 1.7 and 2.4 separates them.
    task = tasks.Ordinal(mean=1.0, std=1.0, grade_count=3)
    targets = np.array([0, 1, 1, 2, 2])
    predictions = np.array([[0.1], [1.7], [1.6], [2.4], [2.5]])
    assert task.decide(predictions)[:, 0].tolist() == [0, 2, 2, 2, 2]
    decisions = task.fit_decisions(predictions, targets, metrics.METRICS["qwk"])
    assert 1.7 < decisions["cuts"][1] <= 2.4 and decisions["cuts"] == sorted(decisions["cuts"])
    assert task.score(metrics.METRICS["qwk"], targets, predictions, decisions) == pytest.approx(1.0)
    assert task.score(metrics.METRICS["qwk"], targets, predictions) < 1.0
    assert task.submitted_labels(predictions, decisions, ["0", "1", "2"]) == ["0", "1", "1", "2", "2"]
    # Without fitted cuts a grade is the nearest one, clipped to the grades that exist.
    assert task.decide(np.array([[-3.0], [7.2]]))[:, 0].tolist() == [0, 2]


def test_submitted_labels_and_their_checks():
    regression = tasks.Regression(mean=0.0, std=1.0)
    assert regression.submitted_labels(np.array([[2.5], [71.0]]), {}, ["value"]) == ["2.5", "71"]
    assert regression.label_problem(pd.Series(["1.5", "nan"]), ["value"]) == "row 3 is not a finite number"
    assert tasks.MultiLabel().label_problem(pd.Series(["a b", "c"]), ["a", "b"]) == "unknown tags, e.g. 'c'"
    assert tasks.MultiLabel().label_problem(pd.Series(["a b", ""]), ["a", "b"]) is None
    assert tasks.Ordinal().label_problem(pd.Series(["0", "5"]), ["0", "1"]) == "unknown labels, e.g. '5'"


def test_tag_folds_spread_every_tag_and_binned_folds_the_range():
    rng = np.random.default_rng(0)
    tags = (rng.random((300, 6)) < [0.5, 0.3, 0.1, 0.05, 0.6, 0.2]).astype(np.float32)
    folds = assign_tag_folds(tags, 5, seed=1)
    assert np.bincount(folds).tolist() == [60] * 5
    per_fold = np.stack([tags[folds == fold].sum(0) for fold in range(5)])
    assert (per_fold.max(0) - per_fold.min(0) <= 2).all()  # each tag's count differs by at most 2
    assert (assign_tag_folds(tags, 5, seed=1) == folds).all()  # seeded: the same folds again
    values = rng.exponential(10, 200)
    folds = assign_binned_folds(values, 4, seed=0)
    means = [values[folds == fold].mean() for fold in range(4)]
    assert np.bincount(folds).tolist() == [50] * 4 and max(means) - min(means) < 0.1 * values.mean()
    assert np.bincount(assign_binned_folds(np.ones(12), 3, seed=0)).tolist() == [4, 4, 4]  # all tied


def test_config_task_sets_metric_and_format_defaults(tmp_path):
    path = tmp_path / "x" / "competition.toml"
    config = config_from_dict({"competition": {"task": "multi_label"}}, path)
    assert (config.competition.metric, config.submission.format) == ("f2_samples", "label")
    assert config_from_dict({"competition": {"task": "ordinal"}}, path).competition.metric == "qwk"
    assert config_from_dict({}, path).competition.metric == "log_loss"  # single label, as before
    with pytest.raises(
        ConfigError, match="metric = 'log_loss' does not fit task = 'regression'; choose 'rmse'"
    ):
        config_from_dict({"competition": {"task": "regression", "metric": "log_loss"}}, path)
    with pytest.raises(ConfigError, match="set submission.format = 'label'"):
        config_from_dict(
            {"competition": {"task": "ordinal"}, "submission": {"format": "probabilities"}}, path
        )
    with pytest.raises(ConfigError, match="'competition.task' = 'multi' is not one of single_label"):
        config_from_dict({"competition": {"task": "multi"}}, path)


def test_blend_weights_by_squared_error_recover_a_known_mix():
    rng = np.random.default_rng(0)
    first, second = rng.random((200, 3)), rng.random((200, 3))
    truth = 0.3 * first + 0.7 * second  # the best blend is exactly this one
    assert fit_weights_squared([first, second], truth) == pytest.approx([0.3, 0.7], abs=1e-4)
    noise = rng.random((200, 3))
    assert fit_weights_squared([noise, truth], truth) == pytest.approx([0.0, 1.0], abs=1e-6)


def test_task_kinds_are_siblings_not_one_another():
    """A regression is not a single-label task (an `isinstance(task, SingleLabel)` check, or a
    `task: SingleLabel` argument, must not accept one), nor ordinal grades a regression."""
    kinds = [tasks.SingleLabel(), tasks.MultiLabel(), tasks.Regression(), tasks.Ordinal()]
    for kind in kinds:
        assert isinstance(kind, tasks.Task)
        others = [type(other) for other in kinds if type(other) is not type(kind)]
        assert not isinstance(kind, tuple(others)), f"{kind.name} passes for {[o.name for o in others]}"
    assert set(tasks.TASKS) == {kind.name for kind in kinds}
    # What a kind inherits from the shared base is what every kind means by it; the rest is its own.
    assert tasks.Ordinal().describe() == {"name": "ordinal", "mean": 0.0, "std": 1.0, "grade_count": 2}
    assert tasks.MultiLabel().head_size(["a", "b"]) == 2 and tasks.Ordinal().head_size(["0", "1", "2"]) == 1
