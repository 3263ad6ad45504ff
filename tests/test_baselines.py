"""Trivial baselines: each is what the kit's own metric gives the constant answer it names."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kit import baselines, metrics


def test_every_metric_has_a_baseline():
    assert set(baselines.BASELINES) == set(metrics.METRICS)


def test_log_loss_baseline_is_the_uniform_guess_on_balanced_classes():
    targets = np.repeat(np.arange(120), 3)  # 120 breeds, 3 photos each
    assert baselines.baseline("log_loss", targets, 120).score == pytest.approx(math.log(120))  # 4.7875
    assert baselines.baseline("log_loss", np.array([0, 1, 0, 1]), 2).score == pytest.approx(0.6931, abs=1e-4)


def test_log_loss_baseline_is_the_score_of_the_class_shares():
    targets = np.array([0, 0, 0, 1, 2, 2])
    shares = np.bincount(targets, minlength=4) / len(targets)  # class 3 never seen
    constant = np.tile(shares, (len(targets), 1))
    expected = metrics.score("log_loss", targets, constant)
    assert baselines.baseline("log_loss", targets, 4).score == pytest.approx(expected, abs=1e-9)
    assert baselines.baseline("log_loss", targets, 4).score < math.log(4)  # better than uniform


@pytest.mark.parametrize("metric", ["accuracy", "f1_micro"])
def test_majority_class_baseline(metric):
    targets = np.array([2, 2, 2, 0, 1])
    constant = np.tile(np.eye(3)[2], (len(targets), 1))
    assert baselines.baseline(metric, targets, 3).score == pytest.approx(0.6)
    expected = metrics.score(metric, targets, constant)
    assert baselines.baseline(metric, targets, 3).score == pytest.approx(expected)


def test_rmse_baseline_is_the_mean_answer():
    values = np.array([1.0, 2.0, 3.0, 10.0])
    constant = np.full((len(values), 1), values.mean())
    expected = metrics.score("rmse", values, constant)
    assert baselines.baseline("rmse", values, 1).score == pytest.approx(expected)
    assert baselines.baseline("rmse", values, 1).score == pytest.approx(values.std())


def test_qwk_baseline_is_zero():
    assert baselines.baseline("qwk", np.array([0, 1, 2, 2]), 3).score == 0.0


def test_tag_set_baseline_is_the_best_constant_tag_set():
    tags = np.array([[1, 0, 0], [1, 1, 0], [1, 0, 0], [1, 0, 1]], dtype=np.float32)
    found = baselines.baseline("f2_samples", tags, 3)
    every_set = [np.array([(bits >> t) & 1 for t in range(3)], dtype=np.float32) for bits in range(8)]
    scores = [metrics.score("f2_samples", tags, np.tile(said, (len(tags), 1))) for said in every_set]
    assert found.score == pytest.approx(max(scores))  # the best of all 8 constant tag sets
    # Every tag is best when tags are spread: F2 forgives saying too much
    spread = np.eye(4, dtype=np.float32)
    every = metrics.score("f2_samples", spread, np.ones_like(spread))
    assert baselines.baseline("f2_samples", spread, 4).score == pytest.approx(every)


def test_described_for_a_cv_line():
    line = baselines.describe(baselines.baseline("log_loss", np.array([0, 1]), 2))
    assert line == "baseline 0.6931 (the class shares for every image)"
