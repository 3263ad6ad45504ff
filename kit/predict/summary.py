"""After training: which weight files and views predict (chosen on every trained fold's kept OOF), the
calibration and the CV summary, fitted once on the OOF of that choice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from kit import metrics
from kit.config import Config
from kit.data.labels import LabelTable
from kit.predict import calibrate, selection
from kit.predict.inference import prediction_weights
from kit.predict.tta import MIRROR_FIRST, view_names
from kit.run import FoldFolder, Run


def kept_oof(config: Config, folder: FoldFolder) -> dict[str, np.ndarray]:
    """A fold's kept per-view OOF probabilities of the weight files that predict, by file stem."""
    return {
        path.stem: np.load(folder.kept_oof(path.stem)).astype(np.float64)
        for path in prediction_weights(config, folder.folder)
    }


def select_prediction(
    config: Config, labels: LabelTable, run_dir: Path, fold_numbers: list[int], results: dict, oof: np.ndarray
) -> tuple[dict, np.ndarray]:
    """Which weight files and views predict (kit.predict.selection), chosen on every trained fold's OOF;
    and the OOF predictions of that choice (NaN rows where no fold predicted), as the test side will be."""
    run = Run(run_dir)
    kept = [kept_oof(config, run.fold(number)) for number in fold_numbers]
    targets = [labels.targets[results[number]["valid_rows"]] for number in fold_numbers]
    names = [path.stem for path in prediction_weights(config, run.fold(fold_numbers[0]).folder)]
    chosen = selection.choose(
        config.competition.metric,
        kept,
        targets,
        names,
        1 + config.predict.tta,
        config.predict.min_gain,
        labels.task,
        fewest_views=2 if config.augment.preset in MIRROR_FIRST else 1,
        mean=config.predict.mean,
    )
    view_names_all = view_names(config.augment.preset, config.predict.tta)
    chosen["view_names"] = [view_names_all[index] for index in chosen["views"]]
    chosen["forward_passes_per_image"] = chosen["cost"] * len(fold_numbers)
    default = chosen["default"]
    tqdm.write(
        f"prediction: {'+'.join(chosen['weights'])} x {'+'.join(chosen['view_names'])} "
        f"({chosen['forward_passes_per_image']} forward passes per test image; the default "
        f"{default['cost'] * len(fold_numbers)}), OOF {config.competition.metric} {chosen['score']:.4f} "
        f"(default {default['score']:.4f})"
    )
    chosen_oof = np.full_like(oof, np.nan)
    for number, fold_kept in zip(fold_numbers, kept, strict=True):
        rows = results[number]["valid_rows"]
        chosen_oof[rows] = selection.blend(
            fold_kept, tuple(chosen["weights"]), tuple(chosen["views"]), config.predict.mean, labels.task
        )
    return chosen, chosen_oof


def cv_summary(config: Config, labels: LabelTable, oof: np.ndarray, row_folds: np.ndarray) -> dict:
    """CV as submitted (calibrated per fold, upload clip included; decisions fitted on OOF) and uncalibrated,
    with the calibration and the decisions (thresholds, cut-points) the submission will apply.

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
        "calibration": calibration,
    }
