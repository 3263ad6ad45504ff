"""`torchrun -m kit train COMP --fold all --parallel folds`: each process trains its own folds, rank 0
settles once; the same OOF, CV and submission as the folds trained one after the other; a fold that fails
in one process fails the command on every process, naming it, with nothing settled.

Run as a script (by torchrun, from the failure test), this file is `kit` with one fold made to fail.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import TINY, invoke

from kit.commands.training import parallel_mode
from kit.errors import KitError
from kit.train.parallel_folds import failure_line, folds_of_process, stop_note

# Three folds on two processes: process 0 trains folds 0 and 2, process 1 fold 1 (k mod 2). One tiny
# epoch each, no TTA: seconds per fold on a CPU.
SETTINGS = [*TINY, "train.folds=3", "predict.tta=0"]


def test_fold_k_goes_to_process_k_mod_the_number_of_processes():
    assert folds_of_process([0, 1, 2, 3, 4], 0, 2) == [0, 2, 4]
    assert folds_of_process([0, 1, 2, 3, 4], 1, 2) == [1, 3]
    assert folds_of_process([0, 1, 2], 2, 4) == [2] and folds_of_process([0, 1, 2], 3, 4) == []
    assert folds_of_process([0, 1, 2], 0, 1) == [0, 1, 2]


def test_parallel_folds_applies_to_every_fold_under_torchrun_only(capsys):
    assert parallel_mode(None, "all", 4) is None
    assert parallel_mode("folds", "all", 2) == "folds"
    assert parallel_mode("folds", "all", 1) is None  # not under torchrun: one after the other, said so
    assert "one after the other" in capsys.readouterr().out
    with pytest.raises(KitError, match="--fold 3: one fold cannot be split by folds; use --fold all"):
        parallel_mode("folds", "3", 2)
    with pytest.raises(KitError, match="--fold full trains its seeds in one process"):
        parallel_mode("folds", "full", 1)


def test_with_the_stop_on_each_parallel_fold_decides_its_own_stop_and_says_so():
    assert "each fold decides its own stop" in stop_note(True, False, 2)
    assert stop_note(True, True, 2) is None and stop_note(False, False, 2) is None
    assert stop_note(True, False, 1) is None  # in turn: the later folds follow fold 0's stop


def test_the_failure_line_names_each_failed_fold_and_its_process(tmp_path):
    line = failure_line({2: (0, "RuntimeError: out of memory"), 1: (1, "ValueError: x")}, tmp_path, "digits")
    assert line.startswith("fold 1 failed in process 1: ValueError: x; fold 2 failed in process 0: Runtime")
    assert "no metrics.json" in line and "\n" not in line
    assert "`kit train digits --resume` under the same torchrun" in line
    assert f"({tmp_path.name};" in line


def test_parallel_folds_with_a_full_refit_is_refused_in_one_line(digits, project):
    digits()
    result = invoke("train", "digits", "--fold", "full", "--parallel", "folds")
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert "--parallel folds: --fold full" in result.output and "Traceback" not in result.output
    assert not list(project.glob("runs/digits/*"))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _torchrun(program: list[str], arguments: list[str], environment: dict) -> subprocess.CompletedProcess:
    """torchrun itself (not a hand-made process group): one node, two CPU processes (gloo), its own port."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc-per-node",
        "2",
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        f"127.0.0.1:{_free_port()}",
        *program,
        *arguments,
    ]
    return subprocess.run(command, env=environment, capture_output=True, text=True, timeout=600)


def _train_arguments() -> list[str]:
    arguments = ["train", "digits", "--fold", "all", "--parallel", "folds"]
    for value in SETTINGS:
        arguments += ["--set", value]
    return arguments


def _environment(project) -> dict:
    environment = {**os.environ, "KIT_PROJECT_ROOT": str(project), "OMP_NUM_THREADS": "1"}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):  # the sequential run is no torchrun process
        environment.pop(name, None)
    return environment


@pytest.mark.slow
def test_folds_in_parallel_equal_the_folds_in_turn(digits, project):
    from kit import commands
    from kit.competitions import load_competition

    digits()
    environment = _environment(project)
    parallel = _torchrun(["-m", "kit"], _train_arguments(), environment)
    assert parallel.returncode == 0, parallel.stdout + parallel.stderr
    (parallel_dir,) = (project / "runs" / "digits").iterdir()
    # Each process wrote the folds it trained; rank 0 alone settled (one CV line).
    assert (parallel.stdout + parallel.stderr).count("CV accuracy") == 1
    assert json.loads((parallel_dir / "plan.json").read_text()) == {"fold": "all", "parallel": "folds"}

    # The same command in one process (no torchrun): said, then the folds one after the other.
    sequential = subprocess.run(
        [sys.executable, "-m", "kit", *_train_arguments()],
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert sequential.returncode == 0, sequential.stdout + sequential.stderr
    assert "--parallel folds: one process (not under torchrun)" in sequential.stdout
    (sequential_dir,) = set((project / "runs" / "digits").iterdir()) - {parallel_dir}

    oof = {name: np.load(folder / "oof.npy") for name, folder in [("p", parallel_dir), ("s", sequential_dir)]}
    assert oof["p"].shape == oof["s"].shape and not np.isnan(oof["p"]).any()  # every row, three folds
    assert np.abs(oof["p"] - oof["s"]).max() <= 1e-6
    summaries = [
        json.loads((folder / "metrics.json").read_text()) for folder in (parallel_dir, sequential_dir)
    ]
    assert summaries[0]["folds_trained"] == summaries[1]["folds_trained"] == [0, 1, 2]
    assert abs(summaries[0]["cv"] - summaries[1]["cv"]) <= 1e-6
    for fold in ("0", "1", "2"):
        assert abs(summaries[0]["folds"][fold]["score"] - summaries[1]["folds"][fold]["score"]) <= 1e-6

    config = load_competition("digits")
    submissions = [
        pd.read_csv(commands.predict(config, folder.name)) for folder in (parallel_dir, sequential_dir)
    ]
    assert submissions[0].equals(submissions[1])


@pytest.mark.slow
def test_a_fold_failing_in_one_process_fails_the_command_naming_it_then_resumes(digits, project):
    digits()
    environment = {**_environment(project), "FAIL_FOLD": "1"}
    arguments = [argument.replace("train.folds=3", "train.folds=2") for argument in _train_arguments()]
    finished = _torchrun([__file__], arguments, environment)
    output = finished.stdout + finished.stderr
    assert finished.returncode != 0, output
    assert "fold 1 failed in process 1: RuntimeError: fold 1 cannot train here" in output
    assert "CV accuracy" not in output
    (run_dir,) = (project / "runs" / "digits").iterdir()  # kept: fold 0 finished, for --resume
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "oof.npy").exists()
    assert (run_dir / "fold-0").is_dir() and not (run_dir / "fold-1" / "result.json").exists()

    # As the line says: the cause fixed, --resume under the same torchrun trains the fold left, then settles.
    fold_0 = (run_dir / "fold-0" / "result.json").read_text()
    environment.pop("FAIL_FOLD")
    resumed = _torchrun(["-m", "kit"], ["train", "digits", "--resume"], environment)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert (run_dir / "fold-0" / "result.json").read_text() == fold_0  # kept, not trained again
    assert json.loads((run_dir / "metrics.json").read_text())["folds_trained"] == [0, 1]


def fail_one_fold() -> None:
    """`kit`, as torchrun starts it, with fold FAIL_FOLD raising before it trains."""
    from kit import cli
    from kit.train import parallel_folds

    train_fold, failing = parallel_folds.train_fold, int(os.environ["FAIL_FOLD"])

    def failing_train_fold(config, labels, folds, number, *rest, **options):
        if number == failing:
            raise RuntimeError(f"fold {number} cannot train here")
        return train_fold(config, labels, folds, number, *rest, **options)

    parallel_folds.train_fold = failing_train_fold
    cli.main()


if __name__ == "__main__":
    fail_one_fold()
