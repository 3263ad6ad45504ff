"""Resume: a training process killed mid-epoch continues to the same result as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import TINY

# Three 1-epoch SGDR cycles with snapshots, on augmented images: every kind of state a resume must restore.
RECIPE = "stages=[{name='train', n_cycles=3, cycle_len=1, snapshots=true}]"
# The tricks that add state or randomness: the weights' moving average, mixup/cutmix draws (numpy's).
TRICKS = [
    "train.ema_decay=0.99",
    "predict.weights='ema'",
    "stages.0.mixup=0.4",
    "stages.0.cutmix=1.0",
    "train.label_smoothing=0.1",
]


def kit(project, *arguments, wait=True, extra=()):
    command = [sys.executable, "-m", "kit", *arguments]
    for value in [*TINY, RECIPE, *extra]:
        if arguments[0] == "train" and "--resume" not in arguments:
            command += ["--set", value]
    environment = {**os.environ, "KIT_PROJECT_ROOT": str(project), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    if not wait:
        return process
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output
    return output


def comparable(run_dir):
    summary = json.loads((run_dir / "metrics.json").read_text())
    history = [
        {k: v for k, v in record.items() if k != "seconds"} for record in summary["folds"]["0"]["history"]
    ]
    return summary["cv"], history, np.load(run_dir / "oof.npy")


@pytest.mark.slow
@pytest.mark.parametrize("extra", [(), pytest.param(TRICKS, id="ema-mixup")])
def test_killed_run_resumes_to_the_same_result(digits, project, extra):
    digits()  # downloads the data into the temporary project
    kit(project, "train", "digits", extra=extra)
    (uninterrupted,) = (project / "runs" / "digits").iterdir()

    process = kit(project, "train", "digits", wait=False, extra=extra)
    runs = project / "runs" / "digits"
    deadline = time.time() + 240
    while time.time() < deadline:  # kill as soon as the first epoch is saved: mid-way through the second
        if any((run / "fold-0" / "resume.pt").exists() for run in runs.iterdir() if run != uninterrupted):
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    (interrupted,) = [run for run in runs.iterdir() if run != uninterrupted]
    assert not (interrupted / "metrics.json").exists()
    # No half-written file: only complete outputs, no temporaries left to be mistaken for them.
    for path in interrupted.rglob("*"):
        if path.suffix == ".json":
            json.loads(path.read_text())

    output = kit(project, "train", "digits", "--resume")
    assert f"resuming run {interrupted.name}" in output and "resuming stage 0 after epoch" in output
    cv_a, history_a, oof_a = comparable(uninterrupted)
    cv_b, history_b, oof_b = comparable(interrupted)
    assert [r["epoch"] for r in history_b] == [1, 2, 3]
    assert cv_a == cv_b
    for a, b in zip(history_a, history_b, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert (
                a[key] == b[key] if isinstance(a[key], (str, int, list)) else abs(a[key] - b[key]) < 1e-6
            ), key
    np.testing.assert_allclose(oof_a, oof_b, atol=1e-6, equal_nan=True)
    assert sorted(p.name for p in (interrupted / "fold-0").glob("snapshot-*.pt")) == [
        f"snapshot-{k}.pt" for k in (1, 2, 3)
    ]
    if extra:  # the moving average was validated every epoch and predicted the OOF rows
        assert all("ema_valid_loss" in record for record in history_b)
        assert (interrupted / "fold-0" / "oof-ema-snapshot-3.npy").exists()


@pytest.mark.slow
def test_same_seed_same_oof_probabilities(digits, project):
    from kit import commands

    first = commands.train(digits(), "0")
    second = commands.train(digits(), "0")
    np.testing.assert_allclose(
        np.load(first / "oof.npy"), np.load(second / "oof.npy"), atol=1e-6, equal_nan=True
    )
