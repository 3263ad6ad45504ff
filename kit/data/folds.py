"""Cross-validation folds: stratified, seeded, written once to data/interim/<name>/folds.csv.

Stratified by what the task's labels are (`task.stratify`): classes (and grades) by scikit-learn's
StratifiedKFold, tags by iterative stratification (the `iterative-stratification` package: every tag's
share and every fold's size as even as it can), numbers by StratifiedKFold on quantile bins.

folds.csv is the record runs use (a hand-edited split is kept); folds.json beside it says which seed and
fold count made it, so that changing train.seed or train.folds makes new folds instead of silently keeping
the old ones while the run records the new seed.
"""

from __future__ import annotations

import warnings

import click
import numpy as np
import pandas as pd
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold
from sklearn.model_selection import StratifiedKFold

from kit.config import Config
from kit.data.labels import LabelTable, parse_csv
from kit.files import atomic_path, read_json, write_json
from kit.paths import interim_dir


def small_classes(targets: np.ndarray, classes: list[str], n_folds: int) -> str:
    """'' when every class has at least n_folds images, else one line naming each smaller class."""
    counts = np.bincount(targets, minlength=len(classes))
    small = [f"{classes[index]!r} ({counts[index]})" for index in np.flatnonzero(counts < n_folds)]
    if not small:
        return ""
    return (
        f"{len(small)} classes have fewer images than train.folds = {n_folds}, so some folds validate "
        f"without them: {', '.join(small)}"
    )


def assign_folds(
    targets: np.ndarray, n_folds: int, seed: int, classes: list[str] | None = None
) -> np.ndarray:
    """Stratified fold number (0..n_folds-1) per row: a pure function of labels and seed.

    A class with fewer images than folds is spread over as many folds as it has images (scikit-learn
    allows it while some class fills every fold); only a split scikit-learn cannot make is refused.
    """
    classes = classes or [str(index) for index in range(int(targets.max()) + 1)]
    counts = np.bincount(targets)
    if len(targets) < n_folds or counts.max() < n_folds:
        largest, most = classes[int(counts.argmax())], int(counts.max())
        fix = f"set train.folds to at most {most}" if most >= 2 else "add images (every class has one)"
        raise click.ClickException(
            f"train.folds = {n_folds}: a split needs a class with at least {n_folds} images, and the "
            f"largest, {largest!r}, has {most}; {fix}"
        )
    folds = np.zeros(len(targets), dtype=np.int64)
    splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # "the least populated class has only N members": named by small_classes
        warnings.simplefilter("ignore", UserWarning)
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


def split(labels: LabelTable, n_folds: int, seed: int) -> np.ndarray:
    """The folds the task's splitter makes (classes are named in its errors)."""
    if labels.task.stratify == "classes":
        return assign_folds(labels.targets, n_folds, seed, labels.classes)
    return SPLITTERS[labels.task.stratify](labels.targets, n_folds, seed)


def load_folds(config: Config, labels: LabelTable) -> np.ndarray:
    """Folds from data/interim/<name>/folds.csv; made (and written once) when missing or stale.

    Stale: other ids or labels, another fold count, or made by the kit with another seed. A split edited
    by hand is kept while the seed is the one it was made with; with another seed it is refused (the
    kit cannot tell what the user wants), naming the fix.
    """
    path = interim_dir(config.name) / "folds.csv"
    record_path = path.with_suffix(".json")
    n_folds, seed = config.train.folds, config.train.seed
    label_names = labels.task.row_labels(labels.targets, labels.classes)
    made = None
    if path.exists():
        saved = parse_csv(path, "move it away to make new folds", dtype=str, keep_default_na=False)
        record = read_json(record_path) if record_path.exists() else {}
        same_rows = (
            {"id", "label", "fold"} <= set(saved.columns)
            and list(saved["id"]) == labels.ids
            and list(saved["label"]) == label_names
            and saved["fold"].str.fullmatch(r"\d+").all()
        )
        if same_rows and saved["fold"].astype(int).nunique() == n_folds:
            folds = saved["fold"].to_numpy(dtype=np.int64)
            made_with = record.get("seed")
            if made_with == seed:
                return folds
            made = split(labels, n_folds, seed)
            if np.array_equal(folds, made):  # an older kit's file, or the same split: record it
                write_json(record_path, {"seed": seed, "folds": n_folds})
                return folds
            kit_made = made_with is not None and np.array_equal(folds, split(labels, n_folds, made_with))
            if not kit_made:
                was = (
                    f"made with train.seed = {made_with} and then edited"
                    if made_with is not None
                    else ("not made with this seed (edited by hand, or made by an older kit)")
                )
                keep = made_with if made_with is not None else "(the seed that made it)"
                raise click.ClickException(
                    f"{path} was {was}; train.seed = {seed} would make other folds: keep the file and set "
                    f"train.seed = {keep}, or move the file away to make folds with seed {seed}"
                )
    folds = made if made is not None else split(labels, n_folds, seed)
    notice = (
        small_classes(labels.targets, labels.classes, n_folds) if labels.task.stratify == "classes" else ""
    )
    if notice:
        click.echo(f"folds: {notice}", err=True)
    table = pd.DataFrame({"id": labels.ids, "label": label_names, "fold": folds})
    with atomic_path(path) as temporary:
        table.to_csv(temporary, index=False)
    write_json(record_path, {"seed": seed, "folds": n_folds})
    return folds
