"""Every folder the kit reads or writes, in one place.

Data flows one way: data/raw -> data/interim -> runs -> submissions. The project root is read at call
time from KIT_PROJECT_ROOT (default: the checkout holding this package), so a test, a notebook or a
subprocess points the whole kit elsewhere by setting one variable.
"""

from __future__ import annotations

import os
from pathlib import Path

from kit.errors import KitError

CHECKOUT = Path(__file__).resolve().parent.parent


def project_root() -> Path:
    """KIT_PROJECT_ROOT when set (a folder that exists: the kit never makes a project root up), else
    the checkout."""
    chosen = os.environ.get("KIT_PROJECT_ROOT")
    if not chosen:
        return CHECKOUT
    root = Path(chosen)
    if not root.is_dir():
        what = "a file, not a folder" if root.exists() else "no such folder"
        raise KitError(
            f"KIT_PROJECT_ROOT = {chosen}: {what}; point it at the project folder (the one holding "
            f"competitions/), or unset it to use {CHECKOUT}"
        )
    return root


def competitions_dir() -> Path:
    return project_root() / "competitions"


def competition_file(name: str) -> Path:
    return competitions_dir() / name / "competition.toml"


def data_dir() -> Path:
    return project_root() / "data"


def raw_dir(name: str) -> Path:
    """data/raw/<name>: exactly what was downloaded; never written after."""
    return data_dir() / "raw" / name


def interim_dir(name: str) -> Path:
    """data/interim/<name>: folds, decoded-image caches, precomputed features (rebuildable).

    Made on demand.
    """
    path = data_dir() / "interim" / name
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):  # data/interim (or data) saved as a file
        raise KitError(f"a file is in the way of the folder {path}: move it away") from None
    return path


def runs_dir(name: str) -> Path:
    return project_root() / "runs" / name


def submissions_dir() -> Path:
    return project_root() / "submissions"


def ledger_file() -> Path:
    return submissions_dir() / "ledger.csv"


def require_download(name: str) -> Path:
    path = raw_dir(name)
    if not path.is_dir() or not any(path.iterdir()):
        raise KitError(f"no data in {path}: run `make download COMP={name}` first")
    return path
