"""Folds side by side: `torchrun --nproc-per-node N -m kit train COMP --fold all --parallel folds`.

Each process trains its own folds (fold k on process k mod N: one GPU each where there are GPUs) from
start to end, as a lone process would (kit.distributed.alone: no DDP, no learning-rate scaling), and writes
their folders into the one run folder. Then every process reports which of its folds failed
(all_gather_object); any failure fails the command on every process, naming the fold, before anything is
settled. For models of a few to tens of millions of parameters, one fold per GPU scales almost linearly,
where DDP inside a fold pays a gradient exchange every step (kept for one big fold: --parallel unset).
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

from tqdm import tqdm

from kit import distributed
from kit.config import Config
from kit.data.folds import load_folds
from kit.data.images import cache_side
from kit.data.labels import LabelTable
from kit.errors import KitError
from kit.files import write_json
from kit.run import SUMMARY_FILE, Run
from kit.train.cross_validation import (
    average_seeds,
    fold_numbers_of,
    seed_zero_stop,
    train_fold,
    usable_rows,
)
from kit.train.stage import training_images
from kit.train.views import prediction_cache_side


def folds_of_process(fold_numbers: list[int], process: int, processes: int) -> list[int]:
    """The folds process `process` of `processes` trains: fold k goes to process k mod processes. Pure."""
    return [number for number in fold_numbers if number % processes == process]


def jobs_of_process(
    fold_numbers: list[int], seed_count: int, process: int, processes: int, whole_folds: bool = False
) -> list[tuple[int, int | None]]:
    """The (fold, seed) jobs process `process` of `processes` trains: every fold's seeds in turn, job i (in
    that order) on process i mod processes; seed None when the folds train one seed each. One seed, or
    `whole_folds` (a fold's later seeds follow its seed 0's stop: train.stop_when_worse): fold k and all
    its seeds, in turn, on process k mod processes (as folds_of_process deals them). Pure."""
    if seed_count == 1 or whole_folds:
        return [
            (number, None if seed_count == 1 else seed)
            for number in folds_of_process(fold_numbers, process, processes)
            for seed in range(seed_count)
        ]
    jobs = [(number, seed) for number in fold_numbers for seed in range(seed_count)]
    return [job for index, job in enumerate(jobs) if index % processes == process]


def failure_line(failures: dict[int, tuple[int, str]], run_dir: Path, competition: str) -> str:
    """One line naming every failed fold, the process it failed in and why, and how to go on. Pure."""
    named = "; ".join(
        f"fold {fold} failed in process {process}: {why}" for fold, (process, why) in sorted(failures.items())
    )
    return (
        f"{named}. Nothing was settled (no {SUMMARY_FILE}); the finished folds are kept in {run_dir}: "
        f"fix the cause, then `kit train {competition} --resume` under the same torchrun trains the folds "
        f"left of this newest interrupted run ({run_dir.name}; torchrun takes --run for its own --run-path)"
    )


def stop_note(stop_when_worse: bool, stop_per_fold: bool, processes: int) -> str | None:
    """The line said when the folds train side by side where, in turn, the later folds would follow
    fold 0's stop (train.stop_when_worse without train.stop_per_fold); None otherwise. Pure."""
    if processes <= 1 or not stop_when_worse or stop_per_fold:
        return None
    return (
        "train.stop_when_worse with --parallel folds: each fold decides its own stop (as with "
        "train.stop_per_fold), since fold 0, whose stop the later folds follow in turn, trains beside them"
    )


def train(config: Config, labels: LabelTable, fold: str, run_dir: Path, seed_count: int = 1) -> list[int]:
    """Every fold of `fold` ("all") trained across the processes torchrun started, each fold's folder
    written by the process that trained it; folds finished before an interruption are kept. With
    `seed_count` > 1 each (fold, seed) is a job of its own (jobs_of_process), and process 0 averages each
    fold's seeds once every process finished (kit.train.cross_validation.average_seeds). Returns the fold
    numbers, on every process, once all of them finished; raises KitError on every process, naming the
    folds, when any failed."""
    run = Run(run_dir)
    fold_numbers = fold_numbers_of(config, fold)
    with distributed.main_first():  # folds.csv is written once
        folds = load_folds(config, labels)
    if distributed.is_main():
        plan = {"fold": fold, "parallel": "folds", **({"seeds": seed_count} if seed_count > 1 else {})}
        write_json(run.plan_file, plan)  # what --resume continues
    rows = usable_rows(config, labels, run)
    _build_caches(config, labels)
    process, processes = distributed.rank(), distributed.world_size()
    note = stop_note(config.train.stop_when_worse, config.train.stop_per_fold, processes)
    if note and distributed.is_main():
        tqdm.write(note)
    waiting = distributed.patient_group()  # made by every process here, before any fold can fail
    failures: dict[int, tuple[int, str]] = {}
    with distributed.alone():
        whole_folds = (
            config.train.stop_when_worse
        )  # a fold's seeds follow its seed 0: one process trains them
        for number, seed in jobs_of_process(fold_numbers, seed_count, process, processes, whole_folds):
            done = run.fold(number) if seed is None else run.fold(number).seed(seed, record=True)
            if run.fold(number).result_file.exists() or done.result_file.exists():
                continue  # finished before an interruption (--resume)
            try:
                # planned=None: each fold decides its own stop (train.stop_when_worse), since fold 0,
                # whose decision the later folds follow in a sequential run, trains at the same time;
                # a fold's later seeds follow its seed 0, trained before them in this process.
                planned = seed_zero_stop(config, run, number) if seed else None
                train_fold(config, labels, folds, number, run, rows, planned=planned, seed=seed)
            except Exception as error:  # reported to every process below; this process trains no more
                tqdm.write(f"fold {number} (process {process}):\n{traceback.format_exc()}", file=sys.stderr)
                failures[number] = (process, ("" if seed is None else f"seed {seed}: ") + _one_line(error))
                break
    gathered = distributed.gather_objects(failures, waiting)  # every process waits here for the slowest
    every_failure = {fold: failed for part in gathered for fold, failed in part.items()}
    if every_failure:
        raise KitError(failure_line(every_failure, run_dir, config.name))
    missing = [number for number in fold_numbers if not _finished(run, number, seed_count)]
    if missing and distributed.is_main():
        raise KitError(
            f"folds {missing} finished in other processes but their results are not in {run_dir} here: "
            "runs/ must be one folder every node writes to (a shared file system)"
        )
    if distributed.is_main():  # every seed of every fold is done: the folds' results are made last
        for number in fold_numbers:
            if not run.fold(number).result_file.exists():
                average_seeds(config, labels, run, number, seed_count)
    return fold_numbers


def _finished(run: Run, number: int, seed_count: int) -> bool:
    """A fold's result is written, or (several seeds) every seed's is, to be averaged."""
    fold = run.fold(number)
    seeds_done = seed_count > 1 and all(
        fold.seed(seed, record=True).result_file.exists() for seed in range(seed_count)
    )
    return fold.result_file.exists() or seeds_done


def _build_caches(config: Config, labels: LabelTable) -> None:
    """Every photo cache the folds read (each stage's size, the prediction size), built by rank 0 first
    and read by the others: inside `alone()` every process would build them at once."""
    sides = {cache_side(config.stage_image_size(stage)) for stage in config.stages}
    for side in sorted(sides | {prediction_cache_side(config)}):
        training_images(config, labels, side)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(getattr(error, "message", error)).split())
    return f"{type(error).__name__}: {text}"[:300] if text else type(error).__name__
