"""The embedded offline competition: scikit-learn's 1,797 real 8x8 digit scans, laid out like Kaggle.

Hooks (see kit.hooks.HOOKS): `download` builds the raw folder, `score` is the local leaderboard.
The answer key, solution.csv, is read by `score` alone; training and prediction never open it.
"""

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image


def download(raw_dir: Path) -> None:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    # 0..16 ink levels -> 0..255 grey, white digit on black, as scanned.
    images = np.clip(digits.images * 16, 0, 255).astype(np.uint8)
    ids = np.array([f"digit-{index:04d}" for index in range(len(images))])
    train_rows, test_rows = train_test_split(
        np.arange(len(images)), test_size=0.2, stratify=digits.target, random_state=0
    )
    for folder, rows in (("train", train_rows), ("test", test_rows)):
        (raw_dir / folder).mkdir(parents=True)
        for row in rows:
            Image.fromarray(images[row], mode="L").save(raw_dir / folder / f"{ids[row]}.png")
    pd.DataFrame({"id": ids[train_rows], "label": digits.target[train_rows]}).to_csv(
        raw_dir / "train.csv", index=False
    )
    test_ids = sorted(ids[test_rows])
    pd.DataFrame({"id": test_ids, "label": 0}).to_csv(raw_dir / "sample_submission.csv", index=False)
    answers = dict(zip(ids[test_rows], digits.target[test_rows], strict=True))
    pd.DataFrame({"id": test_ids, "label": [answers[i] for i in test_ids]}).to_csv(
        raw_dir / "solution.csv", index=False
    )


def score(submission: pd.DataFrame, raw_dir: Path) -> dict:
    solution = pd.read_csv(raw_dir / "solution.csv", dtype=str)
    merged = solution.merge(submission.astype(str), on="id", suffixes=("_true", "_predicted"))
    return {"accuracy": float((merged["label_true"] == merged["label_predicted"]).mean())}
