"""Cross-validation: the recipe's stages on each fold (`train_fold`, one fold start to end, which a mode that
trains folds side by side can call per fold), then the folds' out-of-fold predictions kept.

Training ends here: each fold's weight files and the per-view OOF probabilities of the files that may
predict. What predicts, its calibration and the CV summary are chosen after, once (kit.predict.summary).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from kit import distributed, metrics, models
from kit.config import Config
from kit.data.folds import load_folds
from kit.data.images import cache_side
from kit.data.labels import LabelTable
from kit.device import place
from kit.errors import KitError
from kit.files import read_json, save_array, write_json
from kit.paths import interim_dir
from kit.run import FoldFolder, FoldResult, Run
from kit.train import resume, seeds, stopping, tricks
from kit.train.loop import run_stage
from kit.train.stage import FoldState, training_images
from kit.train.views import (
    average,
    candidate_weights,
    ensemble_probabilities,
    prediction_cache_side,
    prediction_weights,
    weight_image_sizes,
)


def fold_numbers_of(config: Config, fold: str) -> list[int]:
    """--fold K or --fold all as fold numbers, refusing anything else in one line."""
    if fold != "all" and not (fold.isdigit() and int(fold) < config.train.folds):
        raise KitError(f"--fold {fold}: choose 0..{config.train.folds - 1} or 'all'")
    return list(range(config.train.folds)) if fold == "all" else [int(fold)]


def usable_rows(config: Config, labels: LabelTable, run: Run) -> np.ndarray:
    """Rows whose image decodes; a few bad ones are skipped and reported, many stop training."""
    _, problems = training_images(config, labels, cache_side(config.train.image_size))
    if problems:
        # Too many stop the run before it trains (its folder is then removed): the list goes to data/interim.
        too_many = len(problems) > config.data.max_bad_images
        listed = interim_dir(config.name) / run.bad_images.name if too_many else run.bad_images
        if distributed.is_main():
            write_json(listed, problems)
        listing = "; ".join(f"{Path(p).name}: {why}" for p, why in list(problems.items())[:5])
        if too_many:
            raise KitError(
                f"{len(problems)} training images cannot be read (limit data.max_bad_images = "
                f"{config.data.max_bad_images}): {listing} ...; fix or re-download them, or raise "
                f"data.max_bad_images (list in {listed})"
            )
        if distributed.is_main():
            tqdm.write(
                f"skipping {len(problems)} unreadable training images ({listing}); see {run.bad_images.name}"
            )
    bad = {str(p) for p in problems}
    return np.array([i for i, path in enumerate(labels.paths) if str(path) not in bad], dtype=np.int64)


def train_fold(
    config: Config,
    labels: LabelTable,
    folds: np.ndarray,
    fold: int,
    run: Run,
    rows: np.ndarray,
    planned: dict | None = None,
    seed: int | None = None,
) -> FoldResult:
    """All stages on one fold, continued from its resume point if it has one; its result (every rank
    gets it), written with its OOF probabilities and each weight file's views.

    With train.stop_when_worse, a check point that does not pay ends the stage and skips the later ones
    (kit.train.stopping); `planned` ({"stop": fold 0's stop or None}) makes the fold stop where fold 0 did
    instead of deciding on its own. `seed` (--seeds N): seed S of the fold, trained with its own
    randomness (kit.train.seeds), its result and views written in its seed folder, not the fold's."""
    config = config if seed is None else seeds.seed_config(config, seed)
    torch.manual_seed(config.train.seed + fold)
    folder = run.fold(fold) if seed is None else run.fold(fold).seed(seed)
    record = folder if seed is None else run.fold(fold).seed(seed, record=True)
    model = models.create_model(
        config.train.model, labels.task.head_size(labels.classes), config.train.pretrained
    )
    meta = models.weights_meta(config, labels.classes)
    in_fold = folds[rows] == fold
    state = FoldState(model, labels, rows[~in_fold], rows[in_fold], folder.folder, meta, [], fold=fold)
    if distributed.is_main():
        folder.folder.mkdir(parents=True, exist_ok=True)
    place(model)  # on the compute device, channels_last on the GPU paths
    fold_tricks = tricks.for_fold(config, model)
    stop = stopping.StopWhenWorse(config, fold, planned) if config.train.stop_when_worse else None
    fold_tricks += [stop] if stop is not None else []
    first_stage = resume.restore(state, len(config.stages), fold_tricks)
    for stage_index in range(first_stage, len(config.stages)):
        if stop is not None and stop.stopped and stage_index > stop.stop["stage_index"]:
            break  # the recipe stopped paying: the later stages are skipped (recorded in the result)
        run_stage(config, stage_index, state, tricks=fold_tricks)
    recipe = stop.recipe(config, state.history) if stop is not None else None
    images, _ = training_images(config, labels, prediction_cache_side(config))
    return distributed.broadcast_object(
        out_of_fold(config, state, images, recipe, record) if distributed.is_main() else None
    )


def out_of_fold(
    config: Config,
    state: FoldState,
    images: np.ndarray,
    recipe: dict | None = None,
    record: FoldFolder | None = None,
) -> FoldResult:
    """Out-of-fold probabilities, made the way test predictions are (with TTA): every candidate weight
    file's views kept for selection (kit.train.views.candidate_weights), the default rule's blend as the
    fold's OOF; the fold's result written, its resume point removed. `record`: where the views, OOF and
    result are written (a seed's folder; default: the fold's, where its weights are)."""
    folder = state.folder
    record = record or folder
    record.folder.mkdir(parents=True, exist_ok=True)
    weights = prediction_weights(config, folder.folder, recipe)
    candidates = candidate_weights(config, folder.folder, recipe)
    ensemble_probabilities(
        state.model,
        candidates,
        state.meta,
        images[state.valid_rows],
        config.stage_batch_size(config.stages[-1]) * 2,
        keep=record.kept_oof,  # every candidate's views: no file is predicted twice
        preset=config.augment.preset,
        tta=config.predict.tta,
        task=state.labels.task,
        image_size=config.predict_image_size(),
        image_sizes=weight_image_sizes(config, candidates),  # each stage's weights at their stage's size
        mean=config.predict.mean,
        precision=config.predict.precision,  # OOF predicted as the test set will be
    )
    probabilities, score = default_blend(config, state.labels, record, weights, state.valid_rows)
    tqdm.write(
        f"fold {state.fold}{'' if record is folder else f' ({record.folder.name})'}: "
        f"{config.competition.metric} {score:.4f} ({len(weights)} weights, TTA {config.predict.tta})"
    )
    pseudo = {path.name: len(read_json(path)["ids"]) for path in folder.pseudo_label_files()}
    result = FoldResult(score, state.history, state.valid_rows.tolist(), pseudo, recipe)
    save_array(record.oof, probabilities)
    record.write_result(result)
    folder.resume_point.unlink(missing_ok=True)  # the fold is done: its result replaces the resume point
    return result


def default_blend(
    config: Config, labels: LabelTable, record: FoldFolder, weights: list[Path], valid_rows: np.ndarray
) -> tuple[np.ndarray, float]:
    """The default rule's blend of a fold's kept views of `weights` (as prediction makes it), and its
    score on the fold's validation rows."""
    task, mean = labels.task, config.predict.mean
    kept = [average(np.load(record.kept_oof(path.stem)).astype(np.float64), mean, task) for path in weights]
    probabilities = average(kept, mean, task)
    score = task.score(metrics.METRICS[config.competition.metric], labels.targets[valid_rows], probabilities)
    return probabilities, score


def average_seeds(config: Config, labels: LabelTable, run: Run, number: int, seed_count: int) -> FoldResult:
    """After a fold's last seed: each candidate file's kept OOF views in the fold's folder made the mean
    of its seeds' (each seed's own stays in its seed folder), the fold's OOF and score made again from
    them, and the fold's result written last (its seeds recorded in it)."""
    fold = run.fold(number)
    records = [fold.seed(seed, record=True) for seed in range(seed_count)]
    results = [record.read_result() for record in records]
    names = records[0].kept_oof_names()
    for seed, record in enumerate(records):
        lacking = [name for name in names if not record.kept_oof(name).exists()]
        if lacking:  # a seed that diverged stops where it diverged, before seed 0's check point
            raise KitError(
                f"fold {number}, seed {seed}: no kept views of {', '.join(lacking)} ({record.folder}; its "
                "loss diverged and it stopped early?): lower the diverging stage's learning rate, or train "
                "one seed"
            )
    for name in names:
        mean = seeds.mean_over_seeds([np.load(record.kept_oof(name)) for record in records])
        save_array(fold.kept_oof(name), mean.astype(np.float32))  # float32, as every kept view is
    weights = prediction_weights(config, fold.folder, results[0].recipe)
    valid_rows = results[0].rows
    probabilities, score = default_blend(config, labels, fold, weights, valid_rows)
    tqdm.write(f"fold {number}: {config.competition.metric} {score:.4f} ({seed_count} seeds averaged)")
    first = results[0]
    result = FoldResult(
        score,
        first.history,
        first.valid_rows,
        first.pseudo_labels,
        first.recipe,
        seeds.seed_records(config, results),
    )
    save_array(fold.oof, probabilities)
    fold.write_result(result)
    return result


def worse_stages(history: list[dict]) -> list[dict]:
    """Stages whose validation loss ended higher than it started: the loss before the stage's first epoch
    (the previous stage's last), or, for the first stage, after its first epoch. A pure function."""
    found, before, index = [], None, 0
    while index < len(history):
        stage = history[index]["stage"]
        end = index
        while end + 1 < len(history) and history[end + 1]["stage"] == stage:
            end += 1
        start = before if before is not None else history[index]["valid_loss"]
        if history[end]["valid_loss"] > start:
            found.append({"stage": stage, "start": start, "end": history[end]["valid_loss"]})
        before, index = history[end]["valid_loss"], end + 1
    return found


def train(config: Config, labels: LabelTable, fold: str, run_dir: Path, seed_count: int = 1) -> list[int]:
    """Train one fold or all of them (`fold`: as `fold_numbers_of` accepts) in `run_dir`, each fold's
    weight files, kept views and result written; folds finished before an interruption are kept as they
    are. `seed_count` (--seeds N): each fold trained with N seeds, then averaged (kit.train.seeds); the
    seeds finished before an interruption are kept too. Returns the fold numbers: what
    kit.predict.summary chooses, calibrates and summarises after."""
    run = Run(run_dir)
    fold_numbers = fold_numbers_of(config, fold)
    with distributed.main_first():  # folds.csv is written once
        folds = load_folds(config, labels)
    if distributed.is_main():
        plan = {"fold": fold, **({"seeds": seed_count} if seed_count > 1 else {})}
        write_json(run.plan_file, plan)  # what --resume continues
    rows = usable_rows(config, labels, run)
    for number in fold_numbers:
        finished = distributed.broadcast_object(run.fold(number).result_file.exists())
        if finished:
            continue
        planned = planned_stop(config, run, fold_numbers, number)
        if seed_count == 1:
            train_fold(config, labels, folds, number, run, rows, planned)
            continue
        for seed in range(seed_count):
            record = run.fold(number).seed(seed, record=True)
            if not distributed.broadcast_object(record.result_file.exists()):
                follows = planned if seed == 0 or planned is not None else seed_zero_stop(config, run, number)
                train_fold(config, labels, folds, number, run, rows, follows, seed)
        if distributed.is_main():
            average_seeds(config, labels, run, number, seed_count)
    return fold_numbers


def seed_zero_stop(config: Config, run: Run, number: int) -> dict | None:
    """With --seeds N and train.stop_when_worse, seed 0's stop decision for the fold's later seeds, so
    that every seed runs the same check points and their files average file by file: {"stop": where seed 0
    stopped, or None}. None: the stop is off."""
    if not config.train.stop_when_worse:
        return None
    record = run.fold(number).seed(0, record=True)
    recipe = distributed.broadcast_object(record.read_result().recipe if distributed.is_main() else None)
    return {"stop": (recipe or {}).get("stop"), "by": f"seed 0 of fold {number}"}


def planned_stop(config: Config, run: Run, fold_numbers: list[int], number: int) -> dict | None:
    """With --fold all (fold 0 trained first), fold 0's stop decision for a later fold, so that the folds
    stay one recipe: {"stop": where fold 0 stopped, or None when it ran every stage}. None: the fold
    decides on its own (train.stop_per_fold, the stop off, or fold 0 not trained in this run)."""
    if not config.train.stop_when_worse or config.train.stop_per_fold:
        return None
    if number == 0 or fold_numbers[0] != 0:
        return None
    recipe = distributed.broadcast_object(run.fold(0).read_result().recipe if distributed.is_main() else None)
    return {"stop": (recipe or {}).get("stop")}
