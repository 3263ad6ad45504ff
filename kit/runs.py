"""Where things live, atomic writes, and run folders that record how their outputs were made.

Data flows one way: data/raw -> data/interim -> runs -> submissions. Every write goes to a temporary
file beside its target and is renamed into place, so a kill at any moment leaves the previous good file.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click

from kit.config import PROJECT_ROOT, Config

DATA_DIR = PROJECT_ROOT / "data"
RUNS_DIR = PROJECT_ROOT / "runs"
SUBMISSIONS_DIR = PROJECT_ROOT / "submissions"


def raw_dir(config: Config) -> Path:
    return DATA_DIR / "raw" / config.name


def interim_dir(config: Config) -> Path:
    path = DATA_DIR / "interim" / config.name
    path.mkdir(parents=True, exist_ok=True)
    return path


DOWNLOAD_MARKER = ".download-complete"  # written last into data/raw/<name>: the download is whole


@contextmanager
def filling_folder(target: Path, note: str = "") -> Iterator[Path]:
    """An empty hidden sibling of `target` to fill; renamed onto `target`, marked complete, only if the
    block succeeds, so an interrupted download never leaves a half-filled folder (the next try starts over).

    A non-empty `target` without the marker was not made here and may be the user's: it is refused.
    """
    import shutil

    if target.exists() and any(target.iterdir()):
        raise click.ClickException(
            f"{target} exists but holds no completed download ({DOWNLOAD_MARKER} missing): move it away, then retry"
        )
    partial = target.parent / f".partial-{target.name}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        yield partial
        (partial / DOWNLOAD_MARKER).write_text(f"{note}\n")
        if target.exists():
            target.rmdir()  # empty, checked above; os.replace cannot overwrite a directory otherwise
        os.replace(partial, target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def require_download(config: Config) -> Path:
    path = raw_dir(config)
    if not path.is_dir() or not any(path.iterdir()):
        raise click.ClickException(f"no data in {path}: run `make download COMP={config.name}` first")
    return path


_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it onto `target` only if the block succeeds."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(handle)
    try:
        yield Path(temporary)
        os.chmod(temporary, 0o666 & ~_UMASK)  # mkstemp makes files private (0600); outputs are ordinary files
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def write_json(target: Path, value: Any) -> None:
    with atomic_path(target) as temporary:
        temporary.write_text(json.dumps(value, indent=2, default=str) + "\n")


def save_array(target: Path, array) -> None:
    """np.save, atomically (np.save would add '.npy' to a temporary name, so write through a handle)."""
    import numpy as np

    with atomic_path(target) as temporary, open(temporary, "wb") as handle:
        np.save(handle, array)


def git_commit() -> str:
    """The commit the code came from, with '-dirty' when it has uncommitted changes."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return (commit or "unknown") + ("-dirty" if dirty else "")


def utc_stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")


def new_run(config: Config) -> Path:
    """Create runs/<name>/<run-id>/ and record the resolved config and provenance in it."""
    base = RUNS_DIR / config.name
    run_id = f"{utc_stamp()}-{config.train.model}"
    run_dir = base / run_id
    suffix = 1
    while run_dir.exists():
        suffix += 1
        run_dir = base / f"{run_id}-{suffix}"
    run_dir.mkdir(parents=True)
    write_json(run_dir / "config.json", config.to_dict())
    import torch  # late: keep `kit list` and config errors fast

    write_json(
        run_dir / "provenance.json",
        {
            "commit": git_commit(),
            "command": " ".join(sys.argv),
            "started_utc": utc_stamp(),
            "host": platform.node(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
            "processes": int(os.environ.get("WORLD_SIZE", "1")),  # torchrun: one per GPU, each with train.batch_size
        },
    )
    return run_dir


def list_runs(config: Config) -> list[Path]:
    """Runs of a competition, oldest first."""
    base = RUNS_DIR / config.name
    return sorted((p for p in base.iterdir() if (p / "config.json").exists()), key=lambda p: p.name) if base.exists() else []


def find_run(config: Config, run: str | None) -> Path:
    """A run folder by id (or unique prefix); None: the newest run with metrics."""
    runs = list_runs(config)
    if run is None:
        finished = [p for p in runs if (p / "metrics.json").exists()]
        if not finished:
            raise click.ClickException(f"no finished run of {config.name}: run `make train COMP={config.name}`")
        return finished[-1]
    matches = [p for p in runs if p.name == run] or [p for p in runs if p.name.startswith(run)]
    if len(matches) != 1:
        known = ", ".join(p.name for p in runs[-5:]) or "(none)"
        raise click.ClickException(f"run '{run}' of {config.name} not found or ambiguous; recent: {known}")
    return matches[0]


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())
