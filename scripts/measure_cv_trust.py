"""The CV a run reported against its answer-key score, and what cross-fitting reports for the same run.

For a finished, predicted run in a project (e.g. an arm of scripts/compare_recipe.py: --work W makes
W/quick/runs/...), this prints, on one line each: the CV the run recorded; the in-sample and the
cross-fitted figures of kit.predict.crossfit, computed from the run's kept OOF (weight files and views
chosen again, calibration fitted, on the other folds or the other half of one fold), with the CV's
bootstrap interval; the submission's log loss on the answer key with its bootstrap interval (test rows
resampled); and whether each CV falls inside the key's interval. Binary log-loss competitions
(cats-vs-dogs: answers.csv holds id,label with 1 for the positive class).

    KIT_PROJECT_ROOT=W/quick .venv/bin/python scripts/measure_cv_trust.py \
        --answers /work/shared/data/cats-vs-dogs-dev/answers.csv
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import click
import numpy as np
import pandas as pd

from kit.competitions import load_competition
from kit.data.labels import load_labels
from kit.predict import crossfit, selection
from kit.tasks import SINGLE_LABEL


@click.command()
@click.option("--competition", default="cats-vs-dogs", show_default=True)
@click.option("--answers", type=click.Path(exists=True, path_type=Path), required=True)
def main(competition: str, answers: Path) -> None:
    config = load_competition(competition)
    root = Path(os.environ["KIT_PROJECT_ROOT"])
    (run_dir,) = [p for p in (root / "runs" / competition).iterdir() if (p / "submission.json").exists()]
    summary = json.loads((run_dir / "metrics.json").read_text())
    labels = load_labels(config)
    classes = summary["classes"]
    targets = np.array([classes.index(labels.classes[target]) for target in labels.targets])
    clip = config.submission.clip_epsilon
    folds = summary["folds_trained"]
    rows_by_fold = [
        np.array(json.loads((run_dir / f"fold-{f}" / "result.json").read_text())["valid_rows"]) for f in folds
    ]
    names = sorted(path.stem.removeprefix("oof-") for path in (run_dir / "fold-0").glob("oof-*.npy"))
    kept_by_fold = [
        {name: np.load(run_dir / f"fold-{f}" / f"oof-{name}.npy").astype(np.float64) for name in names}
        for f in folds
    ]
    view_count = kept_by_fold[0][names[0]].shape[0]
    row_folds = np.full(len(targets), -1)
    for fold, rows in zip(folds, rows_by_fold, strict=True):
        row_folds[rows] = fold
    saved = json.loads((run_dir / "config.json").read_text())

    def choose(kept, truth):
        return selection.choose(
            "log_loss", kept, truth, names, view_count, saved["predict"]["min_gain"], SINGLE_LABEL,
            fewest_views=min(2, view_count), mean=saved["predict"]["mean"],
        )  # fmt: skip

    def blend(kept, chosen):
        return selection.blend(
            kept, tuple(chosen["weights"]), tuple(chosen["views"]), saved["predict"]["mean"],
            task=SINGLE_LABEL,
        )  # fmt: skip

    predictions_for = crossfit.refitted_selection(
        kept_by_fold, rows_by_fold, targets, len(targets), choose, blend
    )
    fields = crossfit.honest_cv(
        "log_loss", SINGLE_LABEL, targets, row_folds, predictions_for, clip, summary["cv"]
    )

    answer = pd.read_csv(answers, dtype={"id": str}).set_index("id")["label"]

    def key_score(frame: pd.DataFrame) -> tuple[float, tuple[float, float]]:
        """Log loss on the answer key with the upload's clip, and its bootstrap interval (rows resampled)."""
        probability = np.clip(frame["label"].to_numpy(dtype=float), clip, 1 - clip)
        truth = answer.loc[frame["id"]].to_numpy(dtype=int)
        losses = -(truth * np.log(probability) + (1 - truth) * np.log(1 - probability))
        return float(losses.mean()), crossfit.bootstrap_interval(
            lambda draw: float(losses[draw].mean()), len(losses)
        )

    record = json.loads((run_dir / "submission.json").read_text())
    calibrated = pd.read_csv(root / "submissions" / record["file"], dtype={"id": str})
    test_ids = pd.read_csv(root / "data" / "raw" / competition / "sample_submission.csv", dtype={"id": str})[
        "id"
    ]
    positive = classes.index(config.submission.positive_class)
    raw = pd.DataFrame({"id": test_ids, "label": np.load(run_dir / "test-probabilities.npy")[:, positive]})
    scores = {
        "calibrated (in-sample temperature)": key_score(calibrated),
        "uncalibrated (upload clip)": key_score(raw),
    }
    after = (
        "calibrated (in-sample temperature)"
        if fields.get("calibration_pays")
        else "uncalibrated (upload clip)"
    )

    def inside(value: float, interval: tuple[float, float]) -> str:
        return "inside" if interval[0] <= value <= interval[1] else "OUTSIDE"

    rows = int((row_folds >= 0).sum())
    own = (
        f"{fields['cv_interval'][0]:.4f}-{fields['cv_interval'][1]:.4f}"
        if "cv_interval" in fields
        else "not given (200+ rows)"
    )
    before_key, before_interval = scores["calibrated (in-sample temperature)"]
    after_key, after_interval = scores[after]
    print(f"run {run_dir.name}: {rows} validation rows (folds {folds})")
    for name, (value, interval) in scores.items():
        print(f"answer key, {name}: {value:.4f} (95% bootstrap interval {interval[0]:.4f}-{interval[1]:.4f})")
    print(
        f"before: reported CV {summary['cv']:.4f} (in sample), submitted calibrated: key {before_key:.4f}, "
        f"{inside(summary['cv'], before_interval)} its interval"
    )
    print(
        f"after: cross-fitted CV {fields['cv']:.4f} (by {fields['cv_cross_fitted_by']}; own interval {own}); "
        f"calibration pays cross-fitted: {fields['calibration_pays']} (uncalibrated cross-fitted "
        f"{fields['cv_uncalibrated_cross_fitted']:.4f}), so submitted {after}: key {after_key:.4f}, "
        f"{inside(fields['cv'], after_interval)} its interval"
    )


if __name__ == "__main__":
    main()
