"""Offline ordinal demo: the scans of digits 0-4 from scikit-learn's digits, each digit a grade (0-4) as in
APTOS 2019 Blindness Detection: train.csv `id,grade`, a submission `id,grade`, quadratic weighted kappa.

Hooks (kit.hooks.HOOKS): `download` builds the raw folder, `score` is the local leaderboard next to a
trivial baseline (the most common training grade for every image). solution.csv is read by `score` alone.
"""

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image


def download(raw_dir: Path) -> None:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits(n_class=5)  # digits 0..4 only: about 900 scans
    images = np.clip(digits.images * 16, 0, 255).astype(np.uint8)  # 0..16 ink -> 0..255 grey
    ids = np.array([f"digit-{index:04d}" for index in range(len(images))])
    train_rows, test_rows = train_test_split(
        np.arange(len(images)), test_size=0.2, stratify=digits.target, random_state=0
    )
    for folder, rows in (("train", train_rows), ("test", test_rows)):
        (raw_dir / folder).mkdir(parents=True)
        for row in rows:
            Image.fromarray(images[row], mode="L").save(raw_dir / folder / f"{ids[row]}.png")
    pd.DataFrame({"id": ids[train_rows], "grade": digits.target[train_rows]}).to_csv(
        raw_dir / "train.csv", index=False
    )
    test_rows = test_rows[np.argsort(ids[test_rows])]
    pd.DataFrame({"id": ids[test_rows], "grade": 0}).to_csv(raw_dir / "sample_submission.csv", index=False)
    pd.DataFrame({"id": ids[test_rows], "grade": digits.target[test_rows]}).to_csv(
        raw_dir / "solution.csv", index=False
    )


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
