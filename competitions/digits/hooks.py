"""The embedded offline competition: scikit-learn's 1,797 real 8x8 digit scans, laid out like Kaggle.

Hooks (see kit.hooks.HOOKS): `download` builds the raw folder, `score` is the local leaderboard.
The answer key, solution.csv, is read by `score` alone; training and prediction never open it.
"""

from pathlib import Path

import pandas as pd

from kit.demos import write_digits


def download(raw_dir: Path) -> None:
    write_digits(raw_dir, "label", int, 0)


def score(submission: pd.DataFrame, raw_dir: Path) -> dict:
    solution = pd.read_csv(raw_dir / "solution.csv", dtype=str)
    merged = solution.merge(submission.astype(str), on="id", suffixes=("_true", "_predicted"))
    return {"accuracy": float((merged["label_true"] == merged["label_predicted"]).mean())}
