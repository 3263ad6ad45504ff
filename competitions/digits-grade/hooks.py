"""Offline ordinal demo: the scans of digits 0-4 from scikit-learn's digits, each digit a grade (0-4) as in
APTOS 2019 Blindness Detection: train.csv `id,grade`, a submission `id,grade`, quadratic weighted kappa.

Hooks (kit.hooks.HOOKS): `download` builds the raw folder, `score` is the local leaderboard next to a
trivial baseline (the most common training grade for every image). solution.csv is read by `score` alone.
"""

from pathlib import Path

import numpy as np
import pandas as pd

from kit.demos import write_digits


def download(raw_dir: Path) -> None:
    write_digits(raw_dir, "grade", int, 0, digit_count=5)  # digits 0..4: about 900 scans


def score(submission: pd.DataFrame, raw_dir: Path) -> dict:
    from sklearn.metrics import cohen_kappa_score

    solution = pd.read_csv(raw_dir / "solution.csv", dtype=str)
    merged = solution.merge(submission.astype(str), on="id", suffixes=("_true", "_predicted"))
    true = merged["grade_true"].astype(int)
    common = int(pd.read_csv(raw_dir / "train.csv")["grade"].mode()[0])
    return {
        "qwk": float(cohen_kappa_score(true, merged["grade_predicted"].astype(int), weights="quadratic")),
        "baseline qwk (most common grade)": float(
            cohen_kappa_score(true, np.full(len(true), common), weights="quadratic")
        ),
    }
