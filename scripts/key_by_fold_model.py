"""Each fold's model alone on a key against the average of the folds that the submission is: how much of
a gap between a `--fold all` run's CV and its key score is the folds' ensemble gain (the CV scores each
row with one fold's model; the file averages every fold's). Uncalibrated, with the upload's clip, from the
test views the run kept (fold-K/test-<file>.npy) and the prediction it chose (one weight file).

    .venv/bin/python scripts/key_by_fold_model.py RUN_DIR KEY_CSV SAMPLE_CSV CLIP

Then, as submitted (each fold's temperature, calibration.json's clip): the average's gain over the fold
models alone measured on the key, with its bootstrap interval, against kit.predict.fold_average's estimate
made without the key.
    # KEY_CSV: id,label (a class name, or 1/0 for the positive class of a binary competition)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from kit.metrics import clip_and_renormalise
from kit.predict import crossfit, fold_average, selection
from kit.tasks import SINGLE_LABEL


def main() -> None:
    run_dir, key_csv, sample_csv, clip = Path(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4])
    summary = json.loads((run_dir / "metrics.json").read_text())
    classes = summary["classes"]
    mean = json.loads((run_dir / "config.json").read_text())["predict"]["mean"]
    chosen = summary["prediction"]
    views, (name,) = tuple(chosen["views"]), chosen["weights"]
    ids = pd.read_csv(sample_csv, dtype={"id": str})["id"]
    key = pd.read_csv(key_csv, dtype={"id": str}).set_index("id")["label"].loc[ids]
    truth = np.array([classes.index(value) if isinstance(value, str) else int(value) for value in key])

    def loss(probabilities: np.ndarray) -> float:
        clipped = np.clip(probabilities, clip, 1 - clip)
        clipped = clipped / clipped.sum(1, keepdims=True)
        return float(-np.mean(np.log(clipped[np.arange(len(truth)), truth])))

    per_fold = []
    for fold in summary["folds_trained"]:
        test = np.load(run_dir / f"fold-{fold}" / f"test-{name}.npy").astype(np.float64)
        per_fold.append(selection.blend({name: test}, (name,), views, mean, task=SINGLE_LABEL))
    singles = [loss(probabilities) for probabilities in per_fold]
    print(f"single fold models on the key: {[round(s, 4) for s in singles]}, mean {np.mean(singles):.4f}")
    averaged = loss(selection.average(per_fold, mean, task=SINGLE_LABEL))
    print(f"their average (as submitted, uncalibrated): {averaged:.4f}")
    uncalibrated = summary["cv_uncalibrated_cross_fitted"]
    print(f"CV uncalibrated, cross-fitted: {uncalibrated:.4f}; reported CV {summary['cv']:.4f}")

    # As submitted (each fold's temperature, the clip calibration.json keeps): the gain of the average
    # measured on the key, and estimated without it from the fold models' disagreement (issue 26)
    calibration = json.loads((run_dir / "calibration.json").read_text())
    parts = dict(zip(summary["folds_trained"], per_fold, strict=True))
    scaled = fold_average.scaled_parts(parts, calibration["temperatures"])
    epsilon = calibration["epsilon"] if calibration["epsilon"] is not None else clip
    alone = np.array([row_losses(part, truth, epsilon) for part in scaled])  # fold models x rows
    together = row_losses(scaled.mean(0), truth, epsilon)
    gains = alone.mean(0) - together
    low, high = crossfit.bootstrap_interval(lambda draw: float(gains[draw].mean()), len(gains))
    print(
        f"as submitted: each fold model alone {alone.mean():.4f} (mean), the file {together.mean():.4f}: "
        f"the average gains {gains.mean():.4f} on the key (95% bootstrap interval {low:.4f}-{high:.4f}); "
        f"estimated without the key: {fold_average.expected_gain(scaled, epsilon):.4f}"
    )


def row_losses(probabilities: np.ndarray, truth: np.ndarray, epsilon: float) -> np.ndarray:
    """Each row's log loss with the clip, rows renormalised (as Kaggle scores a file)."""
    clipped = clip_and_renormalise(probabilities, epsilon)
    return -np.log(clipped[np.arange(len(truth)), truth])


if __name__ == "__main__":
    main()
