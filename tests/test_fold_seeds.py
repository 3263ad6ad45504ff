"""`kit train COMP --fold K|all --seeds N`: each fold trained with N seeds, their kept views averaged before
selection, calibration and prediction (kit.train.seeds). The pure parts on plain values, then tiny digits."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from conftest import invoke

from kit import commands
from kit.run import Run
from kit.train import cross_validation, parallel_folds, seeds


def test_a_files_views_are_averaged_over_its_seeds_file_by_file():
    first = [np.full((2, 3, 4), 0.2), np.full((2, 3, 4), 0.6)]  # file A: seed 0, seed 1
    second = [np.full((2, 3, 4), 0.1), np.full((2, 3, 4), 0.3)]  # file B: seed 0, seed 1
    joined = seeds.join_seeds([*first, *second], 2)
    assert len(joined) == 2
    assert np.allclose(joined[0], 0.4) and np.allclose(joined[1], 0.2)
    alone = seeds.join_seeds(first, 1)  # one seed: each file's views as they are
    assert len(alone) == 2 and np.allclose(alone[1], 0.6)


def test_each_seed_trains_with_its_own_train_seed_and_seed_zero_as_given(digits):
    config = digits("train.seed=7")
    assert seeds.seed_config(config, 0) is config
    assert seeds.seed_config(config, 2).train.seed == 7 + 2 * seeds.SEED_STEP
    assert seeds.seed_config(config, 2).stages == config.stages


def test_fold_and_seed_jobs_are_dealt_to_the_processes_in_turn():
    assert parallel_folds.jobs_of_process([0, 1, 2], 1, 1, 2) == [(1, None)]
    assert parallel_folds.jobs_of_process([0, 1], 2, 0, 2) == [(0, 0), (1, 0)]
    assert parallel_folds.jobs_of_process([0, 1], 2, 1, 2) == [(0, 1), (1, 1)]
    assert parallel_folds.jobs_of_process([0], 3, 1, 2) == [(0, 1)]
    # train.stop_when_worse: a fold's seeds follow its seed 0, so one process trains them in turn
    assert parallel_folds.jobs_of_process([0, 1, 2], 2, 0, 2, whole_folds=True) == [
        (0, 0),
        (0, 1),
        (2, 0),
        (2, 1),
    ]


def test_seeds_below_one_are_refused_and_with_the_stop_on_they_follow_seed_zero(digits, project):
    digits()
    result = invoke("train", "digits", "--fold", "0", "--seeds", "0")
    assert result.exit_code == 1 and "give 1 or more" in result.output and "Traceback" not in result.output
    assert not list(project.glob("runs/digits/*"))
    assert seeds.check_seeds(digits("train.stop_when_worse=false"), 2) is None
    assert seeds.check_seeds(digits("train.stop_when_worse=true"), 1) is None
    note = seeds.check_seeds(digits("train.stop_when_worse=true"), 2)
    assert "stop where its seed 0 does" in note and "\n" not in note


def test_two_seeds_of_a_fold_are_averaged_in_its_oof_and_in_its_submission(digits, project, monkeypatch):
    settings = ("competition.metric=log_loss", "train.folds=10", "predict.tta=1")
    run_dir = commands.train(digits(*settings), "0", seeds=2)
    run = Run(run_dir)
    fold = run.fold(0)
    records = [fold.seed(seed, record=True) for seed in (0, 1)]
    assert all(record.result_file.exists() for record in records)
    assert fold.last.exists() and fold.seed(1).last.exists()  # seed 0 in fold-0/, seed 1 in its folder
    assert fold.last.read_bytes() != fold.seed(1).last.read_bytes()  # two seeds: two models

    # Each candidate file's kept views in fold-0/ are the mean of the seeds' own; so is the fold's OOF.
    names = fold.kept_oof_names()
    assert names and names == records[0].kept_oof_names() == records[1].kept_oof_names()
    for name in names:
        own = [np.load(record.kept_oof(name)).astype(np.float64) for record in records]
        assert not np.allclose(own[0], own[1])
        assert np.allclose(np.load(fold.kept_oof(name)), np.mean(own, axis=0), atol=1e-6)
    seed_oof = [np.load(record.oof) for record in records]
    assert np.allclose(np.load(fold.oof), np.mean(seed_oof, axis=0), atol=1e-6)

    summary = run.summary()
    assert summary.seeds == 2
    recorded = summary.folds["0"]["seeds"]  # per seed, as each trained alone
    assert [item["seed"] for item in recorded] == [0, 1]
    assert recorded[0]["train_seed"] != recorded[1]["train_seed"]
    assert [item["score"] for item in recorded] == [record.read_result().score for record in records]

    # kit predict: each chosen file predicted by both seeds, their views averaged before the blend.
    result = invoke("predict", "digits", run_dir.name)
    assert result.exit_code == 0, result.output
    chosen = summary.prediction["weights"] if summary.prediction else ["last"]
    views = summary.prediction["views"] if summary.prediction else [0, 1]
    per_seed = []
    for record in records:
        files = [np.load(record.kept_test(name)).astype(np.float64) for name in chosen]
        assert all(len(kept) == len(views) for kept in files)
        per_seed.append(np.mean([kept.mean(0) for kept in files], axis=0))
    assert not np.allclose(per_seed[0], per_seed[1])
    assert np.allclose(np.load(run.test_probabilities), np.mean(per_seed, axis=0), atol=1e-6)

    # Interrupted after seed 0: --resume trains seed 1 only, then averages and settles.
    run.summary_file.unlink()
    fold.result_file.unlink()
    shutil.rmtree(fold.seed(1).folder)
    trained = []
    original = cross_validation.train_fold

    def recording(*arguments, **keywords):
        trained.append(arguments[7] if len(arguments) > 7 else keywords.get("seed"))
        return original(*arguments, **keywords)

    monkeypatch.setattr(cross_validation, "train_fold", recording)
    result = invoke("train", "digits", "--resume", "--run", run_dir.name)
    assert result.exit_code == 0, result.output
    assert trained == [1]
    assert fold.result_file.exists() and run.summary().seeds == 2
    seed_oof = [np.load(record.oof) for record in records]
    assert np.allclose(np.load(fold.oof), np.mean(seed_oof, axis=0), atol=1e-6)


@pytest.mark.slow
def test_with_the_stop_on_a_folds_later_seeds_stop_where_its_seed_zero_did(digits, project, monkeypatch):
    from test_stopping import HARMFUL  # a stage at 100x the rate: the stop fires in stage 1

    planned_by_seed = {}
    original = cross_validation.train_fold

    def recording(*arguments, **keywords):
        planned_by_seed[arguments[7]] = arguments[6]
        return original(*arguments, **keywords)

    monkeypatch.setattr(cross_validation, "train_fold", recording)
    run_dir = commands.train(digits(*HARMFUL, "train.folds=10", "predict.tta=0"), "0", seeds=2)
    fold = Run(run_dir).fold(0)
    stops = [fold.seed(seed, record=True).read_result().recipe["stop"] for seed in (0, 1)]
    leader = "seed 0 of fold 0"
    assert stops[0] is not None and planned_by_seed == {0: None, 1: {"stop": stops[0], "by": leader}}
    assert (stops[1]["stage_index"], stops[1]["epoch"]) == (stops[0]["stage_index"], stops[0]["epoch"])
    assert stops[1]["decided_by"] == leader and f"{leader} stopped here" in stops[1]["reason"]
    # the fold's candidates are seed 0's (here stage-0: its diverged stage-1 weights are no candidate), each
    # averaged over both seeds
    names = fold.kept_oof_names()
    assert names == fold.seed(0, record=True).kept_oof_names()
    assert set(names) <= set(fold.seed(1, record=True).kept_oof_names())
    assert invoke("predict", "digits", run_dir.name).exit_code == 0


@pytest.mark.slow
def test_seeds_in_parallel_as_fold_and_seed_jobs_equal_the_seeds_in_turn(digits, project):
    import json
    import subprocess
    import sys

    from conftest import TINY
    from test_parallel_folds import _environment, _torchrun

    digits()
    environment = _environment(project)
    arguments = ["train", "digits", "--fold", "all", "--parallel", "folds", "--seeds", "2"]
    for value in [*TINY, "train.folds=2", "predict.tta=0"]:
        arguments += ["--set", value]
    # 2 folds x 2 seeds on 2 processes: process 0 trains (fold 0, seed 0) and (fold 1, seed 0), process 1
    # both folds' seed 1; process 0 averages each fold's seeds once both processes finished.
    parallel = _torchrun(["-m", "kit"], arguments, environment)
    assert parallel.returncode == 0, parallel.stdout + parallel.stderr
    (parallel_dir,) = (project / "runs" / "digits").iterdir()
    plan = json.loads(Run(parallel_dir).plan_file.read_text())
    assert plan == {"fold": "all", "parallel": "folds", "seeds": 2}
    sequential = subprocess.run(
        [sys.executable, "-m", "kit", *arguments],
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert sequential.returncode == 0, sequential.stdout + sequential.stderr
    (sequential_dir,) = set((project / "runs" / "digits").iterdir()) - {parallel_dir}

    runs = [Run(parallel_dir), Run(sequential_dir)]
    for number in (0, 1):
        folds = [run.fold(number) for run in runs]
        for seed in (0, 1):
            own = [np.load(fold.seed(seed, record=True).oof) for fold in folds]
            assert np.abs(own[0] - own[1]).max() <= 1e-6  # each job trained as in turn
        seed_oof = [np.load(folds[0].seed(seed, record=True).oof) for seed in (0, 1)]
        assert np.allclose(np.load(folds[0].oof), np.mean(seed_oof, axis=0), atol=1e-6)
    assert np.abs(np.load(runs[0].oof) - np.load(runs[1].oof)).max() <= 1e-6
    assert [run.summary().seeds for run in runs] == [2, 2]


def test_a_packaged_run_carries_every_seeds_weight_files(tmp_path):
    from kit.predict.inference import run_weights
    from kit.run import Summary

    summary = Summary(
        {"folds_trained": [0, 1], "seeds": 2, "prediction": {"weights": ["last", "snapshot-2"]}}
    )
    found = [path.relative_to(tmp_path).as_posix() for path in run_weights(None, tmp_path, summary)]
    assert found == [
        "fold-0/last.pt",
        "fold-0/seed-1/last.pt",
        "fold-0/snapshot-2.pt",
        "fold-0/seed-1/snapshot-2.pt",
        "fold-1/last.pt",
        "fold-1/seed-1/last.pt",
        "fold-1/snapshot-2.pt",
        "fold-1/seed-1/snapshot-2.pt",
    ]
