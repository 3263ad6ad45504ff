"""Offline regression demo: scikit-learn's 1,797 digit scans with the digit's value as a number to
predict (0-9), laid out like PetFinder Pawpularity: train.csv `id,value`, a submission `id,value`, RMSE.

Hooks (kit.hooks.HOOKS): `download` builds the raw folder, `score` is the local leaderboard next to a
trivial baseline (the training mean for every image). solution.csv is read by `score` alone.
"""

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image


def download(raw_dir: Path) -> None:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.clip(digits.images * 16, 0, 255).astype(np.uint8)  # 0..16 ink -> 0..255 grey
    ids = np.array([f"digit-{index:04d}" for index in range(len(images))])
    train_rows, test_rows = train_test_split(
        np.arange(len(images)), test_size=0.2, stratify=digits.target, random_state=0
    )
    for folder, rows in (("train", train_rows), ("test", test_rows)):
        (raw_dir / folder).mkdir(parents=True)
        for row in rows:
            Image.fromarray(images[row], mode="L").save(raw_dir / folder / f"{ids[row]}.png")
    pd.DataFrame({"id": ids[train_rows], "value": digits.target[train_rows]}).to_csv(
        raw_dir / "train.csv", index=False
    )
    test_rows = test_rows[np.argsort(ids[test_rows])]
    pd.DataFrame({"id": ids[test_rows], "value": 0.0}).to_csv(raw_dir / "sample_submission.csv", index=False)
    pd.DataFrame({"id": ids[test_rows], "value": digits.target[test_rows]}).to_csv(
        raw_dir / "solution.csv", index=False
    )


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
