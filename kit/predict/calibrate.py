"""Calibration for log-loss competitions: temperature scaling and a clip epsilon, both fitted on OOF.

Log loss punishes confidence without bound, so a model that is right but over-confident (or timid)
loses score it could keep. One temperature T rescales the log-probabilities, p_i ∝ p_i^(1/T)
(T > 1 softens, T < 1 sharpens; the argmax never changes), and probabilities are then clipped to
[epsilon, 1 - epsilon] and renormalised, as Kaggle does. Both are chosen on out-of-fold predictions,
never on the leaderboard, and T = 1 with the smallest epsilon is always a candidate: calibration never
raises the OOF log loss it was fitted on.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from kit.metrics import NO_CLIP, apply_temperature, clip_and_renormalise, fit_temperature, log_loss
from kit.run import Calibration, Run

# Counted by a test: the step after training fits a calibration once per run (each fold's temperature).
FITS = {"fit_by_fold": 0}

# Clip epsilons tried on OOF: from "no clip" to "never say less than 5%".
EPSILONS = (NO_CLIP, 1e-6, 1e-5, 1e-4, 1e-3, 3e-3, 1e-2, 2e-2, 5e-2)


def apply_calibration(probabilities: np.ndarray, temperature: float, epsilon: float) -> np.ndarray:
    """What a fitted calibration does to test probabilities: temperature, then clip and renormalise."""
    return clip_and_renormalise(apply_temperature(probabilities, temperature), epsilon)


def choose_epsilon(
    probabilities: np.ndarray, targets: np.ndarray, candidates: tuple[float, ...] = EPSILONS
) -> float:
    """The clip epsilon with the lowest log loss (the smallest one on ties)."""
    losses = [log_loss(probabilities, targets, epsilon) for epsilon in sorted(candidates)]
    return sorted(candidates)[int(np.argmin(losses))]


def calibrate(
    oof_probabilities: np.ndarray, targets: np.ndarray, min_epsilon: float = NO_CLIP
) -> tuple[float, float, float, float]:
    """(temperature, epsilon, OOF log loss before, after), fitted on rows that have predictions.

    Rows of NaN (folds not trained) are ignored. `after <= before` always: the identity is a candidate.
    The epsilon is never below `min_epsilon` (the upload's clip), and `before` includes that clip.
    """
    predicted = ~np.isnan(oof_probabilities).any(1)
    probabilities, targets = oof_probabilities[predicted], targets[predicted]
    if not len(targets):
        raise ValueError("calibrate needs at least one row with predictions")
    before = log_loss(probabilities, targets, min_epsilon)
    temperature = fit_temperature(probabilities, targets)
    scaled = apply_temperature(probabilities, temperature)
    epsilon = choose_epsilon(scaled, targets, tuple(sorted({max(e, min_epsilon) for e in EPSILONS})))
    after = log_loss(scaled, targets, epsilon)
    if after > before:  # only rounding can get here; keep the probabilities as they were
        return 1.0, min_epsilon, before, before
    return temperature, epsilon, before, after


def fit_by_fold(
    oof_probabilities: np.ndarray, targets: np.ndarray, row_folds: np.ndarray, min_epsilon: float = NO_CLIP
) -> Calibration:
    """Calibration fitted on what it is applied to: one temperature per fold, then one clip epsilon.

    The test side averages the folds' models, each a different model than its neighbours; so each fold's
    temperature is fitted on that fold's OOF rows (made by that fold's model, with the same weight files
    and views as its test rows) and applied to that fold's test probabilities before the folds are
    averaged. The epsilon is then chosen on the per-fold-calibrated OOF, never below `min_epsilon` (the
    clip the upload applies, so the reported CV is the uploaded file's). `row_folds`: each row's fold,
    -1 where it has no prediction.
    """
    FITS["fit_by_fold"] += 1
    predicted = (row_folds >= 0) & ~np.isnan(oof_probabilities).any(1)
    if not predicted.any():
        raise ValueError("calibration needs at least one row with predictions")
    temperatures = {
        str(fold): fit_temperature(oof_probabilities[row_folds == fold], targets[row_folds == fold])
        for fold in np.unique(row_folds[predicted])
    }
    calibrated = apply_by_fold(oof_probabilities, row_folds, Calibration(temperatures, None))[predicted]
    candidates = tuple(sorted({max(epsilon, min_epsilon) for epsilon in EPSILONS}))
    epsilon = choose_epsilon(calibrated, targets[predicted], candidates)
    before = log_loss(oof_probabilities[predicted], targets[predicted], min_epsilon)
    after = log_loss(calibrated, targets[predicted], epsilon)
    if after > before:  # only rounding can get here; keep the probabilities as they were
        temperatures, after = dict.fromkeys(temperatures, 1.0), before
        epsilon = min_epsilon
    return Calibration(temperatures, epsilon, before, after)


def apply_by_fold(probabilities: np.ndarray, row_folds: np.ndarray, calibration: Calibration) -> np.ndarray:
    """OOF rows, each scaled by its fold's temperature (then clipped when `calibration` has an epsilon)."""
    result = np.array(probabilities, dtype=np.float64)
    for fold, temperature in calibration.temperatures.items():
        rows = row_folds == int(fold)
        result[rows] = apply_temperature(result[rows], temperature)
    if calibration.epsilon is not None:
        predicted = ~np.isnan(result).any(1)
        result[predicted] = clip_and_renormalise(result[predicted], calibration.epsilon)
    return result


def apply_to_parts(parts: Mapping[int | str, np.ndarray], calibration: Calibration) -> np.ndarray:
    """Test probabilities: each part scaled by its own temperature (a run's folds; an ensemble's one part,
    "blend"), then the parts averaged, then the clip."""
    scaled = [
        apply_temperature(probabilities, calibration.temperatures[str(part)])
        if str(part) in calibration.temperatures
        else probabilities
        for part, probabilities in parts.items()
    ]
    if calibration.epsilon is None:
        return np.mean(scaled, axis=0)
    return clip_and_renormalise(np.mean(scaled, axis=0), calibration.epsilon)


def identity() -> Calibration:
    """A calibration that changes nothing (metrics other than log loss: a temperature cannot help them,
    and predictions that are not class probabilities must never be renormalised)."""
    return Calibration({}, None)


def for_metric(
    metric: str, oof_probabilities: np.ndarray, targets: np.ndarray, row_folds: np.ndarray, min_epsilon: float
) -> Calibration:
    """`fit_by_fold` for log loss; for other metrics the identity (a temperature never changes a label)."""
    if metric != "log_loss":
        return identity()
    return fit_by_fold(oof_probabilities, targets, row_folds, min_epsilon)


def read(run: Run) -> Calibration:
    """The run's calibration as the step after training (or the blend) recorded it: never refitted."""
    return run.read_calibration()
