"""OOF ensembles: blend runs with weights fitted on out-of-fold log loss, calibrate, write the submission.

Every run keeps oof.npy (N_train x C probabilities, NaN rows for folds it did not train) and, after
prediction, test-probabilities.npy. A blend is judged only on rows that every run predicted out of fold;
its weights are non-negative and sum to one, and each single run is among the candidates, so the blend's
OOF log loss is never worse than the best run's. The result is a run folder of its own
(runs/<name>/<time>-ensemble) that `kit report` and `kit submit --run` accept like any other run.

A member may also be one kept variant of a run: RUN@snapshot-3 blends that snapshot's predictions
alone (with the run's TTA views), RUN@snapshot-3:plain its plain view alone (fold-K/oof-*.npy).
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
from scipy.optimize import minimize
from tqdm import tqdm

from kit import metrics, tasks
from kit.config import Config
from kit.data.labels import LabelTable, check_row_order, load_test, record_row_order
from kit.errors import KitError
from kit.files import read_json, save_array, write_json
from kit.predict import calibrate, crossfit, selection, submission, training_choices
from kit.predict import summary as after_training
from kit.predict.inference import predict_test
from kit.run import BLEND, Calibration, Run, Summary
from kit.run_folder import find_run, new_run_dir, run_config, run_summary


def common_rows(oofs: list[np.ndarray]) -> np.ndarray:
    """Boolean mask of the rows that every run predicted out of fold."""
    return np.logical_and.reduce([~np.isnan(oof).any(1) for oof in oofs])


def blend(probabilities: list[np.ndarray], weights: np.ndarray) -> np.ndarray:
    return sum(weight * array for weight, array in zip(weights, probabilities, strict=True))


def simplex_minimum(
    loss: Callable[[np.ndarray], float],
    gradient: Callable[[np.ndarray], np.ndarray],
    count: int,
    judge: Callable[[np.ndarray], float],
) -> np.ndarray:
    """Non-negative weights summing to one that minimise a convex `loss` (SLSQP on the simplex); uniform and
    one-hot weights are candidates too, and `judge` picks among them, so the blend never loses to the best
    single run by `judge`."""
    uniform = np.full(count, 1 / count)
    found = minimize(
        loss,
        uniform,
        jac=gradient,
        method="SLSQP",
        bounds=[(0.0, 1.0)] * count,
        constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1, "jac": lambda w: np.ones_like(w)}],
    )
    fitted = np.clip(found.x, 0, None)
    candidates = [fitted / fitted.sum() if fitted.sum() > 0 else uniform, uniform, *np.eye(count)]
    return candidates[int(np.argmin([judge(weights) for weights in candidates]))]


def fit_weights(probabilities: list[np.ndarray], targets: np.ndarray) -> np.ndarray:
    """Non-negative weights summing to one that minimise the blend's log loss.

    Rows sum to one, so the blend's probability of the true class is the weighted sum of each run's:
    the loss, -mean log(sum_i w_i q_i), is convex in w and SLSQP finds its minimum on the simplex.
    Uniform and one-hot weights are candidates too, so the result never loses to the best single run.
    """
    count = len(probabilities)
    true_class = np.stack([p[np.arange(len(targets)), targets] for p in probabilities], 1)  # rows x runs
    true_class = np.clip(true_class, calibrate.NO_CLIP, 1.0)

    def loss(weights: np.ndarray) -> float:
        return float(-np.mean(np.log(np.clip(true_class @ weights, calibrate.NO_CLIP, None))))

    def gradient(weights: np.ndarray) -> np.ndarray:
        return -np.mean(true_class / np.clip(true_class @ weights, calibrate.NO_CLIP, None)[:, None], 0)

    return simplex_minimum(
        loss, gradient, count, lambda weights: calibrate.log_loss(blend(probabilities, weights), targets)
    )


def fit_weights_squared(predictions: list[np.ndarray], truth: np.ndarray) -> np.ndarray:
    """Non-negative weights summing to one that minimise the blend's mean squared error against `truth`
    (tags 0/1: the Brier score; values and grades: the MSE), for tasks without class probabilities.

    Quadratic and convex in w: SLSQP finds the minimum on the simplex; uniform and one-hot weights are
    candidates too, so the result never loses to the best single run."""
    count = len(predictions)
    stacked = np.stack([p.reshape(len(p), -1) for p in predictions], -1)  # rows x outputs x runs
    truth = truth.reshape(len(truth), -1)

    def loss(weights: np.ndarray) -> float:
        return float(np.mean((stacked @ weights - truth) ** 2))

    def gradient(weights: np.ndarray) -> np.ndarray:
        return 2 * np.einsum("ro,rok->k", stacked @ weights - truth, stacked) / truth.size

    return simplex_minimum(loss, gradient, count, loss)


# task.blend_loss -> how blend weights are fitted: (each run's OOF rows, task.blend_truth(targets)) -> weights
WEIGHT_FITTERS = {"log_loss": fit_weights, "squared_error": fit_weights_squared}


class Member(NamedTuple):
    """One blend input: a run, or one kept variant of it (its saved weights, all views or the plain one)."""

    name: str
    run_dir: Path
    oof: np.ndarray  # N_train x C, NaN rows for folds not trained
    test: Callable[[], np.ndarray]  # N_test x C, read (or predicted) only once the OOF blend is possible
    # () -> predictions_for(seen, every training row's mask): `oof` as the run's choices (views, weight
    # files) fitted on the seen rows alone would make it (None: nothing chosen: a kept variant, a blend, a
    # refit); read only once the blend is possible, like `test`
    refit: Callable[[], Callable[[np.ndarray], np.ndarray] | None] = lambda: None


def refitted_choices(run_dir: Path, labels: LabelTable) -> Callable[[np.ndarray], np.ndarray] | None:
    """A fold run's OOF with what predicts chosen again on any rows (kit.predict.summary, as its CV was
    cross-fitted), so that a blend scores it as its run did; None where the run chose nothing on its OOF."""
    run = Run(run_dir)
    summary = run.summary()
    if summary.is_ensemble or summary.is_full_refit:
        return None
    saved, folds = run_config(run_dir), summary.folds_trained
    results = after_training.fold_results(run, folds)
    if saved.predict.select:
        # its "prediction: ..." line was printed when it trained; here it would repeat it
        with contextlib.redirect_stdout(io.StringIO()):
            oof = np.load(run.oof)
            return after_training.select_prediction(saved, labels, run_dir, folds, results, oof)[2]
    if any(training_choices.stop_of(result.get("recipe")) for result in results.values()):
        return after_training.refitted_default(saved, labels, run_dir, folds, results, len(labels.ids))
    return None


def test_probabilities(run_dir: Path, labels: LabelTable) -> np.ndarray:
    """A run's test probabilities, predicting them first when the run has none yet."""
    path = Run(run_dir).test_probabilities
    if not path.exists():
        tqdm.write(f"predicting the test set with {run_dir.name} first")
        predict_test(run_config(run_dir), labels, run_dir, Run(run_dir).summary())
    return np.load(path)


def variant_predictions(
    run_dir: Path, weights: str, plain: bool, row_count: int
) -> tuple[np.ndarray, np.ndarray]:
    """OOF and test probabilities of one kept variant: fold-K/{oof,test}-<weights>.npy (views x rows x C).

    `plain` takes view 0 (no TTA); otherwise the views' average, as the run averaged them (predict.mean).
    Test predictions are averaged over folds.
    """
    run = Run(run_dir)
    summary = run.summary()
    mean, task = run_config(run_dir).predict.mean, tasks.from_record(summary.task_record)
    oof, tests = None, []
    for fold in summary.folds_trained:
        folder = run.part(fold)  # a full-data refit's seeds keep no OOF: refused below, naming the folder
        paths = (folder.kept_oof(weights), folder.kept_test(weights))
        if not all(path.exists() for path in paths):
            kept = folder.kept_oof_names()
            raise KitError(
                f"{run_dir.name}@{weights}: no kept predictions {paths[0].name} and {paths[1].name} "
                f"in {folder.folder} "
                f"(kept: {', '.join(kept) or 'none'}; run `make predict` first for the test ones)"
            )
        per_view = [np.load(path).astype(np.float64) for path in paths]
        oof_views, test_views = (views[:1] if plain else views for views in per_view)
        oof = np.full((row_count, oof_views.shape[-1]), np.nan) if oof is None else oof
        oof[folder.read_result().rows] = selection.average(oof_views, mean, task)
        tests.append(selection.average(test_views, mean, task))
    return oof, np.mean(tests, axis=0)


def load_member(config: Config, spec: str, labels: LabelTable) -> Member:
    """RUN, RUN@WEIGHTS (e.g. @snapshot-3: that snapshot alone, with TTA) or RUN@WEIGHTS:plain (no TTA)."""
    run_id, _, variant = spec.partition("@")
    row_count = len(labels.ids)
    run_dir = find_run(config, run_id)
    run_summary(run_dir, "kit ensemble")  # an unfinished run: how to finish it
    if not Run(run_dir).oof.exists():
        raise KitError(f"{Run(run_dir).oof}: missing; train the run again (`make train`)")
    check_row_order(run_dir, labels.ids, f"train {run_dir.name} again, or restore the labels file")
    if not variant:
        oof = np.load(Run(run_dir).oof)
        if oof.shape[0] != row_count:
            raise KitError(
                f"{Run(run_dir).oof}: {oof.shape[0]} rows but the labels have {row_count}; "
                "the data changed since this run"
            )
        refit = lambda: refitted_choices(run_dir, labels)  # noqa: E731 (read once the blend is possible)
        return Member(run_dir.name, run_dir, oof, lambda: test_probabilities(run_dir, labels), refit)
    check_not_ensemble_variant(run_dir, spec)
    weights, _, views = variant.partition(":")
    if views not in ("", "plain"):
        raise KitError(f"{spec}: write RUN@WEIGHTS or RUN@WEIGHTS:plain (e.g. {run_id}@snapshot-2:plain)")
    oof, test = variant_predictions(run_dir, weights, views == "plain", row_count)
    return Member(f"{run_dir.name}@{variant}", run_dir, oof, lambda: test)


def check_not_ensemble_variant(run_dir: Path, spec: str) -> None:
    """An ensemble keeps no weight files or views of its own: RUN@WEIGHTS of one is refused, naming its
    runs, whose variants can be blended instead."""
    summary = Run(run_dir).summary()
    if summary.is_ensemble:
        runs = ", ".join(summary.members)
        raise KitError(
            f"{spec}: {run_dir.name} is an ensemble, which keeps no weight files or views of its own; blend "
            f"it whole ({run_dir.name}), or a variant of one of its runs ({runs})"
        )


def check_classes(members: list[Member]) -> tuple[list[str], str]:
    """The members' shared classes and metric; refuses a blend of runs of other label sets."""
    first = Run(members[0].run_dir).summary()
    for member in members:
        if Run(member.run_dir).summary().classes != first.classes:
            raise KitError(
                f"{member.name}: its classes differ from {members[0].name}'s; blend runs of one label set"
            )
    return first.classes, first.metric


def test_predictions(members: list[Member]) -> list[np.ndarray]:
    """Each member's test probabilities, refusing members that predicted different test sets."""
    tests = [member.test() for member in members]
    for member, test in zip(members, tests, strict=True):
        if test.shape != tests[0].shape:
            raise KitError(
                f"{member.name}: test probabilities of shape {test.shape}, but {members[0].name}'s are "
                f"{tests[0].shape}; the test set changed between runs: re-run `make predict` for it"
            )
    return tests


def member_row_folds(member: Member, row_count: int) -> np.ndarray:
    """The fold that predicted each training row in a member's run (-1: none); a blend member, which has
    no folds of its own, counts as one fold (cross-fitted by halves)."""
    run = Run(member.run_dir)
    row_folds = np.full(row_count, -1, dtype=np.int64)
    for number in run.summary().folds_trained:
        if isinstance(number, int):  # a full-data refit's seeds predicted no training row out of fold
            row_folds[run.fold(number).read_result().rows] = number
    if not (row_folds >= 0).any():
        row_folds[~np.isnan(member.oof).any(1)] = 0
    return row_folds


def on_rows(member: Member, rows: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """predictions_for(seen, a mask of the blend's rows) -> the member's OOF on the blend's rows, its run's
    choices fitted on the seen rows alone (the same OOF where it chose nothing); each mask fitted once."""
    index, fitted, refit = np.flatnonzero(rows), {}, member.refit()

    def predictions_for(seen: np.ndarray) -> np.ndarray:
        if refit is None:
            return member.oof[rows]
        key = np.asarray(seen, dtype=bool).tobytes()
        if key not in fitted:
            everywhere = np.zeros(len(rows), dtype=bool)
            everywhere[index[seen]] = True
            fitted[key] = refit(everywhere)[rows]
        return fitted[key]

    return predictions_for


def ensemble_runs(config: Config, labels: LabelTable, specs: list[str]) -> Path:
    """`kit ensemble`: blend runs (by id or unique prefix) or kept variants (RUN@WEIGHTS[:plain]) on OOF,
    calibrate (log-loss metrics), write the submission; returns the ensemble's folder."""
    if len(specs) < 2 or len(set(specs)) != len(specs):
        raise KitError("an ensemble needs at least two different runs: `kit ensemble COMP RUN RUN ...`")
    started = time.time()
    members = [load_member(config, spec, labels) for spec in specs]
    if len({member.name for member in members}) != len(members):
        raise KitError("an ensemble needs at least two different runs: `kit ensemble COMP RUN RUN ...`")
    classes, metric = check_classes(members)
    oofs = [member.oof for member in members]
    rows = common_rows(oofs)
    if not rows.any():
        raise KitError(
            "no training image was predicted out of fold by every run; "
            "train the runs on shared folds (e.g. --fold all)"
        )
    targets, task = labels.targets[rows], labels.task
    member_rows = [oof[rows] for oof in oofs]
    clip = config.submission.clip_epsilon

    def fit_weights(member_part: list[np.ndarray], truth: np.ndarray) -> np.ndarray:
        return WEIGHT_FITTERS[task.blend_loss](member_part, task.blend_truth(truth))

    # The blend is kept only when, fitted on other rows, it beats its best member (kit.predict.crossfit);
    # else that member predicts alone, with weight 1.
    row_folds = member_row_folds(members[0], len(labels.ids))[rows]
    member_choices = [on_rows(member, rows) for member in members]
    names = [member.name for member in members]
    decision = crossfit.blend_or_best_member(
        metric, task, targets, row_folds, member_choices, fit_weights, clip, names
    )
    weights = np.asarray(decision["weights"])
    # Members' OOF and test predictions are both uncalibrated: blend them alike, then calibrate once.
    blended = blend(member_rows, weights)
    calibration = calibrate.identity()  # a temperature cannot change a label or an accuracy
    if task.blend_loss == "log_loss" and metric == "log_loss":  # class probabilities, scored by log loss
        temperature, epsilon, before, after = calibrate.calibrate(blended, targets, min_epsilon=clip)
        calibration = Calibration({BLEND: temperature}, epsilon, before, after)
    calibrated = calibrate.apply_to_parts({BLEND: blended}, calibration)
    scorer = metrics.METRICS[metric]
    # Thresholds, cut-points: refitted on the blend.
    decisions = task.fit_decisions(calibrated, targets, scorer)
    cv = task.score(scorer, targets, calibrated, decisions)
    cv_uncalibrated = task.score(scorer, targets, blended, decisions)
    single = {m.name: {metric: task.score(scorer, targets, m.oof[rows], decisions)} for m in members}

    def predictions_for(seen: np.ndarray) -> np.ndarray:  # the members' choices and weights as fitted on seen
        if not decision["blend_pays"]:
            return member_choices[decision["best_member"]](seen)
        chosen = [choices(seen) for choices in member_choices]
        return blend(chosen, fit_weights([member[seen] for member in chosen], targets[seen]))

    honest = crossfit.honest_cv(metric, task, targets, row_folds, predictions_for, clip, cv)
    if honest.get("calibration_pays") is False and calibration.temperatures:
        calibration = Calibration({BLEND: 1.0}, clip, calibration.before, calibration.before)
    if task.blend_loss == "log_loss":
        for member in members:
            single[member.name]["log_loss"] = calibrate.log_loss(member.oof[rows], targets)
    test_blend = blend(test_predictions(members), weights)  # uncalibrated, like the blended OOF

    run_dir = new_run_dir(config, "ensemble")
    record_row_order(run_dir, labels.ids)  # its oof.npy follows these rows, as a trained run's does
    # config.json makes the folder a run (listed, reportable, submittable): the first run's settings.
    run = Run(run_dir)
    write_json(run.config_file, read_json(Run(members[0].run_dir).config_file))
    write_json(run.provenance_file, {**read_json(run.provenance_file), "runs": names})
    full_oof = np.full((len(labels.ids), blended.shape[1]), np.nan)
    full_oof[rows] = blended
    save_array(run.oof, full_oof)
    save_array(run.test_probabilities, test_blend)
    details = {
        "runs": names,
        "weights": [float(w) for w in weights],
        "rows": int(rows.sum()),
        "single_runs": single,
        "oof_log_loss": calibrate.log_loss(blend(member_rows, weights), targets)
        if task.blend_loss == "log_loss"
        else None,
        # the blend's and each member's cross-fitted CV, whether the blend paid, and the line saying so
        "cross_fitted": {key: decision[key] for key in ("blend_cv", "member_cvs", "blend_pays", "line")},
    }
    summary = {
        "metric": metric,
        "cv": cv,
        "cv_uncalibrated": cv_uncalibrated,
        "folds_trained": [],
        "classes": classes,
        "seconds": round(time.time() - started, 1),
        "folds": {},
        "task": task.describe(),
        "decisions": decisions,
        "ensemble": details,
        **honest,  # cv: cross-fitted; cv_in_sample: the figure fitted and scored on the same rows
    }
    run.write_summary(summary)
    run.write_calibration(calibration)
    blend_submitted = calibrate.apply_to_parts({BLEND: test_blend}, calibration)
    path = submission.write_for_run(config, load_test(config).ids, blend_submitted, Summary(summary))
    write_json(run.submission_record_file, {"file": path.name, "weights": [], "runs": details["runs"]})
    return run_dir
