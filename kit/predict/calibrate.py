"""Calibration for log-loss competitions: temperature scaling and a clip epsilon, both fitted on OOF.

Log loss punishes confidence without bound, so a model that is right but over-confident (or timid)
loses score it could keep. One temperature T rescales the log-probabilities, p_i ∝ p_i^(1/T)
(T > 1 softens, T < 1 sharpens; the argmax never changes), and probabilities are then clipped to
[epsilon, 1 - epsilon] and renormalised, as Kaggle does. Both are chosen on out-of-fold predictions,
never on the leaderboard, and T = 1 with the smallest epsilon is always a candidate: calibration never
raises the OOF log loss it was fitted on.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import click
import numpy as np
from scipy.optimize import minimize_scalar

from kit.data.labels import LabelTable
from kit.files import read_json, write_json
from kit.metrics import NO_CLIP, clip_and_renormalise

CALIBRATION_FILE = "calibration.json"  # in the run folder: what was fitted, and on which oof.npy

# Clip epsilons tried on OOF: from "no clip" to "never say less than 5%".
EPSILONS = (NO_CLIP, 1e-6, 1e-5, 1e-4, 1e-3, 3e-3, 1e-2, 2e-2, 5e-2)
# Temperatures searched (T = 1 is added explicitly): a factor of 20 either way covers real models.
TEMPERATURE_RANGE = (0.05, 20.0)


def log_loss(probabilities: np.ndarray, targets: np.ndarray, epsilon: float = NO_CLIP) -> float:
    """Kaggle's multi-class log loss: clip to [eps, 1 - eps], renormalise each row, mean -log p(true)."""
    clipped = clip_and_renormalise(probabilities, epsilon)
    return float(-np.mean(np.log(clipped[np.arange(len(targets)), targets])))


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T), row by row; T = 1 returns the probabilities (renormalised)."""
    logits = np.log(np.clip(probabilities, NO_CLIP, 1.0)) / temperature
    logits -= logits.max(1, keepdims=True)  # exp of the largest is 1: no overflow
    scaled = np.exp(logits)
    return scaled / scaled.sum(1, keepdims=True)


def apply_calibration(probabilities: np.ndarray, temperature: float, epsilon: float) -> np.ndarray:
    """What a fitted calibration does to test probabilities: temperature, then clip and renormalise."""
    return clip_and_renormalise(apply_temperature(probabilities, temperature), epsilon)


def fit_temperature(probabilities: np.ndarray, targets: np.ndarray) -> float:
    """The temperature that minimises log loss; 1.0 unless another one is strictly better."""

    def loss_at(log_temperature: float) -> float:
        return log_loss(apply_temperature(probabilities, math.exp(log_temperature)), targets)

    # Log loss is smooth and, in practice, unimodal in log T; a bounded scalar search is enough.
    found = minimize_scalar(loss_at, bounds=tuple(math.log(t) for t in TEMPERATURE_RANGE), method="bounded")
    best = math.exp(float(found.x))
    return best if loss_at(float(found.x)) < log_loss(probabilities, targets) else 1.0


def choose_epsilon(
    probabilities: np.ndarray, targets: np.ndarray, candidates: tuple[float, ...] = EPSILONS
) -> float:
    """The clip epsilon with the lowest log loss (the smallest one on ties)."""
    losses = [log_loss(probabilities, targets, epsilon) for epsilon in sorted(candidates)]
    return sorted(candidates)[int(np.argmin(losses))]


def calibrate(oof_probabilities: np.ndarray, targets: np.ndarray) -> tuple[float, float, float, float]:
    """(temperature, epsilon, OOF log loss before, after), fitted on rows that have predictions.

    Rows of NaN (folds not trained) are ignored. `after <= before` always: the identity is a candidate.
    """
    predicted = ~np.isnan(oof_probabilities).any(1)
    probabilities, targets = oof_probabilities[predicted], targets[predicted]
    if not len(targets):
        raise ValueError("calibrate needs at least one row with predictions")
    before = log_loss(probabilities, targets)
    temperature = fit_temperature(probabilities, targets)
    scaled = apply_temperature(probabilities, temperature)
    epsilon = choose_epsilon(scaled, targets)
    after = log_loss(scaled, targets, epsilon)
    if after > before:  # only rounding can get here; keep the probabilities as they were
        return 1.0, NO_CLIP, before, before
    return temperature, epsilon, before, after


def oof_targets(labels: LabelTable, classes: list[str]) -> np.ndarray:
    """Class index of every training row, in oof.npy's row order."""
    return np.array([classes.index(labels.classes[target]) for target in labels.targets])


def run_calibration(run_dir: Path, labels: LabelTable | None, classes: list[str]) -> dict:
    """The run's calibration: fitted once on its oof.npy and recorded in calibration.json, then read back.

    The record names the oof.npy it was fitted on (SHA-256), so a run whose OOF changed (a resumed run
    that trained more folds) is fitted again. A run without oof.npy (a run packaged for a Kaggle notebook)
    uses its recorded calibration and is never refitted; `labels` may then be None.
    """
    record, oof = run_dir / CALIBRATION_FILE, run_dir / "oof.npy"
    if not oof.exists():
        if record.exists():
            return read_json(record)
        raise click.ClickException(
            f"{run_dir}: no oof.npy to calibrate on and no {CALIBRATION_FILE}: "
            "predict with the run's own folder"
        )
    fingerprint = hashlib.sha256(oof.read_bytes()).hexdigest()
    if record.exists() and read_json(record).get("oof_sha256") == fingerprint:
        return read_json(record)
    if labels is None:
        raise ValueError("run_calibration needs the labels to fit on oof.npy")
    temperature, epsilon, before, after = calibrate(np.load(oof), oof_targets(labels, classes))
    fitted = {
        "temperature": temperature,
        "epsilon": epsilon,
        "oof_before": before,
        "oof_after": after,
        "oof_sha256": fingerprint,
    }
    write_json(record, fitted)
    return fitted
