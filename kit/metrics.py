"""Competition metrics: a plain registry of (score function, higher is better), from scikit-learn."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from sklearn.metrics import accuracy_score, f1_score
from sklearn.metrics import log_loss as sklearn_log_loss


class Metric(NamedTuple):
    score: Callable[[np.ndarray, np.ndarray], float]  # (targets as class indices, probabilities N x C)
    higher_is_better: bool


def _log_loss(targets: np.ndarray, probabilities: np.ndarray) -> float:
    # Kaggle clips at 1e-15 and renormalises rows; do the same, so float32 softmax rounding is not an issue.
    clipped = np.clip(probabilities, 1e-15, 1 - 1e-15)
    clipped = clipped / clipped.sum(1, keepdims=True)
    return float(sklearn_log_loss(targets, clipped, labels=list(range(probabilities.shape[1]))))


METRICS: dict[str, Metric] = {
    "accuracy": Metric(lambda t, p: float(accuracy_score(t, p.argmax(1))), True),
    "log_loss": Metric(_log_loss, False),
    "f1_micro": Metric(lambda t, p: float(f1_score(t, p.argmax(1), average="micro")), True),
}


def score(name: str, targets: np.ndarray, probabilities: np.ndarray) -> float:
    if name not in METRICS:
        raise KeyError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")
    return METRICS[name].score(targets, probabilities)


def is_better(name: str, new: float, old: float | None) -> bool:
    if old is None:
        return True
    return new > old if METRICS[name].higher_is_better else new < old
