"""Offline multi-label demo: scikit-learn's 1,797 digit scans, each tagged with what its digit is
(`even`, `big` (> 4), `prime`, `round` (a closed loop: 0 6 8 9), `straight` (1 4 7)), laid out like
Planet: train.csv `id,tags` with space-separated tags, a submission `id,tags`, F2 over images.

Hooks (kit.hooks.HOOKS): `download` builds the raw folder, `score` is the local leaderboard next to two
trivial baselines: the majority answer (the most common tag set of the training images, for every image)
and every tag for every image (recall 1, F2's favourite constant). solution.csv is read by `score` alone.
"""

from pathlib import Path

import pandas as pd

from kit.demos import write_digits

TAGS = {
    "even": {0, 2, 4, 6, 8},
    "big": {5, 6, 7, 8, 9},
    "prime": {2, 3, 5, 7},
    "round": {0, 6, 8, 9},
    "straight": {1, 4, 7},
}


def _tags(digit: int) -> str:
    return " ".join(tag for tag, digits in TAGS.items() if digit in digits)


def download(raw_dir: Path) -> None:
    write_digits(raw_dir, "tags", _tags, "even")


def _f2(true: pd.Series, predicted: pd.Series) -> float:
    from sklearn.metrics import fbeta_score
    from sklearn.preprocessing import MultiLabelBinarizer

    binarizer = MultiLabelBinarizer(classes=list(TAGS))
    truth = binarizer.fit_transform(true.fillna("").str.split())
    guess = binarizer.transform(predicted.fillna("").str.split())
    return float(fbeta_score(truth, guess, beta=2, average="samples", zero_division=1.0))


def score(submission: pd.DataFrame, raw_dir: Path) -> dict:
    solution = pd.read_csv(raw_dir / "solution.csv", dtype=str, keep_default_na=False)
    merged = solution.merge(submission.fillna("").astype(str), on="id", suffixes=("_true", "_predicted"))
    common = pd.read_csv(raw_dir / "train.csv", dtype=str)["tags"].mode()[0]
    true = merged["tags_true"]
    return {
        "f2_samples": _f2(true, merged["tags_predicted"]),
        "baseline f2_samples (most common tag set)": _f2(true, pd.Series([common] * len(merged))),
        "baseline f2_samples (every tag)": _f2(true, pd.Series([" ".join(TAGS)] * len(merged))),
    }
