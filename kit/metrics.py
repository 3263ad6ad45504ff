"""Competition metrics: a plain registry of (score function, higher is better), from scikit-learn."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from scipy.optimize import minimize_scalar
from sklearn.metrics import accuracy_score, cohen_kappa_score, f1_score, fbeta_score, root_mean_squared_error
from sklearn.metrics import log_loss as sklearn_log_loss


class Metric(NamedTuple):
    # (targets, decided predictions) as kit.tasks describes them: class indices and probabilities N x C
    # (single label), 0/1 tags N x T both (multi-label), values N and N x 1 (regression), grade indices
    # N and N x 1 (ordinal)
    score: Callable[[np.ndarray, np.ndarray], float]
    higher_is_better: bool


# Kaggle's own clip for log loss; it leaves any real probability as it is.
NO_CLIP = 1e-15


def clip_and_renormalise(probabilities: np.ndarray, epsilon: float = NO_CLIP) -> np.ndarray:
    """Each row clipped to [epsilon, 1 - epsilon] and renormalised to sum to one, as Kaggle does."""
    clipped = np.clip(probabilities, epsilon, 1 - epsilon)
    return clipped / clipped.sum(1, keepdims=True)


def log_loss(probabilities: np.ndarray, targets: np.ndarray, epsilon: float = NO_CLIP) -> float:
    """Kaggle's multi-class log loss: clip to [eps, 1 - eps], renormalise each row, mean -log p(true)."""
    clipped = clip_and_renormalise(probabilities, epsilon)
    return float(-np.mean(np.log(clipped[np.arange(len(targets)), targets])))


# Temperatures searched (T = 1 is added explicitly): a factor of 20 either way covers real models.
TEMPERATURE_RANGE = (0.05, 20.0)


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T), row by row; T = 1 returns the probabilities (renormalised). Temperature scaling:
    T > 1 softens, T < 1 sharpens, the argmax never changes (kit.predict.calibrate fits it on OOF)."""
    logits = np.log(np.clip(probabilities, NO_CLIP, 1.0)) / temperature
    logits -= logits.max(1, keepdims=True)  # exp of the largest is 1: no overflow
    scaled = np.exp(logits)
    return scaled / scaled.sum(1, keepdims=True)


def fit_temperature(probabilities: np.ndarray, targets: np.ndarray) -> float:
    """The temperature that minimises log loss; 1.0 unless another one is strictly better."""
    def loss_at(log_temperature: float) -> float:
        return log_loss(apply_temperature(probabilities, math.exp(log_temperature)), targets)

    # Log loss is smooth and, in practice, unimodal in log T; a bounded scalar search is enough.
    found = minimize_scalar(loss_at, bounds=tuple(math.log(t) for t in TEMPERATURE_RANGE), method="bounded")
    best = math.exp(float(found.x))
    return best if loss_at(float(found.x)) < log_loss(probabilities, targets) else 1.0


def _log_loss(targets: np.ndarray, probabilities: np.ndarray) -> float:
    # Clipped as Kaggle does, so float32 softmax rounding is not an issue.
    clipped = clip_and_renormalise(probabilities)
    return float(sklearn_log_loss(targets, clipped, labels=list(range(probabilities.shape[1]))))


def _f2_samples(targets: np.ndarray, decided: np.ndarray) -> float:
    """Planet's metric: F-beta (beta 2, recall weighs more) per image, averaged over images. An image with
    no true and no predicted tag scores 1 (nothing to find, nothing wrongly said)."""
    return float(fbeta_score(targets, decided, beta=2, average="samples", zero_division=1.0))


def _quadratic_kappa(targets: np.ndarray, decided: np.ndarray) -> float:
    return float(cohen_kappa_score(targets, np.rint(decided[:, 0]).astype(np.int64), weights="quadratic"))


METRICS: dict[str, Metric] = {
    "accuracy": Metric(lambda t, p: float(accuracy_score(t, p.argmax(1))), True),
    "log_loss": Metric(_log_loss, False),
    "f1_micro": Metric(lambda t, p: float(f1_score(t, p.argmax(1), average="micro")), True),
    "f2_samples": Metric(_f2_samples, True),
    "rmse": Metric(lambda t, p: float(root_mean_squared_error(t, p[:, 0])), False),
    "qwk": Metric(_quadratic_kappa, True),
}


def score(name: str, targets: np.ndarray, probabilities: np.ndarray) -> float:
    if name not in METRICS:
        raise KeyError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")
    return METRICS[name].score(targets, probabilities)


def is_better(name: str, new: float, old: float | None) -> bool:
    if old is None:
        return True
    return new > old if METRICS[name].higher_is_better else new < old
