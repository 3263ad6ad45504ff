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


def oof_targets(labels: LabelTable, classes: list[str]) -> np.ndarray:
    """Class index of every training row, in oof.npy's row order."""
    return np.array([classes.index(labels.classes[target]) for target in labels.targets])


def row_folds_of(run_dir: Path, summary: dict, row_count: int) -> np.ndarray:
    """The fold that predicted each training row (-1: none), from the folds' result.json."""
    row_folds = np.full(row_count, -1, dtype=np.int64)
    for fold in summary["folds_trained"]:
        row_folds[read_json(run_dir / f"fold-{fold}" / "result.json")["valid_rows"]] = fold
    return row_folds


def run_calibration(
    run_dir: Path, labels: LabelTable | None, summary: dict, min_epsilon: float = NO_CLIP
) -> dict:
    """The run's calibration (`fit_by_fold`): fitted on its oof.npy and recorded in calibration.json, then
    read back. Metrics other than log loss get the identity and no record.

    The record names the oof.npy it was fitted on (SHA-256), so a run whose OOF changed (a resumed run
    that trained more folds) is fitted again. A run without oof.npy (a run packaged for a Kaggle notebook)
    uses its recorded calibration and is never refitted; `labels` may then be None.
    `min_epsilon`: the upload's clip (submission.clip_epsilon), a floor of the fitted epsilon.
    """
    if summary["metric"] != "log_loss":
        return identity()
    record, oof = run_dir / CALIBRATION_FILE, run_dir / "oof.npy"
    if not oof.exists():
        if record.exists():
            return read_json(record)
        raise click.ClickException(
            f"{run_dir}: no oof.npy to calibrate on and no {CALIBRATION_FILE}: "
            "predict with the run's own folder"
        )
    fingerprint = hashlib.sha256(oof.read_bytes()).hexdigest()
    if record.exists():
        recorded = read_json(record)
        if recorded.get("oof_sha256") == fingerprint and "temperatures" in recorded:
            return recorded
    if labels is None:
        raise ValueError("run_calibration needs the labels to fit on oof.npy")
    probabilities = np.load(oof)
    row_folds = row_folds_of(run_dir, summary, len(probabilities))
    fitted = fit_by_fold(probabilities, oof_targets(labels, summary["classes"]), row_folds, min_epsilon)
    fitted["oof_sha256"] = fingerprint
    write_json(record, fitted)
    return fitted


def fit_by_fold(
    oof_probabilities: np.ndarray, targets: np.ndarray, row_folds: np.ndarray, min_epsilon: float = NO_CLIP
) -> dict:
    """Calibration fitted on what it is applied to: one temperature per fold, then one clip epsilon.

    The test side averages the folds' models, each a different model than its neighbours; so each fold's
    temperature is fitted on that fold's OOF rows (made by that fold's model, with the same weight files
    and views as its test rows) and applied to that fold's test probabilities before the folds are
    averaged. The epsilon is then chosen on the per-fold-calibrated OOF, never below `min_epsilon` (the
    clip the upload applies, so the reported CV is the uploaded file's). `row_folds`: each row's fold,
    -1 where it has no prediction. Returns {"temperatures": {fold: T}, "epsilon", "before", "after"}.
    """
    predicted = (row_folds >= 0) & ~np.isnan(oof_probabilities).any(1)
    if not predicted.any():
        raise ValueError("calibration needs at least one row with predictions")
    temperatures = {
        str(fold): fit_temperature(oof_probabilities[row_folds == fold], targets[row_folds == fold])
        for fold in np.unique(row_folds[predicted])
    }
    calibrated = apply_by_fold(oof_probabilities, row_folds, {"temperatures": temperatures})[predicted]
    candidates = tuple(sorted({max(epsilon, min_epsilon) for epsilon in EPSILONS}))
    epsilon = choose_epsilon(calibrated, targets[predicted], candidates)
    before = log_loss(oof_probabilities[predicted], targets[predicted], min_epsilon)
    after = log_loss(calibrated, targets[predicted], epsilon)
    if after > before:  # only rounding can get here; keep the probabilities as they were
        temperatures, after = dict.fromkeys(temperatures, 1.0), before
        epsilon = min_epsilon
    return {"temperatures": temperatures, "epsilon": epsilon, "before": before, "after": after}


def apply_by_fold(probabilities: np.ndarray, row_folds: np.ndarray, calibration: dict) -> np.ndarray:
    """OOF rows, each scaled by its fold's temperature (then clipped when `calibration` has an epsilon)."""
    result = np.array(probabilities, dtype=np.float64)
    for fold, temperature in calibration["temperatures"].items():
        rows = row_folds == int(fold)
        result[rows] = apply_temperature(result[rows], temperature)
    if calibration.get("epsilon") is not None:
        predicted = ~np.isnan(result).any(1)
        result[predicted] = clip_and_renormalise(result[predicted], calibration["epsilon"])
    return result


def apply_to_folds(fold_probabilities: dict[int, np.ndarray], calibration: dict) -> np.ndarray:
    """Test probabilities: each fold's own temperature, then the folds averaged, then the clip."""
    temperatures = calibration["temperatures"]
    scaled = [
        apply_temperature(probabilities, temperatures[str(fold)])
        if str(fold) in temperatures
        else probabilities
        for fold, probabilities in fold_probabilities.items()
    ]
    if calibration["epsilon"] is None:
        return np.mean(scaled, axis=0)
    return clip_and_renormalise(np.mean(scaled, axis=0), calibration["epsilon"])


def identity() -> dict:
    """A calibration that changes nothing (metrics other than log loss: a temperature cannot help them,
    and predictions that are not class probabilities must never be renormalised)."""
    return {"temperatures": {}, "epsilon": None}


def for_metric(
    metric: str, oof_probabilities: np.ndarray, targets: np.ndarray, row_folds: np.ndarray, min_epsilon: float
) -> dict:
    """`fit_by_fold` for log loss; for other metrics the identity (a temperature never changes a label)."""
    if metric != "log_loss":
        return identity()
    return fit_by_fold(oof_probabilities, targets, row_folds, min_epsilon)


def calibrated_blend(details: dict, test_blend: np.ndarray) -> np.ndarray:
    """An ensemble's test probabilities as submitted: its one calibration (metrics.json's
    ensemble.calibration, fitted on the blended OOF) applied to its uncalibrated test blend."""
    fitted = details["calibration"]
    if not fitted.get("applied", True):  # metrics other than log loss: the blend as it is
        return test_blend
    return apply_calibration(test_blend, fitted["temperature"], fitted["epsilon"])
