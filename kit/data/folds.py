"""Cross-validation folds: stratified, seeded, grouped where asked, written once to data/interim/<name>.

Stratified by what the task's labels are (`task.stratify`): classes (and grades) by scikit-learn's
StratifiedKFold, tags by iterative stratification (the `iterative-stratification` package: every tag's
share and every fold's size as even as it can), numbers by StratifiedKFold on quantile bins. With groups
(kit.data.groups: `data.group_column`, a hooks.py `groups`, near-duplicates) no group is split: classes
and bins by StratifiedGroupKFold, tags by iterative stratification over the groups' tag sets.

folds.csv is the record runs use; folds.json beside it says which seed, fold count and groups made it and
a digest of what the kit wrote. A split the kit made is made again when those settings change; a split
made or edited by hand (its digest differs, or there is no folds.json) is never overwritten: it is
checked (every id once, folds 0..train.folds-1, -1 for rows that train in every fold and never
validate, no group split) and used, or refused in one line naming the fix.
"""

from __future__ import annotations

import hashlib
import sys
import warnings

import numpy as np
import pandas as pd
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from tqdm import tqdm

from kit.config import Config
from kit.data import duplicates
from kit.data import groups as group_sources
from kit.data.labels import LabelTable, parse_csv
from kit.errors import KitError
from kit.files import atomic_path, read_json, write_json
from kit.paths import interim_dir

HELD_OUT = -1  # a folds.csv row of fold -1 trains in every fold and is never validated (no OOF row)


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


def _check_group_count(groups: np.ndarray, n_folds: int) -> None:
    count = len(np.unique(groups))
    if count < n_folds:
        raise KitError(
            f"train.folds = {n_folds}: the images form {count} groups, and a fold needs a whole group; "
            f"set train.folds to at most {count}" + (" (or add groups)" if count < 2 else "")
        )


def _fold_numbers(splits, row_count: int, n_folds: int) -> np.ndarray:
    folds = np.full(row_count, HELD_OUT, dtype=np.int64)
    for fold, (_, validation_rows) in enumerate(splits):
        folds[validation_rows] = fold
    if (np.bincount(folds, minlength=n_folds) == 0).any():  # a grouped split can leave a fold empty
        raise KitError(
            f"train.folds = {n_folds}: the groups are too uneven to fill every fold; lower train.folds"
        )
    return folds


def assign_folds(
    targets: np.ndarray,
    n_folds: int,
    seed: int,
    classes: list[str] | None = None,
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """Stratified fold number (0..n_folds-1) per row: a pure function of labels, groups and seed.

    A class with fewer images than folds is spread over as many folds as it has images (scikit-learn
    allows it while some class fills every fold); only a split scikit-learn cannot make is refused. With
    `groups` (an integer per row), rows of one group always share a fold (StratifiedGroupKFold).
    """
    classes = classes or [str(index) for index in range(int(targets.max()) + 1)]
    counts = np.bincount(targets)
    if len(targets) < n_folds or counts.max() < n_folds:
        largest, most = classes[int(counts.argmax())], int(counts.max())
        fix = f"set train.folds to at most {most}" if most >= 2 else "add images (every class has one)"
        raise KitError(
            f"train.folds = {n_folds}: a split needs a class with at least {n_folds} images, and the "
            f"largest, {largest!r}, has {most}; {fix}"
        )
    rows = np.zeros(len(targets))
    if groups is None:
        splits = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed).split(rows, targets)
    else:
        _check_group_count(groups, n_folds)
        splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        splits = splitter.split(rows, targets, groups)
    with warnings.catch_warnings():  # "the least populated class has only N members": named by small_classes
        warnings.simplefilter("ignore", UserWarning)
        return _fold_numbers(list(splits), len(targets), n_folds)


def assign_tag_folds(
    targets: np.ndarray, n_folds: int, seed: int, groups: np.ndarray | None = None
) -> np.ndarray:
    """Fold number per row of a 0/1 tag matrix (N x T), each tag spread evenly over the folds.

    With `groups`, the groups are stratified (a group carries every tag any of its rows has) and each
    row takes its group's fold: fold sizes are then even in groups, not rows.
    """
    if len(targets) < n_folds:
        raise KitError(f"{len(targets)} images, fewer than train.folds = {n_folds}; lower train.folds")
    splitter = MultilabelStratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    if groups is None:
        return _fold_numbers(splitter.split(np.zeros(len(targets)), targets), len(targets), n_folds)
    _check_group_count(groups, n_folds)
    codes, row_group = np.unique(groups, return_inverse=True)
    group_tags = np.zeros((len(codes), targets.shape[1]), dtype=targets.dtype)
    np.maximum.at(group_tags, row_group, targets)
    group_folds = _fold_numbers(splitter.split(np.zeros(len(codes)), group_tags), len(codes), n_folds)
    return group_folds[row_group]


def assign_binned_folds(
    values: np.ndarray, n_folds: int, seed: int, bins: int = 10, groups: np.ndarray | None = None
) -> np.ndarray:
    """Fold number per row of a numeric target: stratified on quantile bins, so every fold sees the whole
    range. Fewer bins while a bin (ties) would hold fewer than n_folds rows. Groups as in assign_folds."""
    binned = np.zeros(len(values), dtype=np.int64)  # one bin: plain shuffled folds
    for count in range(bins, 1, -1):
        edges = np.unique(np.quantile(values, np.linspace(0, 1, count + 1)[1:-1]))
        trial = np.searchsorted(edges, values, side="right")
        if np.bincount(trial).min() >= n_folds:
            binned = trial
            break
    return assign_folds(binned, n_folds, seed, groups=groups)


# task.stratify -> the splitter that fits its targets (kit.tasks)
SPLITTERS = {"classes": assign_folds, "tags": assign_tag_folds, "bins": assign_binned_folds}


def split(labels: LabelTable, n_folds: int, seed: int, groups: np.ndarray | None = None) -> np.ndarray:
    """The folds the task's splitter makes (classes are named in its errors)."""
    if labels.task.stratify == "classes":
        return assign_folds(labels.targets, n_folds, seed, labels.classes, groups)
    return SPLITTERS[labels.task.stratify](labels.targets, n_folds, seed, groups=groups)


def balance_line(folds: np.ndarray, labels: LabelTable) -> str:
    """How even the folds came out, in one line: rows per fold, and the class (tag, bin) whose share in
    some fold is furthest from its share of the whole, in percentage points."""
    validated = folds >= 0
    sizes = np.bincount(folds[validated])
    names = labels.task.fold_groups(labels.targets, labels.classes)
    table = pd.DataFrame({"name": names, "fold": folds}).loc[validated].explode("name")
    whole = table["name"].value_counts() / validated.sum()
    shares = pd.crosstab(table["name"], table["fold"]) / sizes  # a tag counts in every row that has it
    gaps = shares.sub(whole, axis=0).abs()
    name, fold = gaps.stack().idxmax()
    line = (
        f"folds: {len(sizes)} of {sizes.min()}-{sizes.max()} rows; every share within "
        f"{100 * gaps.to_numpy().max():.1f} points of the whole (furthest: {name!r} "
        f"{100 * shares.loc[name, fold]:.1f}% in fold {fold} vs {100 * whole[name]:.1f}%)"
    )
    held = int((~validated).sum())
    return line + (f"; {held} rows of fold -1 train in every fold and never validate" if held else "")


def _digest(ids: list[str], folds: np.ndarray) -> str:
    """What the kit wrote, so that a later edit by hand is told from the kit's own file."""
    digest = hashlib.sha256("\n".join(ids).encode())
    digest.update(np.asarray(folds, dtype=np.int64).tobytes())
    return digest.hexdigest()[:16]


def _settings(config: Config) -> dict:
    """What folds.json records beside the digest: a change to any of these makes new (kit) folds."""
    return {
        "seed": config.train.seed,
        "folds": config.train.folds,
        "group_column": group_sources.group_source(config),
        "duplicates": config.data.duplicates,
    }


def row_groups(config: Config, labels: LabelTable) -> np.ndarray | None:
    """Each row's group for the split: the group column or hook, near-duplicates joined when asked."""
    groups = group_sources.read_groups(config, labels)
    if config.data.duplicates == "group":
        pairs = duplicates.train_pairs(config, labels)
        joined = group_sources.join_groups(groups, pairs, len(labels.ids))
        tqdm.write(
            f"folds: {len(pairs)} near-duplicate pairs joined; {len(labels.ids)} images in "
            f"{len(np.unique(joined))} groups (data.duplicates = 'group')",
            file=sys.stderr,
        )
        return joined
    return groups


def _hand_made(path, saved: pd.DataFrame, record: dict, config: Config, labels: LabelTable) -> np.ndarray:
    """A split made or edited by hand: checked and used as it is (in the labels' row order), or refused in
    one line naming the file, what is wrong and the fix. It is never overwritten."""
    away = "or move the file away to make the kit's folds"
    if not {"id", "fold"} <= set(saved.columns):
        raise KitError(
            f"{path}: no 'id' and 'fold' columns (columns: {', '.join(saved.columns)}); fix the header, "
            + away
        )
    ids = saved["id"].str.strip()
    repeated = ids[ids.duplicated()]
    if len(repeated):
        raise KitError(f"{path}: id {repeated.iloc[0]!r} is listed twice; keep one row, {away}")
    missing = sorted(set(labels.ids) - set(ids))
    extra = sorted(set(ids) - set(labels.ids))
    if missing or extra:
        example = f"{missing[0]!r} missing" if missing else f"{extra[0]!r} is not a training image"
        raise KitError(
            f"{path}: made by hand for other images ({len(missing)} training ids missing, {len(extra)} "
            f"unknown: {example}); list every training id once, {away}"
        )
    written = saved["fold"].str.strip()
    bad = written[~written.str.fullmatch(r"-?\d+")]
    numbers = pd.to_numeric(written.where(written.str.fullmatch(r"-?\d+")), errors="coerce")
    bad = bad if len(bad) else written[numbers < HELD_OUT]
    if len(bad):
        raise KitError(
            f"{path} row {bad.index[0] + 2}: fold {bad.iloc[0]!r} is not a fold number; write 0.."
            f"{config.train.folds - 1}, or -1 for a row that trains in every fold and never validates"
        )
    folds = pd.Series(numbers.to_numpy(dtype=np.int64), index=ids).loc[labels.ids].to_numpy()
    present = sorted(set(folds[folds >= 0].tolist()))
    if present != list(range(config.train.folds)):
        count = max(present, default=-1) + 1
        numbered = present == list(range(count)) and count >= 2
        fix = f"set train.folds = {count}" if numbered else "renumber them"
        raise KitError(
            f"{path} (made by hand) validates folds {present}, and train.folds = {config.train.folds} needs "
            f"0..{config.train.folds - 1}: {fix}, {away}"
        )
    made_with = record.get("seed")
    if made_with is not None and made_with != config.train.seed:
        raise KitError(
            f"{path} was made with train.seed = {made_with} and then edited; train.seed = "
            f"{config.train.seed} would make other folds: keep the file and set train.seed = {made_with}, "
            f"or move the file away to make folds with seed {config.train.seed}"
        )
    groups = group_sources.read_groups(config, labels)
    if groups is not None:
        for code in np.unique(groups):
            spread = np.unique(folds[groups == code])
            if len(spread) > 1:
                first = labels.ids[int(np.flatnonzero(groups == code)[0])]
                raise KitError(
                    f"{path} (made by hand) puts one group ({group_sources.group_source(config)}, the "
                    f"group of {first!r}) in folds {spread.tolist()}; give its rows one fold, {away}"
                )
    return folds


def load_folds(config: Config, labels: LabelTable) -> np.ndarray:
    """Folds from data/interim/<name>/folds.csv; made (and written once) when missing, or when the kit
    made them for other ids, labels, seed, fold count or groups. A split made or edited by hand is kept
    (checked by _hand_made)."""
    path = interim_dir(config.name) / "folds.csv"
    record_path = path.with_suffix(".json")
    settings = _settings(config)
    if path.exists():
        saved = parse_csv(path, "move it away to make new folds", dtype=str, keep_default_na=False)
        record = read_json(record_path) if record_path.exists() else {}
        columns_fit = {"id", "label", "fold"} <= set(saved.columns)
        numbers_fit = columns_fit and saved["fold"].str.fullmatch(r"\d+").all()
        folds = saved["fold"].to_numpy(dtype=np.int64) if numbers_fit else None
        same_rows = (
            numbers_fit
            and list(saved["id"]) == labels.ids
            and list(saved["label"]) == labels.task.row_labels(labels.targets, labels.classes)
        )
        if "digest" in record:
            kit_made = numbers_fit and record["digest"] == _digest(list(saved["id"]), folds)
        elif record and same_rows:  # an older kit's record, without a digest: its seed and count remake it
            kit_made = np.array_equal(folds, split(labels, record.get("folds", 0) or 2, record["seed"]))
        elif record:
            kit_made = True  # an older kit's folds for other images
        else:  # no record: the kit's own split for these settings (an older kit's file), or the user's
            kit_made = same_rows and np.array_equal(
                folds, split(labels, config.train.folds, config.train.seed, row_groups(config, labels))
            )
            if kit_made:
                write_json(record_path, {**settings, "digest": _digest(labels.ids, folds)})
                return folds
        if not kit_made:
            folds = _hand_made(path, saved, record, config, labels)
            held = int((folds == HELD_OUT).sum())
            tqdm.write(
                f"folds: {path} was made or edited by hand: used as it is"
                + (f" ({held} rows of fold -1 train in every fold and never validate)" if held else ""),
                file=sys.stderr,
            )
            return folds
        if same_rows and all(record.get(key) == value for key, value in settings.items()):
            return folds
    folds = split(labels, config.train.folds, config.train.seed, row_groups(config, labels))
    notice = (
        small_classes(labels.targets, labels.classes, config.train.folds)
        if labels.task.stratify == "classes"
        else ""
    )
    if notice:
        tqdm.write(f"folds: {notice}", file=sys.stderr)
    label_names = labels.task.row_labels(labels.targets, labels.classes)
    table = pd.DataFrame({"id": labels.ids, "label": label_names, "fold": folds})
    with atomic_path(path) as temporary:
        table.to_csv(temporary, index=False)
    write_json(record_path, {**settings, "digest": _digest(labels.ids, folds)})
    return folds
