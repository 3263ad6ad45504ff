"""The embedded offline demos' data: scikit-learn's real 8x8 digit scans laid out like a Kaggle download
(train/ and test/ PNGs, train.csv, sample_submission.csv) plus solution.csv, the answer key a demo's
`score` hook alone reads. Each demo's hooks.py says only what its label is.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split


def write_digits(
    raw_dir: Path, column: str, label_of: Callable[[int], object], blank: object, digit_count: int = 10
) -> None:
    """Fill `raw_dir`: the scans of digits 0..digit_count-1, 80% in train/ (labelled in train.csv's
    `column` by `label_of(digit)`), 20% in test/ (sample_submission.csv holds `blank`), ids in order."""
    digits = load_digits(n_class=digit_count)
    images = np.clip(digits.images * 16, 0, 255).astype(np.uint8)  # 0..16 ink levels -> 0..255 grey
    ids = np.array([f"digit-{index:04d}" for index in range(len(images))])
    train_rows, test_rows = train_test_split(
        np.arange(len(images)), test_size=0.2, stratify=digits.target, random_state=0
    )
    for folder, rows in (("train", train_rows), ("test", test_rows)):
        (raw_dir / folder).mkdir(parents=True)
        for row in rows:
            Image.fromarray(images[row], mode="L").save(raw_dir / folder / f"{ids[row]}.png")
    labels = [label_of(int(digit)) for digit in digits.target]
    pd.DataFrame({"id": ids[train_rows], column: [labels[row] for row in train_rows]}).to_csv(
        raw_dir / "train.csv", index=False
    )
    test_rows = test_rows[np.argsort(ids[test_rows])]
    pd.DataFrame({"id": ids[test_rows], column: blank}).to_csv(raw_dir / "sample_submission.csv", index=False)
    pd.DataFrame({"id": ids[test_rows], column: [labels[row] for row in test_rows]}).to_csv(
        raw_dir / "solution.csv", index=False
    )
