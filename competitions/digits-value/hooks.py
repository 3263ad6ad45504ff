"""Offline regression demo: scikit-learn's 1,797 digit scans with the digit's value as a number to
predict (0-9), laid out like PetFinder Pawpularity: train.csv `id,value`, a submission `id,value`, RMSE.

Hooks (kit.hooks.HOOKS): `download` builds the raw folder, `score` is the local leaderboard next to a
trivial baseline (the training mean for every image). solution.csv is read by `score` alone.
"""

from pathlib import Path

import numpy as np
import pandas as pd

from kit.demos import write_digits


def download(raw_dir: Path) -> None:
    write_digits(raw_dir, "value", int, 0.0)


def score(submission: pd.DataFrame, raw_dir: Path) -> dict:
    solution = pd.read_csv(raw_dir / "solution.csv", dtype={"id": str})
    predicted = submission.astype({"id": str}).assign(value=lambda f: pd.to_numeric(f["value"]))
    merged = solution.merge(predicted, on="id", suffixes=("_true", "_predicted"))
    mean = pd.read_csv(raw_dir / "train.csv")["value"].mean()
    true = merged["value_true"].to_numpy(dtype=float)
    return {
        "rmse": float(np.sqrt(np.mean((merged["value_predicted"].to_numpy(dtype=float) - true) ** 2))),
        "baseline rmse (training mean)": float(np.sqrt(np.mean((mean - true) ** 2))),
    }
