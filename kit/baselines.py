"""Trivial baselines: what the best constant answer scores on a competition's training labels, per metric.

A CV figure means little alone ("log loss 4.53" on 120 breeds is good only beside the 4.79 of guessing
every breed equally), so every CV the kit prints has this beside it. Each baseline is one constant
answer, fitted to the labels and scored on them (the class shares for log loss, the most common class
for accuracy, the mean for RMSE, ...): in-sample, so a little better than the same answer would do on
unseen rows. Pure numpy on the targets as kit.tasks describes them: no scikit-learn, so `kit runs` and
`kit ledger` can show it without its start-up.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np


class Baseline(NamedTuple):
    score: float
    answer: str  # the constant answer, in words: "every image gets the class shares"


def _class_counts(targets: np.ndarray, classes: int) -> np.ndarray:
    return np.bincount(np.asarray(targets, dtype=np.int64), minlength=classes)


def log_loss_baseline(targets: np.ndarray, classes: int) -> Baseline:
    """The class shares as every row's probabilities: their entropy (natural log). Balanced classes give
    log(classes), the uniform guess (0.6931 for two, 4.7875 for 120)."""
    shares = _class_counts(targets, classes) / len(targets)
    present = shares[shares > 0]
    return Baseline(float(-(present * np.log(present)).sum()), "the class shares for every image")


def majority_baseline(targets: np.ndarray, classes: int) -> Baseline:
    """The most common class for every row: its share (accuracy, and micro F1 for one label per image)."""
    counts = _class_counts(targets, classes)
    return Baseline(float(counts.max() / len(targets)), "the most common class for every image")


def mean_baseline(targets: np.ndarray, classes: int) -> Baseline:
    """The training mean for every row: its RMSE is the targets' standard deviation."""
    values = np.asarray(targets, dtype=np.float64).reshape(len(targets), -1)[:, 0]
    return Baseline(float(np.sqrt(np.mean((values - values.mean()) ** 2))), "the mean for every image")


def constant_grade_baseline(targets: np.ndarray, classes: int) -> Baseline:
    """Any constant grade: quadratic weighted kappa is 0 when the answer never varies."""
    return Baseline(0.0, "one grade for every image")


def f2_per_image(targets: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """F2 of each row's 0/1 tags (recall weighs 4x precision); a row with no tag true or said scores 1."""
    true_positives = (targets * predicted).sum(1)
    false_negatives = (targets * (1 - predicted)).sum(1)
    false_positives = ((1 - targets) * predicted).sum(1)
    denominator = 5 * true_positives + 4 * false_negatives + false_positives
    return np.where(denominator == 0, 1.0, 5 * true_positives / np.maximum(denominator, 1))


def tag_set_baseline(targets: np.ndarray, classes: int) -> Baseline:
    """The best constant tag set: the tags in at least a share s of the images, s tried from every tag
    (s = 0) up; a low share wins for F2, which forgives saying too much more than missing a tag."""
    tags = np.asarray(targets, dtype=np.float64)
    shares = tags.mean(0)
    best = Baseline(-1.0, "")
    for threshold in sorted({0.0, *shares.tolist()}):
        said = (shares >= threshold).astype(np.float64)
        score = float(f2_per_image(tags, np.broadcast_to(said, tags.shape)).mean())
        if score > best.score:
            best = Baseline(score, f"the tags in at least {threshold:.0%} of the images ({int(said.sum())})")
    return best


# metric -> the best constant answer's score, from (targets, number of classes or tags)
BASELINES: dict[str, Callable[[np.ndarray, int], Baseline]] = {
    "log_loss": log_loss_baseline,
    "accuracy": majority_baseline,
    "f1_micro": majority_baseline,
    "f2_samples": tag_set_baseline,
    "rmse": mean_baseline,
    "qwk": constant_grade_baseline,
}


def baseline(metric: str, targets: np.ndarray, classes: int) -> Baseline:
    if metric not in BASELINES:
        raise KeyError(f"no baseline for metric {metric!r}; known: {', '.join(BASELINES)}")
    return BASELINES[metric](targets, classes)


def describe(reference: Baseline) -> str:
    """'baseline 0.6931 (the class shares for every image)', to stand beside a CV figure."""
    return f"baseline {reference.score:.4f} ({reference.answer})"
