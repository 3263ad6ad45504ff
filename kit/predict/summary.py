"""The step between training and prediction, run once when `kit train` ends (`settle`): which weight
files and views predict (chosen on every trained fold's kept per-view OOF), the calibration and the CV
summary, fitted once on the OOF of that choice and written once (oof.npy, calibration.json,
metrics.json). `kit predict`, `kit ensemble`, `kit notebook` and `kit report` only read what it wrote."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from kit import metrics
from kit.config import Config
from kit.data.labels import LabelTable
from kit.data.tta import MIRROR_FIRST, view_names
from kit.files import save_array
from kit.predict import calibrate, crossfit, selection, training_choices
from kit.run import Calibration, FoldFolder, Run
from kit.train.cross_validation import worse_stages
from kit.train.views import candidate_weights, prediction_weights, weight_image_size, weights_rule


def kept_oof(config: Config, folder: FoldFolder, recipe: dict | None = None) -> dict[str, np.ndarray]:
    """A fold's kept per-view OOF probabilities of the weight files that may predict (every stage's final
    weights, snapshots, the default rule's: kit.train.views.candidate_weights), by file stem."""
    return {
        path.stem: np.load(folder.kept_oof(path.stem)).astype(np.float64)
        for path in candidate_weights(config, folder.folder, recipe)
    }


def select_prediction(
    config: Config, labels: LabelTable, run_dir: Path, fold_numbers: list[int], results: dict, oof: np.ndarray
) -> tuple[dict, np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """Which weight files and views predict (kit.predict.selection), chosen on every trained fold's OOF;
    the OOF predictions of that choice (NaN rows where no fold predicted), as the test side will be; and
    the same choice made again on any subset of the rows (kit.predict.crossfit.refitted_selection), for
    a CV scored on rows that chose nothing."""
    run = Run(run_dir)
    recipes = {number: results[number].get("recipe") for number in fold_numbers}
    kept = [kept_oof(config, run.fold(number), recipes[number]) for number in fold_numbers]
    targets = [labels.targets[results[number]["valid_rows"]] for number in fold_numbers]
    first = run.fold(fold_numbers[0]).folder
    # files every fold kept (folds that stopped on their own may lack a later stage's), the default's last
    names = [
        path.stem
        for path in candidate_weights(config, first, recipes[fold_numbers[0]])
        if all(path.stem in fold_kept for fold_kept in kept)
    ]
    # after a stop, the default's check point is chosen on the rows handed in, not in training (issue 26)
    recipe = recipes[fold_numbers[0]]
    default = prediction_weights(config, first, recipe)
    default_on = training_choices.default_chooser(config, labels.task, recipe, names, default)

    def choose(kept_by_fold: list[dict[str, np.ndarray]], targets_by_fold: list[np.ndarray]) -> dict:
        return selection.choose(
            config.competition.metric,
            kept_by_fold,
            targets_by_fold,
            names,
            1 + config.predict.tta,
            config.predict.min_gain,
            labels.task,
            fewest_views=2 if config.augment.preset in MIRROR_FIRST else 1,
            mean=config.predict.mean,
            default=default_on(kept_by_fold, targets_by_fold),
        )

    def blend(fold_kept: dict[str, np.ndarray], choice: dict) -> np.ndarray:
        weights, views = tuple(choice["weights"]), tuple(choice["views"])
        return selection.blend(fold_kept, weights, views, config.predict.mean, task=labels.task)

    chosen = choose(kept, targets)
    view_names_all = view_names(config.augment.preset, config.predict.tta)
    chosen["view_names"] = [view_names_all[index] for index in chosen["views"]]
    chosen["forward_passes_per_image"] = chosen["cost"] * len(fold_numbers)
    # each file predicts at the size its stage trained at, as its OOF rows were made (kit.train.views)
    chosen["image_sizes"] = {name: weight_image_size(config, name) for name in chosen["weights"]}
    default = chosen["default"]
    tqdm.write(
        f"prediction: {'+'.join(chosen['weights'])} x {'+'.join(chosen['view_names'])} "
        f"({chosen['forward_passes_per_image']} forward passes per test image; the default "
        f"{default['cost'] * len(fold_numbers)}), OOF {config.competition.metric} {chosen['score']:.4f} "
        f"(default {default['score']:.4f})"
    )
    chosen_oof = np.full_like(oof, np.nan)
    for number, fold_kept in zip(fold_numbers, kept, strict=True):
        chosen_oof[results[number]["valid_rows"]] = blend(fold_kept, chosen)
    rows_by_fold = [np.asarray(results[number]["valid_rows"]) for number in fold_numbers]
    refitted = crossfit.refitted_selection(kept, rows_by_fold, labels.targets, len(oof), choose, blend)
    return chosen, chosen_oof, refitted


def refitted_default(
    config: Config, labels: LabelTable, run_dir: Path, fold_numbers: list[int], results: dict, row_count: int
) -> Callable[[np.ndarray], np.ndarray]:
    """With predict.select off, after a stop: predictions_for(seen) for the cross-fitted CV, each fold's
    default files (kit.train.views.prediction_weights) with the check point chosen again on the seen rows
    alone (kit.predict.training_choices.default_chooser): training chose it on every row of the fold."""
    run = Run(run_dir)
    recipes = [results[number].get("recipe") for number in fold_numbers]
    kept = [kept_oof(config, run.fold(number), recipes[index]) for index, number in enumerate(fold_numbers)]
    names = [name for name in kept[0] if all(name in fold_kept for fold_kept in kept)]
    default = prediction_weights(config, run.fold(fold_numbers[0]).folder, recipes[0])
    default_on = training_choices.default_chooser(config, labels.task, recipes[0], names, default)
    views = tuple(range(1 + config.predict.tta))

    def choose(kept_by_fold: list[dict[str, np.ndarray]], targets_by_fold: list[np.ndarray]) -> dict:
        return {"weights": default_on(kept_by_fold, targets_by_fold) or names, "views": views}

    def blend(fold_kept: dict[str, np.ndarray], choice: dict) -> np.ndarray:
        weights = tuple(choice["weights"])
        return selection.blend(fold_kept, weights, choice["views"], config.predict.mean, task=labels.task)

    rows_by_fold = [np.asarray(results[number]["valid_rows"]) for number in fold_numbers]
    return crossfit.refitted_selection(kept, rows_by_fold, labels.targets, row_count, choose, blend)


def cv_summary(
    config: Config, labels: LabelTable, oof: np.ndarray, row_folds: np.ndarray
) -> tuple[dict, dict]:
    """CV as submitted (calibrated per fold, upload clip included; decisions fitted on OOF) and uncalibrated,
    with the decisions (thresholds, cut-points) the submission will apply; and the calibration (the one
    fit of it: a temperature per fold, kit.predict.calibrate).

    `cv` is what the submission file will score on these rows; `cv_uncalibrated` the raw OOF's score.
    """
    metric, predicted, task = config.competition.metric, row_folds >= 0, labels.task
    calibration = calibrate.for_metric(metric, oof, labels.targets, row_folds, config.submission.clip_epsilon)
    calibrated = calibrate.apply_by_fold(oof, row_folds, calibration)[predicted]
    targets, raw, scorer = labels.targets[predicted], oof[predicted], metrics.METRICS[metric]
    decisions = task.fit_decisions(calibrated, targets, scorer)
    return {
        "metric": metric,
        "cv": task.score(scorer, targets, calibrated, decisions),
        "cv_uncalibrated": task.score(scorer, targets, raw, decisions),
        "cv_default_decisions": task.score(scorer, targets, raw),
        "task": task.describe(),
        "decisions": decisions,
    }, calibration


def cross_fitted(
    config: Config,
    labels: LabelTable,
    row_folds: np.ndarray,
    predictions_for: Callable[[np.ndarray], np.ndarray],
    summary: dict,
    calibration: Calibration,
) -> tuple[dict, Calibration]:
    """The summary with its CV scored on rows that chose nothing (kit.predict.crossfit: what predicts, the
    calibration and the decisions fitted on the other folds, or the other half of one fold); the in-sample
    figure kept beside it as cv_in_sample. A calibration that does not pay under cross-fitting is not
    applied: the submission then carries the upload's clip alone."""
    metric, clip = config.competition.metric, config.submission.clip_epsilon
    fields = crossfit.honest_cv(
        metric, labels.task, labels.targets, row_folds, predictions_for, clip, summary["cv"]
    )
    if fields.get("calibration_pays") is False and calibration.temperatures:
        kept = calibration.before
        calibration = Calibration(dict.fromkeys(calibration.temperatures, 1.0), clip, kept, kept)
    return {**summary, **fields}, calibration


def fold_results(run: Run, fold_numbers: list[int]) -> dict[int, dict]:
    """The trained folds' results (kit.train.cross_validation wrote them) with their OOF probabilities."""
    results = {}
    for number in fold_numbers:
        folder = run.fold(number)
        result = folder.read_result()
        results[number] = {
            "score": result.score,
            "history": result.history,
            "pseudo_labels": result.pseudo_labels,
            "recipe": result.recipe,  # check points, stop, stages that ran (kit.train.stopping)
            "seeds": result.seeds,  # --seeds N: each seed as trained alone ([] with one seed)
            "valid_rows": result.rows,
            "probabilities": np.load(folder.oof),
        }
    return results


def settle(
    config: Config, labels: LabelTable, run_dir: Path, fold_numbers: list[int], seconds: float
) -> dict:
    """After training: the prediction choice, the calibration and the CV summary, each fitted once on the
    trained folds' kept OOF and written once. Returns the summary (metrics.json)."""
    run = Run(run_dir)
    results = fold_results(run, fold_numbers)
    oof = np.full((len(labels.ids), labels.task.head_size(labels.classes)), np.nan)
    row_folds = np.full(len(labels.ids), -1, dtype=np.int64)  # the fold that predicted each row; -1: none
    for number, result in results.items():
        oof[result["valid_rows"]] = result["probabilities"]
        row_folds[result["valid_rows"]] = number
    prediction, chosen_oof = None, oof
    predictions_for = lambda seen: chosen_oof  # noqa: E731 (nothing chosen: the same OOF for any rows)
    if config.predict.select:
        prediction, chosen_oof, predictions_for = select_prediction(
            config, labels, run_dir, fold_numbers, results, oof
        )
    elif any(training_choices.stop_of(result.get("recipe")) for result in results.values()):
        predictions_for = refitted_default(config, labels, run_dir, fold_numbers, results, len(oof))
    oof = chosen_oof
    save_array(run.oof, oof)
    summary, calibration = cv_summary(config, labels, oof, row_folds)
    summary, calibration = cross_fitted(config, labels, row_folds, predictions_for, summary, calibration)
    # what training chose on the scored rows and cross-fitting cannot choose again: the CV is in sample there
    named = training_choices.named_choices(config, [result.get("recipe") for result in results.values()])
    if named:
        summary["chosen_in_training"] = named
        tqdm.write("chosen in training on the validation rows, not cross-fitted: " + "; ".join(named))
    run.write_calibration(calibration)
    summary = {
        **summary,
        "folds_trained": fold_numbers,
        "classes": labels.classes,
        "seconds": round(seconds, 1),
        "folds": {  # pseudo_labels: test images joined per pseudo-labelling stage (when any)
            str(k): {
                "score": v["score"],
                "history": v["history"],
                **({"pseudo_labels": v["pseudo_labels"]} if v.get("pseudo_labels") else {}),
                **({"recipe": v["recipe"]} if v.get("recipe") else {}),
                **({"seeds": v["seeds"]} if v["seeds"] else {}),
            }
            for k, v in results.items()
        },
        # seeds each fold averages (--seeds N): kit predict averages each chosen file over them
        "seeds": max(len(v["seeds"]) for v in results.values()) or 1,
        # which stages ran, which were stopped or skipped and why (train.stop_when_worse), per fold
        "stages": {str(k): v["recipe"]["stages"] for k, v in results.items() if v.get("recipe")},
        "weights_rule": weights_rule(config),
        **({"prediction": prediction} if prediction else {}),
        "worse_stages": {str(k): found for k, v in results.items() if (found := worse_stages(v["history"]))},
    }
    run.write_summary(summary)
    return summary
