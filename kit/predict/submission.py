"""Submissions: built in the competition's format, checked against sample_submission.csv, written atomically.

An invalid submission is never written, and never uploaded: `problems()` is a pure function of the
frame and the sample, and every write goes through it. Every file written gets a name no other has (two
`kit predict`s in the same second take turns under a lock) and its SHA-256 in submissions/CHECKSUMS
(`sha256sum -c` reads it), so a file edited after prediction is not uploaded under the run's CV.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from kit import paths
from kit.config import Config
from kit.data.labels import read_csv
from kit.errors import KitError
from kit.files import atomic_path, exclusive, not_writable, utc_stamp
from kit.metrics import clip_and_renormalise
from kit.run import Summary
from kit.tasks import Task, from_record


def read_sample(config: Config) -> pd.DataFrame:
    path = paths.raw_dir(config.name) / config.data.sample_submission
    fix = f"re-run `make download COMP={config.name}`"
    return read_csv(path, [config.submission.id_column], fix, ["submission.id_column"])


def build(
    config: Config,
    ids: list[str],
    probabilities: np.ndarray,
    classes: list[str],
    sample: pd.DataFrame,
    task: Task,  # no default: a forgotten task would silently write single-label columns
    decisions: dict | None = None,
) -> pd.DataFrame:
    """The submission frame: one probability column per class, P(positive), or the label: the task's
    decision (the class, the tags over their thresholds, the number, the grade between its cut-points)."""
    id_column, label_column = config.submission.id_column, config.submission.label_column
    if config.submission.format == "probabilities":
        expected = [c for c in sample.columns if c != id_column]
        missing = sorted(set(expected) - set(classes))
        sample_path = paths.raw_dir(config.name) / config.data.sample_submission
        if missing:
            raise KitError(
                f"{sample_path} has class columns the training labels lack: {', '.join(missing[:5])}"
            )
        lacking = [name for name in classes if name not in expected]
        if lacking:  # their probability would be dropped: rows would no longer sum to one
            raise KitError(
                f"{sample_path} has no column for the training class(es) "
                f"{', '.join(map(repr, lacking[:5]))}; download it again (`make download COMP={config.name}` "
                f"after moving data/raw/{config.name} away), or check data.label_column"
            )
        frame = pd.DataFrame(probabilities, columns=classes)[expected]
    elif config.submission.format == "binary":
        if config.submission.positive_class not in classes:
            raise KitError(
                f"{config.path}: submission.positive_class {config.submission.positive_class!r} "
                "is not a class "
                f"({', '.join(classes)})"
            )
        frame = pd.DataFrame(
            {label_column: probabilities[:, classes.index(config.submission.positive_class)]}
        )
    else:
        frame = pd.DataFrame({label_column: task.submitted_labels(probabilities, decisions or {}, classes)})
    frame.insert(0, id_column, ids)
    if set(frame.columns) == set(sample.columns):  # a sample with the id last: Kaggle's order is the sample's
        frame = frame[list(sample.columns)]
    return frame


def clip(config: Config, frame: pd.DataFrame) -> pd.DataFrame:
    """Log loss punishes a confident mistake without bound: keep probabilities in [eps, 1 - eps]."""
    if config.competition.metric != "log_loss" or config.submission.format == "label":
        return frame
    epsilon = config.submission.clip_epsilon
    columns = [c for c in frame.columns if c != config.submission.id_column]
    clipped = frame.copy()
    values = clipped[columns].to_numpy(dtype=float)
    # One probability per class: clipped and renormalised (rows still sum to one); binary: clipped.
    single = config.submission.format == "binary"
    clipped[columns] = (
        np.clip(values, epsilon, 1 - epsilon) if single else clip_and_renormalise(values, epsilon)
    )
    return clipped


def problems(
    config: Config,
    frame: pd.DataFrame,
    sample: pd.DataFrame,
    classes: list[str] | None,
    task: Task,
) -> list[str]:
    """Everything that would make Kaggle refuse (or mis-score) this submission; empty when it is valid."""
    found = []
    id_column = config.submission.id_column
    if list(frame.columns) != list(sample.columns):
        extra = [c for c in frame.columns if c not in sample.columns]
        missing = [c for c in sample.columns if c not in frame.columns]
        found.append(
            f"columns differ from sample_submission.csv (extra: {extra[:3]}, missing: {missing[:3]}, "
            "order must match)"
        )
        return found
    ids = frame[id_column].astype(str)
    duplicated = ids[ids.duplicated()]
    if len(duplicated):
        found.append(f"id {duplicated.iloc[0]!r} appears more than once; one row per id")
    expected = set(sample[id_column].astype(str))
    missing_ids, extra_ids = expected - set(ids), set(ids) - expected
    if missing_ids:
        found.append(
            f"{len(missing_ids)} ids of sample_submission.csv are missing, e.g. {sorted(missing_ids)[0]!r}"
        )
    if extra_ids:
        found.append(f"{len(extra_ids)} ids are not in sample_submission.csv, e.g. {sorted(extra_ids)[0]!r}")
    values = frame.drop(columns=[id_column])
    if config.submission.format == "label":
        empty = (
            values.iloc[:, 0].isna().to_numpy() | (values.iloc[:, 0].astype(str).str.strip() == "").to_numpy()
        )
        # Multi-label: an image may have no tag over its threshold (an empty cell is a valid answer).
        if empty.any() and task.name != "multi_label":
            found.append(f"row {int(np.argmax(empty)) + 2} has an empty label")
        elif classes is not None:
            problem = task.label_problem(values.iloc[:, 0].fillna(""), classes)
            if problem:
                found.append(problem)
        return found
    numbers = values.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    if not np.isfinite(numbers).all():
        row = int(np.argwhere(~np.isfinite(numbers))[0][0])
        found.append(f"row {row + 2} has a missing, NaN or infinite probability")
    elif numbers.size and (numbers.min() < 0 or numbers.max() > 1):  # size: an empty frame has no min
        found.append("probabilities must lie in [0, 1]")
    elif config.submission.format == "probabilities" and not np.allclose(numbers.sum(1), 1, atol=1e-3):
        row = int(np.argmax(np.abs(numbers.sum(1) - 1)))
        found.append(f"row {row + 2}: probabilities sum to {numbers[row].sum():.4f}, not 1")
    return found


def check(
    config: Config,
    frame: pd.DataFrame,
    sample: pd.DataFrame,
    source: str,
    classes: list[str] | None,
    task: Task,
) -> None:
    found = problems(config, frame, sample, classes, task)
    if found:
        raise KitError(
            f"{source}: invalid submission: {found[0]}"
            + (f" (+{len(found) - 1} more)" if len(found) > 1 else "")
        )


def file_name(config: Config, metric: str, cv: float, cv_uncalibrated: float | None = None) -> str:
    """<name>-<UTC time>-<metric><cv>[-uncalibrated<cv>].csv: the CV of what is submitted (calibrated), and
    the uncalibrated one beside it when calibration changed it."""
    name = f"{config.name}-{utc_stamp()}-{metric}{cv:.4f}"
    if cv_uncalibrated is not None and f"{cv_uncalibrated:.4f}" != f"{cv:.4f}":
        name += f"-uncalibrated{cv_uncalibrated:.4f}"
    return name + ".csv"


def write(
    config: Config,
    frame: pd.DataFrame,
    sample: pd.DataFrame,
    metric: str,
    cv: float,
    classes: list[str],
    task: Task,
    *,
    cv_uncalibrated: float | None = None,
) -> Path:
    """Check, then write submissions/`file_name` atomically."""
    check(config, frame, sample, "prediction", classes, task)
    folder = paths.submissions_dir()
    checksums = folder / CHECKSUMS
    with exclusive(checksums):  # the name is chosen and taken, and its digest recorded, in one turn
        path = unused_path(folder / file_name(config, metric, cv, cv_uncalibrated))
        with atomic_path(path) as temporary:
            frame.to_csv(temporary, index=False)
            digest = file_digest(temporary)
        try:
            with open(checksums, "a", encoding="utf-8") as handle:
                handle.write(f"{digest}  {path.name}\n")
        except PermissionError:
            raise not_writable(folder, f"recording {path.name} in {CHECKSUMS}") from None
    return path


CHECKSUMS = "CHECKSUMS"  # in submissions/: "<sha256>  <file>" per file the kit wrote, as sha256sum writes


def unused_path(path: Path) -> Path:
    """`path`, or `<stem>-2.csv`, `-3`, ... when a file of that name exists (names carry the second only)."""
    candidate, number = path, 1
    while candidate.exists():
        number += 1
        candidate = path.with_name(f"{path.stem}-{number}{path.suffix}")
    return candidate


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def recorded_digest(path: Path) -> str | None:
    """The SHA-256 the kit recorded when it wrote `path` (the last record of that name), or None."""
    checksums = path.parent / CHECKSUMS
    if not checksums.is_file():
        return None
    found = None
    for line in checksums.read_text(encoding="utf-8", errors="replace").splitlines():
        digest, _, name = line.partition("  ")
        if name == path.name:
            found = digest
    return found


def check_unchanged(path: Path) -> None:
    """Refuse a submission file that differs from what the kit wrote: uploaded, the ledger would record the
    run's CV beside a score the run did not make."""
    expected = recorded_digest(path)
    if expected is not None and file_digest(path) != expected:
        raise KitError(
            f"{path}: changed since the kit wrote it (its SHA-256 is not the one in "
            f"{path.parent / CHECKSUMS}), so the run's CV would be recorded for another file; delete it, "
            "and `kit submit` predicts it again (or upload your edited file yourself, outside the ledger)"
        )


def write_for_run(config: Config, ids: list[str], predictions: np.ndarray, summary: Summary) -> Path:
    """A run's (or an ensemble's) submission from its test predictions, as submitted (calibrated), with
    the task, decisions and CVs its metrics.json records: built, checked, written."""
    task, sample = from_record(summary.task_record), read_sample(config)
    classes = summary.classes
    frame = build(config, ids, predictions, classes, sample, task, summary.decisions)
    return write(
        config,
        frame,
        sample,
        summary.metric,
        summary.cv,
        classes,
        task,
        cv_uncalibrated=summary.cv_uncalibrated,
    )
