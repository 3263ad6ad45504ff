"""Fold 0 alone of a finished cats-vs-dogs `--fold all` run, as if only fold 0 had been trained: its CV as
`kit train --fold 0` computes it (halves, 10 draws, selection and calibration refitted: kit.predict.crossfit)
and its own model's test prediction (fold-0/test-last.npy) on the answer key, with its bootstrap interval.

    KIT_PROJECT_ROOT=W/quick .venv/bin/python scripts/cv_of_one_fold.py ANSWERS_CSV
"""

import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from kit.competitions import load_competition
from kit.data.labels import load_labels
from kit.predict import calibrate, crossfit, selection
from kit.tasks import SINGLE_LABEL

root = Path(os.environ["KIT_PROJECT_ROOT"])
answers = sys.argv[1]
config = load_competition("cats-vs-dogs")
(run_dir,) = [p for p in (root / "runs" / "cats-vs-dogs").iterdir() if (p / "submission.json").exists()]
summary = json.loads((run_dir / "metrics.json").read_text())
classes = summary["classes"]
labels = load_labels(config)
targets = np.array([classes.index(labels.classes[t]) for t in labels.targets])
clip = config.submission.clip_epsilon
rows = np.array(json.loads((run_dir / "fold-0" / "result.json").read_text())["valid_rows"])
names = sorted(p.stem.removeprefix("oof-") for p in (run_dir / "fold-0").glob("oof-*.npy") if p.stem != "oof")
kept = {n: np.load(run_dir / "fold-0" / f"oof-{n}.npy").astype(np.float64) for n in names}
saved = json.loads((run_dir / "config.json").read_text())
mean = saved["predict"]["mean"]
views = kept[names[0]].shape[0]


def choose(k, t):
    return selection.choose(
        "log_loss",
        k,
        t,
        names,
        views,
        saved["predict"]["min_gain"],
        SINGLE_LABEL,
        fewest_views=min(2, views),
        mean=mean,
        default=["last"],
    )


def blend(k, c):
    return selection.blend(k, tuple(c["weights"]), tuple(c["views"]), mean)


row_folds = np.full(len(targets), -1)
row_folds[rows] = 0
chosen = choose([kept], [targets[rows]])
oof = np.full((len(targets), 2), np.nan)
oof[rows] = blend(kept, chosen)
in_sample_cal = calibrate.calibrate(oof[rows], targets[rows], clip)[:2]
in_sample = float(
    np.mean(
        -np.log(calibrate.apply_calibration(oof[rows], *in_sample_cal)[np.arange(len(rows)), targets[rows]])
    )
)
predictions_for = crossfit.refitted_selection([kept], [rows], targets, len(targets), choose, blend)
fields = crossfit.honest_cv("log_loss", SINGLE_LABEL, targets, row_folds, predictions_for, clip, in_sample)
print("fold 0 alone:", len(rows), "rows; chosen", chosen["weights"], chosen["views"])
print({k: fields[k] for k in fields})
test = np.load(run_dir / "fold-0" / f"test-{chosen['weights'][0]}.npy").astype(np.float64)
assert chosen["weights"] == ["last"], "only last.npy's test views are kept"
probabilities = selection.blend({"last": test}, ("last",), tuple(chosen["views"]), mean)
if fields["calibration_pays"]:
    probabilities = calibrate.apply_calibration(probabilities, *in_sample_cal)
positive = classes.index("dog")
ids = pd.read_csv(root / "data" / "raw" / "cats-vs-dogs" / "sample_submission.csv", dtype={"id": str})["id"]
truth = pd.read_csv(answers, dtype={"id": str}).set_index("id")["label"].loc[ids].to_numpy(int)
p = np.clip(probabilities[:, positive], clip, 1 - clip)
losses = -(truth * np.log(p) + (1 - truth) * np.log(1 - p))
low, high = crossfit.bootstrap_interval(lambda d: float(losses[d].mean()), len(losses))
kind = "calibrated" if fields["calibration_pays"] else "uncalibrated"
where = "inside" if low <= fields["cv"] <= high else "OUTSIDE"
print(
    f"key (fold 0's model, {kind}): {losses.mean():.4f} [{low:.4f}-{high:.4f}]; CV {fields['cv']:.4f} {where}"
)
