"""Commands that need no model start without the heavy libraries: each runs in a fresh interpreter (as a
user's `kit ...` does) and reports what it had imported when it finished. Start-up time itself is measured
by scripts/bench_startup.py, not here.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import REPO, copy_download

HEAVY = ["torch", "torchvision", "timm", "albumentations", "cv2", "matplotlib"]
SCIKIT = ["sklearn", "scipy"]  # about a second of start-up: only commands that compute with them

# Runs `kit ARGS...` like the console script, then prints the heavy modules loaded by the end (exit kept).
WRAPPER = f"""
import sys
from kit.cli import main
try:
    main(sys.argv[1:], prog_name="kit")
    code = 0
except SystemExit as stop:
    code = stop.code
print("imported: " + ",".join(name for name in {HEAVY + SCIKIT!r} if name in sys.modules))
sys.exit(code)
"""


def run_kit(*arguments: str, status: int = 0) -> tuple[str, str, list[str]]:
    """`kit ARGUMENTS...` from this tree in a fresh interpreter, in the project KIT_PROJECT_ROOT names.

    Returns (stdout without the last line, stderr, the heavy modules imported).
    """
    finished = subprocess.run(
        [sys.executable, "-c", WRAPPER, *arguments],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert finished.returncode == status, finished.stdout + finished.stderr
    output, _, last = finished.stdout.rstrip("\n").rpartition("\n")
    assert last.startswith("imported: "), finished.stdout
    return output, finished.stderr, [name for name in last.removeprefix("imported: ").split(",") if name]


@pytest.fixture
def digits_with_a_run(project, digits_download):
    """The digits download plus one finished run folder (as training leaves it), so that `kit list` and
    `kit runs` read a run's files, not an empty folder."""
    from kit.competitions import load_competition
    from kit.files import write_json
    from kit.run import LAYOUT
    from kit.run_folder import new_run_dir

    copy_download(digits_download, project)
    run_dir = new_run_dir(load_competition("digits"), "test_efficientnet")
    summary = {"layout": LAYOUT, "metric": "accuracy", "cv": 0.875, "folds_trained": [0], "seconds": 90}
    summary["classes"] = []
    write_json(run_dir / "metrics.json", summary)
    return run_dir


@pytest.mark.parametrize(
    "arguments, expected, allowed",
    [
        (["--help"], "Kaggle image-competition starter kit", []),
        (["list"], "1 runs, last CV accuracy 0.8750", []),
        (["folds", "digits"], "fold", SCIKIT),  # StratifiedKFold
        (["runs", "digits"], "0.875", []),
        (["config", "digits"], "train.image_size", []),
        (["ledger", "digits"], "no submissions of digits yet", []),
    ],
)
def test_commands_that_need_no_model_import_no_heavy_library(digits_with_a_run, arguments, expected, allowed):
    output, _, imported = run_kit(*arguments)
    assert expected in output
    assert sorted(set(imported) - set(allowed)) == [], f"`kit {' '.join(arguments)}` imported {imported}"


def test_the_check_sees_a_heavy_import(project):
    """The wrapper does report heavy modules: `kit train` imports them before it finds no download."""
    _, errors, heavy = run_kit("train", "digits", status=1)
    assert "make download" in errors
    assert {"torch", "albumentations"} <= set(heavy)
