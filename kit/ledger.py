"""submissions/ledger.csv: every submission made (file, run, commit, CV) and, once Kaggle has scored it,
its public and private score. Read as strings. Two kit commands at once (tmux) take turns through a lock
file beside it: a new row is appended under the lock (never a rewrite that could drop another command's
row), and `kit ledger`'s merge of Kaggle's scores reads and rewrites it (atomically) under the same lock.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from kit import paths
from kit.files import atomic_path, exclusive, not_writable

LEDGER_COLUMNS = [
    "time_utc",
    "competition",
    "file",
    "run",
    "commit",
    "metric",
    "cv",
    "cv_uncalibrated",
    "message",
    "status",
    "public_score",
    "private_score",
]


def read_ledger() -> pd.DataFrame:
    """submissions/ledger.csv as strings, with every LEDGER_COLUMNS column (older ledgers lack some)."""
    path = paths.ledger_file()
    ledger = (
        pd.read_csv(path, dtype=str, keep_default_na=False)
        if path.exists()
        else pd.DataFrame(columns=LEDGER_COLUMNS)
    )
    for column in LEDGER_COLUMNS:
        if column not in ledger.columns:
            ledger[column] = ""
    return ledger


@contextmanager
def ledger_lock() -> Iterator[None]:
    """Hold the ledger while reading it and writing it back (`kit ledger` merging Kaggle's scores)."""
    with exclusive(paths.ledger_file()):
        yield


def write_ledger(ledger: pd.DataFrame) -> Path:
    """The whole ledger, atomically; callers that read it first hold `ledger_lock()`."""
    path = paths.ledger_file()
    with atomic_path(path) as temporary:
        ledger.to_csv(temporary, index=False)
    return path


def _header(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        return next(csv.reader(handle), [])


def append_ledger(row: dict) -> Path:
    """Add one row to submissions/ledger.csv under the ledger's lock: appended as one write when the file
    has today's columns, else (no ledger yet, an older one lacking columns) written whole, atomically."""
    path = paths.ledger_file()
    new = pd.DataFrame([{key: row.get(key, "") for key in LEDGER_COLUMNS}], columns=LEDGER_COLUMNS)
    with ledger_lock():
        if not path.exists() or _header(path) != LEDGER_COLUMNS:
            return write_ledger(pd.concat([read_ledger(), new], ignore_index=True))
        with open(path, "rb") as handle:
            handle.seek(max(0, path.stat().st_size - 1))
            ends_line = handle.read(1) in (b"\n", b"")
        text = ("" if ends_line else "\n") + new.to_csv(index=False, header=False)
        try:
            with open(path, "a", encoding="utf-8", newline="") as handle:
                handle.write(text)  # one write of a few hundred bytes: a whole line or none
        except PermissionError:
            raise not_writable(path.parent, f"adding a row to {path.name}") from None
    return path


def merge_kaggle_scores(
    ledger: pd.DataFrame, remote: list[dict], competition: str
) -> tuple[pd.DataFrame, list[dict]]:
    """Copy Kaggle's status and scores onto the uploaded ledger rows they belong to (pure).

    `remote` is kit.kaggle.client.list_submissions' output, newest first. Each Kaggle submission claims
    the newest unclaimed uploaded row of `competition` whose message is its description, else whose file
    is its file name. Returns the updated ledger and the Kaggle submissions no row claims (made outside
    the kit).
    """
    ledger = ledger.copy()
    unclaimed = [
        i
        for i in reversed(ledger.index)
        if ledger.at[i, "competition"] == competition and ledger.at[i, "status"].startswith("uploaded")
    ]
    strangers = []
    for entry in remote:
        match = next(
            (
                i
                for i in unclaimed
                if entry["description"] and ledger.at[i, "message"] == entry["description"]
            ),
            None,
        )
        if match is None:
            match = next((i for i in unclaimed if ledger.at[i, "file"] == entry["file_name"]), None)
        if match is None:
            strangers.append(entry)
            continue
        unclaimed.remove(match)
        ledger.loc[match, ["status", "public_score", "private_score"]] = [
            f"uploaded, {entry['status'] or 'unknown'}",
            entry["public_score"] or "",
            entry["private_score"] or "",
        ]
    return ledger, strangers


# Fewer scored submissions than this, and a correlation says nothing about whether CV can be trusted.
MIN_POINTS_FOR_CORRELATION = 3


def cv_and_public(rows: pd.DataFrame) -> pd.DataFrame:
    """Ledger rows (as strings) that have both a CV and a public score, as numbers: file, cv, public."""
    numbers = pd.DataFrame(
        {
            "file": rows["file"],
            "cv": pd.to_numeric(rows["cv"], errors="coerce"),
            "public": pd.to_numeric(rows["public_score"], errors="coerce"),
        }
    )
    return numbers.dropna().reset_index(drop=True)


def correlation_line(points: pd.DataFrame) -> str:
    """One line: how closely CV follows the public score over the scored submissions (Pearson and
    Spearman), and what that means for choosing submissions by CV."""
    count = len(points)
    if count < MIN_POINTS_FOR_CORRELATION:
        return (
            f"CV against public score: {count} scored submissions with a CV; a correlation needs "
            f"{MIN_POINTS_FOR_CORRELATION} or more"
        )
    if points["cv"].nunique() < 2 or points["public"].nunique() < 2:
        return f"CV against public score: {count} submissions, but one of them never changes: no correlation"
    pearson = points["cv"].corr(points["public"])
    spearman = points["cv"].rank().corr(points["public"].rank())
    verdict = (
        "CV orders submissions as the leaderboard does"
        if spearman >= 0.8
        else "CV and the leaderboard disagree often: check the folds (groups, near-duplicates) before "
        "trusting CV to choose"
    )
    return (
        f"CV against public score: {count} submissions, Pearson r {pearson:.2f}, Spearman {spearman:.2f}: "
        + verdict
    )
