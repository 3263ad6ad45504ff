"""A competition's raw download read: the image folders, where the labels are (a label CSV, one folder per
class, or the file names), the kind of task their values say, what sample_submission.csv asks for, and
the obvious group column. `inspect(raw_dir)` only reads; `kit.kaggle.scaffold` writes the TOML from it.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kit.data.groups import obvious_group_column
from kit.data.labels import parse_csv
from kit.errors import KitError

MIN_GROUPS = 3  # fewer distinct values than this: a 0/1 flag, not groups of images

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")
# Column names that usually hold the class, best first; otherwise the column with fewest distinct values.
LABEL_COLUMN_HINTS = ("label", "labels", "class", "category", "breed", "species", "target", "type")
FILENAME_SEPARATORS = (".", "_", "-")  # cat.12.jpg, cat_12.jpg, cat-12.jpg
ID_MATCH_SHARE = 0.9  # share of a CSV column's values that must name training images to be the id column
DEFAULT_FOLDS = 5
# What the label column's values say about the task (kit.tasks): tags when this share of them holds a
# space; grades when they are 3 to ORDINAL_MAX_GRADES consecutive integers; a number to predict when
# numeric with fractions or at least REGRESSION_MIN_VALUES distinct values. Each guess prints a check: line.
MULTI_LABEL_SHARE = 0.05
ORDINAL_MAX_GRADES = 6
REGRESSION_MIN_VALUES = 20


@dataclass(frozen=True)
class Layout:
    """What a raw download holds, as competition.toml's [data] and [submission] tables."""

    data: dict  # keys of kit.config.DataSection
    submission: dict  # keys of kit.config.SubmissionSection
    class_counts: dict  # training images per class name (per tag, per grade; per value for a regression)
    notes: tuple[str, ...] = ()  # what a person should check
    task: str = "single_label"  # kit.config.TaskName, from the label column's values
    test_dirs: tuple[str, ...] = ()  # more test folders than data.test_dir, when the test images are split


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _image_count(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def find_image_folder(raw_dir: Path, word: str) -> Path:
    """The folder named word* (at most two levels down) with the most images: train/, images/train/."""
    candidates = [p for p in [*raw_dir.glob("*"), *raw_dir.glob("*/*")] if p.name.lower().startswith(word)]
    counted = [(count, p) for p in candidates if p.is_dir() and (count := _image_count(p))]
    if not counted:
        raise KitError(
            f"{raw_dir}: no folder named {word}* with images found; "
            f"write data.{word}_dir in competition.toml by hand"
        )
    return max(counted, key=lambda pair: (pair[0], -len(pair[1].parts)))[1]


def find_sample_submission(raw_dir: Path) -> Path:
    """sample_submission.csv, sampleSubmission.csv, sample_submission_v2.csv ..."""
    found = [
        p
        for p in sorted(raw_dir.glob("*.csv"))
        if "samplesubmission" in re.sub(r"[^a-z]", "", p.stem.lower())
    ]
    if not found:
        raise KitError(
            f"{raw_dir}: no sample_submission*.csv; "
            "kit needs one to know the submission's columns and test ids"
        )
    return found[0]


def _class_folders(train_dir: Path) -> dict[str, int]:
    return {p.name: count for p in sorted(train_dir.iterdir()) if p.is_dir() and (count := len(_images(p)))}


def _label_csv(
    raw_dir: Path, train_dir: Path, sample: Path, preferred: str | None = None
) -> tuple[Path, str, str] | None:
    """(csv, id column, label column) for a CSV whose id column names the training images, else None.

    The label column is the sample submission's value column when the CSV has it (`preferred`:
    Pawpularity's train.csv also holds twelve 0/1 photo features), else a hinted name, else the column
    with the fewest distinct values."""
    images = _images(train_dir)
    names = {p.name for p in images} | {p.stem for p in images}
    for path in sorted(raw_dir.glob("*.csv")):
        if path == sample:
            continue
        try:
            table = parse_csv(path, dtype=str, keep_default_na=False, nrows=2000)
        except KitError:  # not the label table (another encoding, not a CSV): look on
            continue
        if len(table.columns) < 2 or table.empty:
            continue
        head = table.head(200)
        id_columns = [c for c in table.columns if head[c].isin(names).mean() >= ID_MATCH_SHARE]
        if not id_columns:
            continue
        others = [c for c in table.columns if c != id_columns[0] and 1 < table[c].nunique() < len(table)]
        if not others:
            continue
        hinted = [c for c in others if c == preferred]
        hinted += [c for hint in LABEL_COLUMN_HINTS for c in others if c.lower() == hint]
        label_column = (hinted or sorted(others, key=lambda c: table[c].nunique()))[0]
        return path, id_columns[0], label_column
    return None


def _filename_labels(train_dir: Path) -> tuple[str, Counter] | None:
    """(pattern, images per class) when names look like <class><separator><rest>, e.g. cat.12.jpg."""
    stems = [p.stem for p in _images(train_dir)]
    for separator in FILENAME_SEPARATORS:
        if not stems or not all(separator in stem for stem in stems):
            continue
        counts = Counter(stem.split(separator, 1)[0] for stem in stems)
        if 2 <= len(counts) <= len(stems) // 2:
            escaped = re.escape(separator)
            return f"^(?P<label>[^{escaped}]+){escaped}", counts
    return None


def infer_task(values: pd.Series) -> tuple[str, list[str]]:
    """(task, check notes) from a label column's values: tags, grades, a number, or classes."""
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.notna().all():
        distinct = np.sort(numbers.unique())
        integers = bool((distinct == np.round(distinct)).all())
        consecutive = integers and bool((np.diff(distinct) == 1).all())
        if consecutive and 3 <= len(distinct) <= ORDINAL_MAX_GRADES:
            grades = f"{distinct[0]:g}-{distinct[-1]:g}"
            return "ordinal", [
                f"task = 'ordinal': the labels are the grades {grades}, read as an ordered scale "
                "(metric qwk); if they are unordered classes, set task = 'single_label' and its metric"
            ]
        if not integers or len(distinct) >= REGRESSION_MIN_VALUES:
            return "regression", [
                f"task = 'regression': the labels are numbers ({distinct[0]:g} to {distinct[-1]:g}, "
                f"{len(distinct)} values), metric rmse: compare with the Evaluation page"
            ]
        return "single_label", []
    if values.str.strip().str.contains(r"\s").mean() >= MULTI_LABEL_SHARE:
        return "multi_label", [
            "task = 'multi_label': the labels are space-separated tags, metric f2_samples (F2 per image); "
            "compare with the Evaluation page"
        ]
    return "single_label", []


def infer_labels(
    raw_dir: Path, train_dir: Path, sample: Path, preferred: str | None = None
) -> tuple[dict, dict, str, list[str]]:
    """([data] keys, images per class (tag, grade, value), task, notes), trying in turn: class folders, a
    label CSV (whose values tell the task), file names."""
    folders = _class_folders(train_dir)
    if len(folders) >= 2 and not _images(train_dir):
        return {"labels": "folders"}, folders, "single_label", []
    found = _label_csv(raw_dir, train_dir, sample, preferred)
    if found:
        path, id_column, label_column = found
        table = parse_csv(path, dtype=str, keep_default_na=False)
        values = table[label_column]
        task, notes = infer_task(values)
        counts = Counter(values.str.split().explode() if task == "multi_label" else values)
        data = {
            "labels": "csv",
            "labels_csv": path.name,
            "id_column": id_column,
            "label_column": label_column,
        }
        group = group_column_of(table, id_column, label_column)
        if group:  # photos of one patient (animal, scene) in two folds would flatter CV
            data["group_column"] = group
        return data, counts, task, notes
    named = _filename_labels(train_dir)
    if named:
        return {"labels": "filenames", "filename_pattern": named[0]}, named[1], "single_label", []
    raise KitError(
        f"{train_dir}: cannot tell where the labels are (no class folders, no CSV naming these images, no "
        "<class>.<n> file names); set data.labels, data.labels_csv and the columns by hand"
    )


def infer_submission(sample: pd.DataFrame, classes: list[str]) -> tuple[dict, list[str]]:
    """([submission] keys, notes): probabilities per class, P(positive) or a label, as the sample asks."""
    id_column, value_columns = sample.columns[0], list(sample.columns[1:])
    if len(value_columns) >= 2:
        unknown = sorted(set(value_columns) - set(classes))
        if unknown:
            raise KitError(
                f"sample submission columns {unknown[:3]} are not training classes "
                f"({', '.join(classes[:5])} ...); "
                "kit writes one probability column per class, id + P(positive), or id + label"
            )
        return {"format": "probabilities", "id_column": id_column}, []
    if not value_columns:
        raise KitError("the sample submission has only an id column; kit needs a value column")
    column = value_columns[0]
    values, numbers = sample[column], pd.to_numeric(sample[column], errors="coerce")
    probabilities = numbers.notna().all() and numbers.between(0, 1).all() and not values.isin(classes).all()
    if len(classes) == 2 and probabilities:
        named = [c for c in classes if c.lower() in column.lower()]
        positive = named[0] if len(named) == 1 else sorted(classes)[1]
        guess = f"submission.positive_class = {positive!r} is a guess: is '{column}' P({positive})?"
        binary = {
            "format": "binary",
            "id_column": id_column,
            "label_column": column,
            "positive_class": positive,
        }
        return binary, [] if len(named) == 1 else [guess]
    return {"format": "label", "id_column": id_column, "label_column": column}, []


def group_column_of(table: pd.DataFrame, id_column: str, label_column: str) -> str:
    """The labels CSV's obvious group column, or ''. A group names several images each: a flag named like
    one (Pawpularity's 0/1 'Group' photo feature) or a column of all-distinct values is no grouping."""
    group = obvious_group_column([c for c in table.columns if c not in (id_column, label_column)])
    distinct = table[group].nunique() if group else 0
    return group if group and MIN_GROUPS <= distinct < len(table) else ""


def inspect(raw_dir: Path) -> Layout:
    """Read a raw download's layout; one-line errors say which key to set by hand when a guess fails."""
    train_dir, test_dir = find_image_folder(raw_dir, "train"), find_image_folder(raw_dir, "test")
    sample_path = find_sample_submission(raw_dir)
    sample = parse_csv(sample_path, dtype=str, keep_default_na=False)
    suffixes = Counter(Path(name).suffix for _, _, files in os.walk(train_dir) for name in files)
    extension = max((s for s in suffixes if s.lower() in IMAGE_EXTENSIONS), key=lambda s: suffixes[s])
    preferred = sample.columns[1] if len(sample.columns) == 2 else None
    data, counts, task, task_notes = infer_labels(raw_dir, train_dir, sample_path, preferred)
    test_dirs = extra_test_folders(raw_dir, test_dir, set(sample[sample.columns[0]]))
    data.update(
        train_dir=train_dir.relative_to(raw_dir).as_posix(),
        test_dir=[p.relative_to(raw_dir).as_posix() for p in (test_dir, *test_dirs)]
        if test_dirs
        else test_dir.relative_to(raw_dir).as_posix(),
        extension=extension,
        sample_submission=sample_path.name,
    )
    if task == "single_label":
        submission, notes = infer_submission(sample, sorted(counts))
    else:  # tags, a number, a grade: one label column (the sample's), format "label"
        submission, notes = {"format": "label", "id_column": sample.columns[0]}, []
        submission["label_column"] = sample.columns[-1]
    notes = [*task_notes, *notes]
    test_names = {n for folder in (test_dir, *test_dirs) for p in _images(folder) for n in (p.name, p.stem)}
    missing = [i for i in sample[submission["id_column"]] if i not in test_names]
    if missing:
        notes.append(
            f"{len(missing)} sample submission ids have no image in {test_dir.name}/, e.g. {missing[0]!r}"
        )
    if task != "regression" and min(counts.values()) < DEFAULT_FOLDS:
        notes.append(f"the rarest class has {min(counts.values())} images: train.folds lowered to fit")
    return Layout(data, submission, dict(counts), tuple(notes), task, tuple(test_dirs))


def extra_test_folders(raw_dir: Path, test_dir: Path, ids: set[str]) -> list[Path]:
    """Other test* folders holding images the sample submission lists but `test_dir` lacks (Planet's
    test-jpg-additional/), largest first; none when test_dir holds them all."""

    def names(folder: Path) -> set[str]:
        return {n for p in _images(folder) for n in (p.name, p.stem)}

    missing = ids - names(test_dir)
    found = []
    candidates = [p for p in [*raw_dir.glob("*"), *raw_dir.glob("*/*")] if p.name.lower().startswith("test")]
    for folder in sorted(
        (p for p in candidates if p.is_dir() and p != test_dir), key=_image_count, reverse=True
    ):
        if missing and missing & names(folder):
            found.append(folder)
            missing -= names(folder)
    return found
