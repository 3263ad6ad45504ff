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


# Kaggle's own clip for log loss; it leaves any real probability as it is.
NO_CLIP = 1e-15


def clip_and_renormalise(probabilities: np.ndarray, epsilon: float = NO_CLIP) -> np.ndarray:
    """Each row clipped to [epsilon, 1 - epsilon] and renormalised to sum to one, as Kaggle does."""
    clipped = np.clip(probabilities, epsilon, 1 - epsilon)
    return clipped / clipped.sum(1, keepdims=True)


def _log_loss(targets: np.ndarray, probabilities: np.ndarray) -> float:
    # Clipped as Kaggle does, so float32 softmax rounding is not an issue.
    clipped = clip_and_renormalise(probabilities)
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
