"""The full-data refit (`kit train COMP --fold full [--seeds N]`): the recipe's stages on every training row,
once per seed, after the recipe was chosen on folds.

Nothing here selects: there are no held-out rows. Each seed's stages run to the recipe's end, or to where
the fold run's recipe stopped (train.stop_when_worse: its folds' decision is followed, not made again), its
weight files written as a fold's are, and what predicts, its views and its temperatures are the fold run's
(kit.predict.refit). The loop still validates each epoch, on a few training rows (in sample), only to see
a diverged loss; no decision is made on those figures.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from kit import models
from kit.config import Config
from kit.data.labels import LabelTable
from kit.device import place
from kit.files import write_json
from kit.run import FoldResult, Run
from kit.train import resume, stopping, tricks
from kit.train.cross_validation import usable_rows
from kit.train.loop import run_stage
from kit.train.stage import FoldState

# Training rows the loop's per-epoch validation runs on: in sample, only to catch a diverged loss (a
# forward pass over every row each epoch would cost a third of an epoch for no decision).
MONITOR_ROWS = 256
# A seed's randomness (kit.train.loop.epoch_seed takes a fold number): 100 + seed, a number no fold has,
# so that a full-data seed draws other batches than fold K of the same seed.
SEED_FOLD_OFFSET = 100


def train_seed(
    config: Config, labels: LabelTable, seed: int, run: Run, rows: np.ndarray, planned: dict | None = None
) -> FoldResult:
    """Every stage on every usable row for one seed; its result written (no OOF: valid_rows is empty).
    `planned` ({"stop": the fold run's stop}): the seed stops where the fold run did (`fold_run_stop`)."""
    torch.manual_seed(config.train.seed + SEED_FOLD_OFFSET + seed)
    folder = run.full(seed)
    folder.folder.mkdir(parents=True, exist_ok=True)
    model = models.create_model(
        config.train.model, labels.task.head_size(labels.classes), config.train.pretrained
    )
    meta = models.weights_meta(config, labels.classes)
    monitor = rows[:MONITOR_ROWS]
    state = FoldState(model, labels, rows, monitor, folder.folder, meta, [], fold=SEED_FOLD_OFFSET + seed)
    place(model)
    seed_tricks = tricks.for_fold(config, model)
    # nothing held out to decide on: a stop is the fold run's, followed where it happened
    stop = stopping.StopWhenWorse(config, SEED_FOLD_OFFSET + seed, planned) if planned else None
    seed_tricks += [stop] if stop is not None else []
    first_stage = resume.restore(state, len(config.stages), seed_tricks)
    for stage_index in range(first_stage, len(config.stages)):
        if stop is not None and stop.stopped and stage_index > stop.stop["stage_index"]:
            break  # the fold run's recipe stopped here: its later stages were never trained or chosen
        run_stage(config, stage_index, state, tricks=seed_tricks)
    recipe = stop.recipe(config, state.history) if stop is not None else None
    result = FoldResult(math.nan, state.history, [], {}, recipe)
    folder.write_result(result)
    folder.resume_point.unlink(missing_ok=True)
    return result


def train(config: Config, labels: LabelTable, seeds: int, run_dir: Path, chosen_on: str) -> list[str]:
    """Train `seeds` full-data models in `run_dir` (seeds finished before an interruption kept); returns the
    parts' names, as metrics.json's folds_trained lists them. `chosen_on`: the fold run reused (recorded)."""
    run = Run(run_dir)
    write_json(run.plan_file, {"fold": "full", "seeds": seeds, "chosen_on": chosen_on})  # what --resume does
    rows = usable_rows(config, labels, run)
    stop = fold_run_stop(Run(run_dir.parent / chosen_on))
    if stop is not None:
        tqdm.write(
            f"{chosen_on} stopped in stage '{stop['stage']}' after epoch {stop['epoch']} "
            "(train.stop_when_worse): every seed stops there too, so the files it chose are trained as it "
            "trained them"
        )
    for seed in range(seeds):
        if not run.full(seed).result_file.exists():
            planned = {"stop": stop, "by": f"fold run {chosen_on}"} if stop is not None else None
            train_seed(config, labels, seed, run, rows, planned)
    return [run.full(seed).folder.name for seed in range(seeds)]


def fold_run_stop(source: Run) -> dict | None:
    """Where the fold run's recipe stopped (train.stop_when_worse): the decision of its first trained fold,
    which its later folds followed (with train.stop_per_fold each decided alone: the first's is taken);
    None when it ran every stage."""
    folds = [part for part in source.summary().folds_trained if isinstance(part, int)]
    if not folds:
        return None
    recipe = source.fold(folds[0]).read_result().recipe
    return (recipe or {}).get("stop")
