"""Cross-validation folds: stratified, seeded, written once to data/interim/<name>/folds.csv."""

from __future__ import annotations

import click
import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

from kit.config import Config
from kit.data.labels import LabelTable
from kit.files import atomic_path
from kit.paths import interim_dir


def assign_folds(targets: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Stratified fold number (0..n_folds-1) per row: a pure function of labels and seed."""
    counts = np.bincount(targets)
    if counts.min() < n_folds:
        raise click.ClickException(
            f"a class has only {counts.min()} images, fewer than train.folds = {n_folds}; lower train.folds"
        )
    folds = np.zeros(len(targets), dtype=np.int64)
    splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for fold, (_, validation_rows) in enumerate(splitter.split(np.zeros(len(targets)), targets)):
        folds[validation_rows] = fold
    return folds


def load_folds(config: Config, labels: LabelTable) -> np.ndarray:
    """Folds from data/interim/<name>/folds.csv; made (and written once) when missing or stale."""
    path = interim_dir(config.name) / "folds.csv"
    if path.exists():
        saved = pd.read_csv(path, dtype={"id": str})
        if list(saved["id"]) == labels.ids and saved["fold"].nunique() == config.train.folds:
            return saved["fold"].to_numpy(dtype=np.int64)
    folds = assign_folds(labels.targets, config.train.folds, config.train.seed)
    table = pd.DataFrame(
        {"id": labels.ids, "label": [labels.classes[t] for t in labels.targets], "fold": folds}
    )
    with atomic_path(path) as temporary:
        table.to_csv(temporary, index=False)
    return folds
