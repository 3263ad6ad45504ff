"""Cross-validation folds: stratified, seeded, written once to data/interim/<name>/folds.csv.

Stratified by what the task's labels are (`task.stratify`): classes (and grades) by scikit-learn's
StratifiedKFold, tags by iterative stratification (the `iterative-stratification` package: every tag's
share and every fold's size as even as it can), numbers by StratifiedKFold on quantile bins.
"""

from __future__ import annotations

import click
import numpy as np
import pandas as pd
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold
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


def assign_tag_folds(targets: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Fold number per row of a 0/1 tag matrix (N x T), each tag spread evenly over the folds."""
    if len(targets) < n_folds:
        raise click.ClickException(
            f"{len(targets)} images, fewer than train.folds = {n_folds}; lower train.folds"
        )
    folds = np.zeros(len(targets), dtype=np.int64)
    splitter = MultilabelStratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for fold, (_, validation_rows) in enumerate(splitter.split(np.zeros(len(targets)), targets)):
        folds[validation_rows] = fold
    return folds


def assign_binned_folds(values: np.ndarray, n_folds: int, seed: int, bins: int = 10) -> np.ndarray:
    """Fold number per row of a numeric target: stratified on quantile bins, so every fold sees the whole
    range. Fewer bins while a bin (ties) would hold fewer than n_folds rows."""
    binned = np.zeros(len(values), dtype=np.int64)  # one bin: plain shuffled folds
    for count in range(bins, 1, -1):
        edges = np.unique(np.quantile(values, np.linspace(0, 1, count + 1)[1:-1]))
        trial = np.searchsorted(edges, values, side="right")
        if np.bincount(trial).min() >= n_folds:
            binned = trial
            break
    return assign_folds(binned, n_folds, seed)


# task.stratify -> the splitter that fits its targets (kit.tasks)
SPLITTERS = {"classes": assign_folds, "tags": assign_tag_folds, "bins": assign_binned_folds}


def load_folds(config: Config, labels: LabelTable) -> np.ndarray:
    """Folds from data/interim/<name>/folds.csv; made (and written once) when missing or stale."""
    path = interim_dir(config.name) / "folds.csv"
    if path.exists():
        saved = pd.read_csv(path, dtype={"id": str})
        if list(saved["id"]) == labels.ids and saved["fold"].nunique() == config.train.folds:
            return saved["fold"].to_numpy(dtype=np.int64)
    folds = SPLITTERS[labels.task.stratify](labels.targets, config.train.folds, config.train.seed)
    table = pd.DataFrame(
        {"id": labels.ids, "label": labels.task.row_labels(labels.targets, labels.classes), "fold": folds}
    )
    with atomic_path(path) as temporary:
        table.to_csv(temporary, index=False)
    return folds
