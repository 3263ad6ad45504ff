"""Writing files so that a kill at any moment leaves the previous good file: atomic writes, JSON and
array files, a folder filled in a hidden sibling and renamed into place, and the stamps runs record.

Every write goes to a temporary file beside its target and is renamed into place.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock

from kit import paths
from kit.errors import KitError

DOWNLOAD_MARKER = ".download-complete"  # written last into data/raw/<name>: the download is whole
SINGLE_FILES_NOTE = ".single-files"  # in data/raw/<name>: files fetched one by one (kit download --file)
HAND_FILLED = "hand-filled"  # the marker's second line when the files were put there by hand


def mark_hand_filled(target: Path, slug: str) -> None:
    """Mark data/raw/<name>, filled by hand, as complete: its marker holds the slug, then HAND_FILLED."""
    (target / DOWNLOAD_MARKER).write_text(f"{slug}\n{HAND_FILLED}\n")


def raw_state(target: Path) -> str:
    """What data/raw/<name> holds: "downloaded", "hand-filled" (both complete), "unmarked" (files, but no
    marker: put there by hand, or a download that was not the kit's), or "empty"."""
    marker = target / DOWNLOAD_MARKER
    if marker.is_file():
        return HAND_FILLED if HAND_FILLED in marker.read_text().splitlines()[1:] else "downloaded"
    # files `kit download --file` fetched are the kit's own: a folder of only those is still to be filled
    if target.is_dir():
        kit_made = {name.split("/")[0] for name in single_files(target)} | {SINGLE_FILES_NOTE}
        if any(entry.name not in kit_made for entry in target.iterdir()):
            return "unmarked"
    return "empty"


def marked_slug(target: Path) -> str:
    """The Kaggle slug a finished download (or a hand-filled folder) was marked with; "" when none."""
    lines = (target / DOWNLOAD_MARKER).read_text().splitlines()
    return lines[0].strip() if lines else ""


def download_folder(target: Path) -> Path:
    """The hidden sibling `.download-<name>` of data/raw/<name> where an archive is downloaded: kept
    across runs so an interrupted download resumes, removed once the archive is extracted."""
    folder = target.parent / f".download-{target.name}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def single_files(target: Path) -> set[str]:
    """The files of `target` that `kit download --file` fetched (listed in its SINGLE_FILES_NOTE)."""
    note = target / SINGLE_FILES_NOTE
    return set(note.read_text().splitlines()) - {""} if note.is_file() else set()


def require_fillable(target: Path) -> None:
    """Refuse a non-empty `target` that holds neither a completed download nor only single files fetched
    by the kit: it was not made here and may be the user's."""
    if not target.exists():
        return
    kit_made = {name.split("/")[0] for name in single_files(target)} | {SINGLE_FILES_NOTE}
    if any(entry.name not in kit_made for entry in target.iterdir()):
        raise KitError(
            f"{target} exists but holds no completed download ({DOWNLOAD_MARKER} missing): "
            "move it away, then retry"
        )


@contextmanager
def filling_folder(target: Path, note: str = "") -> Iterator[Path]:
    """An empty hidden sibling of `target` to fill; renamed onto `target`, marked complete, only if the
    block succeeds, so an interrupted download never leaves a half-filled folder (the next try starts over).

    A non-empty `target` without the marker was not made here and may be the user's: it is refused
    (single files the kit fetched there are replaced by the whole download).
    """
    require_fillable(target)
    partial = target.parent / f".partial-{target.name}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        yield partial
        (partial / DOWNLOAD_MARKER).write_text(f"{note}\n")
        if target.exists():
            shutil.rmtree(target)  # empty, or only single files the whole download also holds
        os.replace(partial, target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


_UMASK = os.umask(0)
os.umask(_UMASK)


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)  # no space left on the device; over the user's disk quota


def is_disk_full(error: OSError) -> bool:
    """Whether a failed write failed for want of space: the disk is full, or the user's quota is."""
    return error.errno in DISK_FULL


def human_size(size: float) -> str:
    """Bytes for people, in powers of 1000: 512 bytes, 1.6 GB, 2.1 TB."""
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if abs(size) < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1000
    return ""


def free_space(folder: Path) -> int:
    """Bytes free for us in `folder` (or its nearest existing parent)."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def disk_full_error(folder: Path, what: str, needed: int | None = None) -> KitError:
    """The one-line error for a full disk: where, how much is needed (when known) and free, what to do."""
    amount = f"needs {human_size(needed)}" if needed is not None else "ran out of space"
    return KitError(
        f"{folder}: {what} {amount} and {human_size(free_space(folder))} is free there; free space on that "
        f"disk (caches under data/interim may be deleted: they are rebuilt), or link the folder to a "
        f"bigger disk, then run the command again"
    )


def make_folder(folder: Path) -> Path:
    """mkdir -p, with a file in the way (data/interim or runs/ saved as a file, a link to a file) or a
    folder we may not write in as one line."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocking = next(
            (part for part in [folder, *folder.parents] if part.exists() and not part.is_dir()), folder
        )
        raise KitError(
            f"{blocking} is in the way of the folder {folder}: it is not a folder; move it away"
        ) from None
    except PermissionError:
        raise KitError(f"{folder}: no permission to create it; fix the permissions") from None
    return folder


def not_writable(folder: Path, what: str) -> KitError:
    """The one-line error for a folder we may not write in: which folder, what was being written, the fix."""
    return KitError(
        f"{folder}: no permission to write in this folder ({what}); give your user write access "
        f"(e.g. `chmod u+w {folder}`, or `chown` it to you), then run the command again"
    )


LOCK_NOTICE_SECONDS = 2.0  # waiting longer than this for another kit command's lock is said, once


@contextmanager
def exclusive(target: Path) -> Iterator[None]:
    """Hold `.<name>.lock` beside `target` (filelock: released when the process dies, even killed) so that
    two kit commands at once (tmux) take turns at reading-then-writing it, or at choosing a free name."""
    make_folder(target.parent)
    lock = FileLock(target.parent / f".{target.name}.lock")
    try:
        try:
            lock.acquire(timeout=LOCK_NOTICE_SECONDS)
        except TimeoutError:
            print(f"waiting for another kit command to finish with {target}", file=sys.stderr, flush=True)
            lock.acquire()
    except PermissionError:
        raise not_writable(target.parent, f"locking {target.name}") from None
    try:
        yield
    finally:
        lock.release()


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it onto `target` only if the block succeeds.

    A full disk is one line naming the folder (the temporary file is removed first, so the space is back).
    """
    make_folder(target.parent)
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except PermissionError:
        raise not_writable(target.parent, f"writing {target.name}") from None
    os.close(handle)
    try:
        yield Path(temporary)
        os.chmod(temporary, 0o666 & ~_UMASK)  # mkstemp makes files private (0600); outputs are ordinary files
        os.replace(temporary, target)
    except PermissionError:  # the folder made read-only meanwhile, or a target we may not replace
        raise not_writable(target.parent, f"writing {target.name}") from None
    except OSError as error:
        if not is_disk_full(error):
            raise
        written = os.path.getsize(temporary) if os.path.exists(temporary) else 0
        if os.path.exists(temporary):  # before the free space is measured for the message
            os.unlink(temporary)
        raise disk_full_error(
            target.parent, f"writing {target.name} ({human_size(written)} written when the disk filled)"
        ) from None
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def write_json(target: Path, value: Any) -> None:
    with atomic_path(target) as temporary:
        temporary.write_text(json.dumps(value, indent=2, default=str) + "\n")


def save_array(target: Path, array) -> None:
    """np.save, atomically (np.save would add '.npy' to a temporary name, so write through a handle)."""
    with atomic_path(target) as temporary, open(temporary, "wb") as handle:
        np.save(handle, array)


def git_commit() -> str:
    """The commit the code came from, with '-dirty' when it has uncommitted changes."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=paths.CHECKOUT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"],
            cwd=paths.CHECKOUT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return (commit or "unknown") + ("-dirty" if dirty else "")


def utc_stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")


def read_json(path: Path) -> Any:
    """A JSON file the kit wrote; one damaged since (edited, truncated, a disk error) is one line."""
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        reason = f"{error.msg}, line {error.lineno}"
    except UnicodeDecodeError:
        reason = "not text"
    raise KitError(
        f"{path}: damaged, not valid JSON ({reason}); restore it, or move the folder it belongs to away"
    )
