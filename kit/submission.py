"""Submissions: built in the competition's format, checked against sample_submission.csv, written atomically.

An invalid submission is never written, and never uploaded: `problems()` is a pure function of the
frame and the sample, and every write goes through it.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import click
import numpy as np
import pandas as pd

from kit.config import Config
from kit.data import read_csv
from kit.runs import SUBMISSIONS_DIR, atomic_path, raw_dir

LEDGER_COLUMNS = [
    "time_utc", "competition", "file", "run", "commit", "metric", "cv", "message", "status", "public_score", "private_score",
]


def read_sample(config: Config) -> pd.DataFrame:
    path = raw_dir(config) / config.data.sample_submission
    return read_csv(path, [config.submission.id_column], f"re-run `make download COMP={config.name}`")


def build(config: Config, ids: list[str], probabilities: np.ndarray, classes: list[str], sample: pd.DataFrame) -> pd.DataFrame:
    """The submission frame: one probability column per class, P(positive), or the predicted class."""
    id_column, label_column = config.submission.id_column, config.submission.label_column
    if config.submission.format == "probabilities":
        expected = [c for c in sample.columns if c != id_column]
        missing = sorted(set(expected) - set(classes))
        if missing:
            raise click.ClickException(
                f"sample_submission.csv has class columns the training labels lack: {', '.join(missing[:5])}"
            )
        frame = pd.DataFrame(probabilities, columns=classes)[expected]
    elif config.submission.format == "binary":
        if config.submission.positive_class not in classes:
            raise click.ClickException(
                f"{config.path}: submission.positive_class {config.submission.positive_class!r} is not a class "
                f"({', '.join(classes)})"
            )
        frame = pd.DataFrame({label_column: probabilities[:, classes.index(config.submission.positive_class)]})
    else:
        frame = pd.DataFrame({label_column: [classes[i] for i in probabilities.argmax(1)]})
    frame.insert(0, id_column, ids)
    return frame


def clip(config: Config, frame: pd.DataFrame) -> pd.DataFrame:
    """Log loss punishes a confident mistake without bound: keep probabilities in [eps, 1 - eps]."""
    if config.competition.metric != "log_loss" or config.submission.format == "label":
        return frame
    epsilon = config.submission.clip_epsilon
    columns = [c for c in frame.columns if c != config.submission.id_column]
    clipped = frame.copy()
    clipped[columns] = clipped[columns].clip(epsilon, 1 - epsilon)
    return clipped


def problems(config: Config, frame: pd.DataFrame, sample: pd.DataFrame, classes: list[str] | None = None) -> list[str]:
    """Everything that would make Kaggle refuse (or mis-score) this submission; empty when it is valid."""
    found = []
    id_column = config.submission.id_column
    if list(frame.columns) != list(sample.columns):
        extra = [c for c in frame.columns if c not in sample.columns]
        missing = [c for c in sample.columns if c not in frame.columns]
        found.append(
            f"columns differ from sample_submission.csv (extra: {extra[:3]}, missing: {missing[:3]}, order must match)"
        )
        return found
    ids = frame[id_column].astype(str)
    duplicated = ids[ids.duplicated()]
    if len(duplicated):
        found.append(f"id {duplicated.iloc[0]!r} appears more than once; one row per id")
    expected = set(sample[id_column].astype(str))
    missing_ids, extra_ids = expected - set(ids), set(ids) - expected
    if missing_ids:
        found.append(f"{len(missing_ids)} ids of sample_submission.csv are missing, e.g. {sorted(missing_ids)[0]!r}")
    if extra_ids:
        found.append(f"{len(extra_ids)} ids are not in sample_submission.csv, e.g. {sorted(extra_ids)[0]!r}")
    values = frame.drop(columns=[id_column])
    if config.submission.format == "label":
        empty = values.iloc[:, 0].isna().to_numpy() | (values.iloc[:, 0].astype(str).str.strip() == "").to_numpy()
        if empty.any():
            found.append(f"row {int(np.argmax(empty)) + 2} has an empty label")
        elif classes is not None:
            unknown = set(values.iloc[:, 0].astype(str)) - set(classes)
            if unknown:
                found.append(f"unknown labels, e.g. {sorted(unknown)[0]!r}")
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


def check(config: Config, frame: pd.DataFrame, sample: pd.DataFrame, source: str, classes: list[str] | None = None) -> None:
    found = problems(config, frame, sample, classes)
    if found:
        raise click.ClickException(f"{source}: invalid submission: {found[0]}" + (f" (+{len(found) - 1} more)" if len(found) > 1 else ""))


def write(config: Config, frame: pd.DataFrame, sample: pd.DataFrame, metric: str, cv: float, classes: list[str]) -> Path:
    """Check, then write submissions/<name>-<UTC time>-<metric><cv>.csv atomically."""
    check(config, frame, sample, "prediction", classes)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    path = SUBMISSIONS_DIR / f"{config.name}-{stamp}-{metric}{cv:.4f}.csv"
    with atomic_path(path) as temporary:
        frame.to_csv(temporary, index=False)
    return path


def read_ledger() -> pd.DataFrame:
    """submissions/ledger.csv as strings, with every LEDGER_COLUMNS column (older ledgers lack some)."""
    path = SUBMISSIONS_DIR / "ledger.csv"
    ledger = pd.read_csv(path, dtype=str, keep_default_na=False) if path.exists() else pd.DataFrame(columns=LEDGER_COLUMNS)
    for column in LEDGER_COLUMNS:
        if column not in ledger.columns:
            ledger[column] = ""
    return ledger


def write_ledger(ledger: pd.DataFrame) -> Path:
    path = SUBMISSIONS_DIR / "ledger.csv"
    with atomic_path(path) as temporary:
        ledger.to_csv(temporary, index=False)
    return path


def append_ledger(row: dict) -> Path:
    """Add one row to submissions/ledger.csv (rewritten atomically, never half-written)."""
    ledger = read_ledger()
    return write_ledger(pd.concat([ledger, pd.DataFrame([{key: row.get(key, "") for key in LEDGER_COLUMNS}])], ignore_index=True))


def merge_kaggle_scores(ledger: pd.DataFrame, remote: list[dict], competition: str) -> tuple[pd.DataFrame, list[dict]]:
    """Copy Kaggle's status and scores onto the uploaded ledger rows they belong to (pure).

    `remote` is kit.kaggle.list_submissions' output, newest first. Each Kaggle submission claims the newest
    unclaimed uploaded row of `competition` whose message is its description, else whose file is its file
    name. Returns the updated ledger and the Kaggle submissions no row claims (made outside the kit).
    """
    ledger = ledger.copy()
    unclaimed = [i for i in reversed(ledger.index) if ledger.at[i, "competition"] == competition and ledger.at[i, "status"].startswith("uploaded")]
    strangers = []
    for entry in remote:
        match = next((i for i in unclaimed if entry["description"] and ledger.at[i, "message"] == entry["description"]), None)
        if match is None:
            match = next((i for i in unclaimed if ledger.at[i, "file"] == entry["file_name"]), None)
        if match is None:
            strangers.append(entry)
            continue
        unclaimed.remove(match)
        ledger.loc[match, ["status", "public_score", "private_score"]] = [
            f"uploaded, {entry['status'] or 'unknown'}", entry["public_score"] or "", entry["private_score"] or "",
        ]
    return ledger, strangers
