"""Cross-fitting: a CV figure scored on rows that chose nothing.

Every choice made on out-of-fold rows (a temperature, a clip, which views and weight files predict, an
ensemble's weights) flatters the CV when it is scored on the rows it was fitted on: with one small fold
of 60 rows a temperature fitted and scored on the same rows reported 0.2177 where the answer key said
0.4247 (issue 26). Here each part of the OOF rows is scored with a choice fitted on the other parts: the
folds, when two or more were trained, else two seeded random halves of the one fold (fitted on one half,
scored on the other, both ways). The submission still uses the choice fitted on every OOF row; the
cross-fitted figure is what the kit reports as CV. A step that does not pay under cross-fitting is not
applied (`pays`). A CV from few rows is uncertain: `bootstrap_interval` says how much.

Pure numpy on arrays; the fitting functions are handed in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from kit.metrics import METRICS, clip_and_renormalise
from kit.predict import calibrate
from kit.tasks import SingleLabel

NOT_PREDICTED = -1  # a row's part when no trained fold predicted it
SMALL_FOLD_ROWS = 200  # below this many scored rows, the CV line carries its bootstrap interval
BOOTSTRAP_DRAWS = 1000  # resamples of the scored rows
BOOTSTRAP_LEVEL = 0.95  # the interval's coverage
# With one fold, the two halves are drawn this many times (seeds 0..N-1) and the cross-fitted scores
# averaged: on a 60-row fold of cats-vs-dogs-dev one draw said calibration paid and the next that it did
# not (docs/2026-12-02-cv-trust.md).
HALF_REPEATS = 10


def parts_of(row_folds: np.ndarray, seed: int = 0) -> np.ndarray:
    """Each row's cross-fitting part (-1: not predicted): its fold when two or more folds were trained,
    else a seeded random half (0 or 1) of the one fold's rows, the halves differing in size by at most
    one. Pure: the same folds and seed give the same parts."""
    row_folds = np.asarray(row_folds)
    parts = np.full(len(row_folds), NOT_PREDICTED, dtype=np.int64)
    predicted = np.flatnonzero(row_folds >= 0)
    folds = np.unique(row_folds[predicted])
    if len(folds) >= 2:
        parts[predicted] = row_folds[predicted]
        return parts
    order = np.random.default_rng(seed).permutation(predicted)
    parts[order] = np.arange(len(order)) % 2
    return parts


def cross_fit(
    parts: np.ndarray, fit: Callable[[np.ndarray], Any], apply: Callable[[Any, np.ndarray], np.ndarray]
):
    """Each part's rows as a choice fitted on the other parts makes them.

    fit(rows) -> fitted, from a boolean mask of the rows it may look at; apply(fitted, rows) -> the
    predictions of the masked rows (rows x outputs). Returns (predictions for every row, NaN where not
    predicted; the fitted choice per part)."""
    result, fitted_by_part = None, {}
    for part in np.unique(parts[parts >= 0]):
        scored, seen = parts == part, (parts >= 0) & (parts != part)
        if not seen.any():  # one part only (one row): nothing else to fit on
            continue
        fitted_by_part[int(part)] = fitted = fit(seen)
        predictions = np.asarray(apply(fitted, scored), dtype=np.float64)
        if result is None:
            result = np.full((len(parts), *predictions.shape[1:]), np.nan)
        result[scored] = predictions
    if result is None:
        raise ValueError("cross-fitting needs rows in at least two parts")
    return result, fitted_by_part


def gain(new: float, old: float, higher_is_better: bool) -> float:
    """How much `new` is better than `old` (negative: worse), whichever way the metric points."""
    return new - old if higher_is_better else old - new


def pays(with_step: float, without_step: float, higher_is_better: bool) -> bool:
    """A step (calibration, a selection, a blend) pays when its cross-fitted score is strictly better
    than the score without it; an equal score does not pay for the change."""
    return gain(with_step, without_step, higher_is_better) > 1e-12


def bootstrap_interval(
    score_of_rows: Callable[[np.ndarray], float],
    row_count: int,
    draws: int = BOOTSTRAP_DRAWS,
    level: float = BOOTSTRAP_LEVEL,
    seed: int = 0,
) -> tuple[float, float]:
    """The percentile bootstrap interval of a score over `row_count` rows: `score_of_rows(indices)` scores
    a resample (indices into the scored rows, drawn with replacement)."""
    random = np.random.default_rng(seed)
    scores = [score_of_rows(random.integers(0, row_count, row_count)) for _ in range(draws)]
    tail = (1 - level) / 2
    low, high = np.quantile(scores, [tail, 1 - tail])
    return float(low), float(high)


def cross_fitted_predictions(
    metric: str,
    task: SingleLabel,
    targets: np.ndarray,
    parts: np.ndarray,
    predictions_for: Callable[[np.ndarray], np.ndarray],
    min_epsilon: float,
    calibrate_too: bool,
) -> np.ndarray:
    """Every predicted row as the submission would score it, with each choice fitted on the other parts.

    predictions_for(seen) -> every row's OOF predictions under what is chosen on the `seen` rows (views
    and weight files, an ensemble's weights; the same array when nothing is chosen). Then, fitted on the
    seen rows too: the calibration (log loss, when `calibrate_too`) and the task's decisions (thresholds,
    cut-points). Log-loss predictions always carry the upload's clip (`min_epsilon`), as the file does.
    Returns the decided predictions (rows x outputs), NaN where not predicted."""
    scorer = METRICS[metric]
    probabilities = metric == "log_loss"

    def finish(predictions: np.ndarray, calibration: tuple[float, float] | None) -> np.ndarray:
        if calibration is not None:
            return calibrate.apply_calibration(predictions, *calibration)
        return clip_and_renormalise(predictions, min_epsilon) if probabilities else predictions

    def fit(seen: np.ndarray):
        predictions = predictions_for(seen)
        calibration = None
        if probabilities and calibrate_too:
            calibration = calibrate.calibrate(predictions[seen], targets[seen], min_epsilon)[:2]
        decisions = task.fit_decisions(finish(predictions[seen], calibration), targets[seen], scorer)
        return predictions, calibration, decisions

    def apply(fitted, rows: np.ndarray) -> np.ndarray:
        predictions, calibration, decisions = fitted
        return task.decide(finish(predictions[rows], calibration), decisions)

    return cross_fit(parts, fit, apply)[0]


def score_rows(metric: str, targets: np.ndarray, decided: np.ndarray) -> float:
    """The metric over the rows that have predictions (decided: rows x outputs, NaN rows skipped)."""
    predicted = ~np.isnan(decided.reshape(len(decided), -1)).any(1)
    return float(METRICS[metric].score(targets[predicted], decided[predicted]))


def honest_cv(
    metric: str,
    task: SingleLabel,
    targets: np.ndarray,
    row_folds: np.ndarray,
    predictions_for: Callable[[np.ndarray], np.ndarray],
    min_epsilon: float,
    in_sample: float,
) -> dict:
    """The CV fields of a run or blend, scored on rows that chose nothing.

    `row_folds`: the fold that predicted each row (-1: none); `in_sample`: the figure fitted and scored on
    the same rows (shown beside, named so). With one fold, the halves are drawn HALF_REPEATS times and
    the scores averaged: one draw decides by the luck of a few rows. Calibration is kept only when it
    pays under cross-fitting. Returns {"cv", "cv_in_sample", "cv_cross_fitted_by" ("folds" or
    "halves"), "cv_rows", with log loss "calibration_pays" and "cv_uncalibrated_cross_fitted", and under
    SMALL_FOLD_ROWS rows "cv_interval" (the first draw's rows resampled)}."""
    higher = METRICS[metric].higher_is_better
    predicted_folds = np.unique(np.asarray(row_folds)[np.asarray(row_folds) >= 0])
    by = "folds" if len(predicted_folds) >= 2 else "halves"
    draws = []  # per draw of the parts: (predictions without calibration, with it or None)
    for seed in range(HALF_REPEATS if by == "halves" else 1):
        arguments = (metric, task, targets, parts_of(row_folds, seed), predictions_for, min_epsilon)
        without = cross_fitted_predictions(*arguments, calibrate_too=False)
        calibrated = (
            cross_fitted_predictions(*arguments, calibrate_too=True) if metric == "log_loss" else None
        )
        draws.append((without, calibrated))

    def mean_score(column: int) -> float:
        return float(np.mean([score_rows(metric, targets, draw[column]) for draw in draws]))

    column, fields = 0, {}
    if metric == "log_loss":
        uncalibrated = mean_score(0)
        calibration_pays = pays(mean_score(1), uncalibrated, higher)
        column = 1 if calibration_pays else 0
        fields.update(calibration_pays=bool(calibration_pays), cv_uncalibrated_cross_fitted=uncalibrated)
    chosen = draws[0][column]
    scored = np.flatnonzero(~np.isnan(chosen.reshape(len(chosen), -1)).any(1))
    fields.update(
        cv=mean_score(column), cv_in_sample=float(in_sample), cv_cross_fitted_by=by, cv_rows=len(scored)
    )
    if len(scored) < SMALL_FOLD_ROWS:
        fields["cv_interval"] = list(
            bootstrap_interval(
                lambda draw: score_rows(metric, targets[scored][draw], chosen[scored][draw]), len(scored)
            )
        )
    return fields


def blend_or_best_member(
    metric: str,
    task: SingleLabel,
    targets: np.ndarray,
    row_folds: np.ndarray,
    members: list[np.ndarray | Callable[[np.ndarray], np.ndarray]],
    fit_weights: Callable[[list[np.ndarray], np.ndarray], np.ndarray],
    min_epsilon: float,
    names: list[str] | None = None,
) -> dict:
    """An ensemble's weights, kept only when the blend pays under cross-fitting.

    members: each member's OOF predictions on the same rows (NaN where the row is not scored), or its
    predictions_for(seen): its OOF under what its run chose (views, weight files) on the `seen` rows
    alone (kit.predict.summary.select_prediction). fit_weights(member rows, targets) -> weights. Each
    member and the blend are scored as a run's CV is (`honest_cv`: what predicts, the blend's weights and
    the calibration fitted on the other parts, the calibration kept only where it pays), so a member's
    figure is its run's CV when the blend scores the rows its run did: scored on its in-sample OOF, a
    member with more choices looked better than it is, and a worse run could be kept alone (issue 26).
    When the blend is not better than its best member, that member gets weight 1 and the others 0.
    Returns {"weights", "blend_cv", "member_cvs", "best_member", "blend_pays", "line"}."""
    higher = METRICS[metric].higher_is_better
    names = names or [f"member {index + 1}" for index in range(len(members))]
    predicting = [member if callable(member) else (lambda seen, member=member: member) for member in members]

    def blended(seen: np.ndarray) -> np.ndarray:
        chosen = [predictions_for(seen) for predictions_for in predicting]
        weights = fit_weights([member[seen] for member in chosen], targets[seen])
        return sum(weight * member for weight, member in zip(weights, chosen, strict=True))

    def cross_fitted(predictions_for) -> float:
        return honest_cv(metric, task, targets, row_folds, predictions_for, min_epsilon, np.nan)["cv"]

    blend_cv = cross_fitted(blended)
    member_cvs = [cross_fitted(predictions_for) for predictions_for in predicting]
    best = max(range(len(members)), key=lambda index: gain(member_cvs[index], member_cvs[0], higher))
    blend_pays = pays(blend_cv, member_cvs[best], higher)
    everything = parts_of(row_folds) >= 0
    chosen = [predictions_for(everything)[everything] for predictions_for in predicting]
    weights = np.asarray(fit_weights(chosen, targets[everything]), dtype=float)
    others = "; ".join(
        f"{names[index]} {member_cvs[index]:.4f}" for index in range(len(members)) if index != best
    )
    line = (
        f"blend: cross-fitted CV {metric} {blend_cv:.4f} against its best member's, {names[best]}: "
        f"{member_cvs[best]:.4f} (each member's CV cross-fitted on the {int(everything.sum())} rows the "
        f"blend scores, as its run's CV is; {others})"
    )
    if not blend_pays:
        weights = np.eye(len(members))[best]
        line += f": the blend does not pay, so member {best + 1} predicts alone (weight 1)"
    return {
        "weights": weights.tolist(),
        "blend_cv": blend_cv,
        "member_cvs": member_cvs,
        "best_member": best,
        "blend_pays": bool(blend_pays),
        "line": line,
    }


def refitted_selection(
    kept_by_fold: list[dict[str, np.ndarray]],
    rows_by_fold: list[np.ndarray],
    targets: np.ndarray,
    row_count: int,
    choose: Callable[[list[dict[str, np.ndarray]], list[np.ndarray]], dict],
    blend: Callable[[dict[str, np.ndarray], dict], np.ndarray],
) -> Callable[[np.ndarray], np.ndarray]:
    """predictions_for(seen) for `honest_cv`: the weight files and views chosen again on the seen rows
    alone (kit.predict.selection through `choose(kept per fold, targets per fold)`), then every row's OOF
    prediction under that choice (`blend(kept, chosen)`); NaN where no fold predicted.

    kept_by_fold: per trained fold, {weight file: views x the fold's rows x outputs}; rows_by_fold: the
    training rows of each fold's kept arrays, in their order."""

    def predictions_for(seen: np.ndarray) -> np.ndarray:
        kept_seen, targets_seen = [], []
        for kept, rows in zip(kept_by_fold, rows_by_fold, strict=True):
            mask = seen[rows]
            if mask.any():
                kept_seen.append({name: array[:, mask] for name, array in kept.items()})
                targets_seen.append(targets[rows[mask]])
        chosen = choose(kept_seen, targets_seen)
        result = None
        for kept, rows in zip(kept_by_fold, rows_by_fold, strict=True):
            predicted = blend(kept, chosen)
            if result is None:
                result = np.full((row_count, *predicted.shape[1:]), np.nan)
            result[rows] = predicted
        return result

    return predictions_for
