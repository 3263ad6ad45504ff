"""Cross-validation: the recipe's stages on each fold (`train_fold`, one fold start to end, which a mode that
trains folds side by side can call per fold), then the folds' out-of-fold predictions kept.

Training ends here: each fold's weight files and the per-view OOF probabilities of the files that may
predict. What predicts, its calibration and the CV summary are chosen after, once (kit.predict.summary).
"""

from __future__ import annotations

import time
from pathlib import Path

import click
import numpy as np
import torch
from tqdm import tqdm

from kit import distributed, metrics, models
from kit.config import Config
from kit.data.folds import load_folds
from kit.data.images import cache_side
from kit.data.labels import LabelTable
from kit.device import place
from kit.files import read_json, save_array, write_json
from kit.paths import interim_dir
from kit.predict import summary as run_summary
from kit.predict.inference import (
    ensemble_probabilities,
    prediction_cache_side,
    prediction_weights,
    weights_rule,
)
from kit.run import FoldFolder, Run
from kit.train import resume, tricks
from kit.train.loop import run_stage
from kit.train.stage import FoldState, training_images


def fold_numbers_of(config: Config, fold: str) -> list[int]:
    """--fold K or --fold all as fold numbers, refusing anything else in one line."""
    if fold != "all" and not (fold.isdigit() and int(fold) < config.train.folds):
        raise click.ClickException(f"--fold {fold}: choose 0..{config.train.folds - 1} or 'all'")
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
            raise click.ClickException(
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
    config: Config, labels: LabelTable, folds: np.ndarray, fold: int, run: Run, rows: np.ndarray
) -> dict:
    """All stages on one fold, continued from its resume point if it has one; its result and OOF
    probabilities (every rank gets them)."""
    torch.manual_seed(config.train.seed + fold)
    folder = run.fold(fold)
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
    first_stage = resume.restore(state, len(config.stages), fold_tricks)
    for stage_index in range(first_stage, len(config.stages)):
        run_stage(config, stage_index, state, tricks=fold_tricks)
    images, _ = training_images(config, labels, prediction_cache_side(config))
    return distributed.broadcast_object(out_of_fold(config, state, images) if distributed.is_main() else None)


def out_of_fold(config: Config, state: FoldState, images: np.ndarray) -> dict:
    """Out-of-fold probabilities, made the way test predictions are (the weight files that may predict,
    with TTA), each file's views kept; the fold's result written, its resume point removed."""
    folder = state.folder
    weights = prediction_weights(config, folder.folder)
    probabilities = ensemble_probabilities(
        state.model,
        weights,
        state.meta,
        images[state.valid_rows],
        config.stage_batch_size(config.stages[-1]) * 2,
        keep=folder.kept_oof,
        preset=config.augment.preset,
        tta=config.predict.tta,
        task=state.labels.task,
        image_size=config.predict_image_size(),
        mean=config.predict.mean,
    )
    score = state.labels.task.score(
        metrics.METRICS[config.competition.metric], state.labels.targets[state.valid_rows], probabilities
    )
    tqdm.write(
        f"fold {state.fold}: {config.competition.metric} {score:.4f} "
        f"({len(weights)} weights, TTA {config.predict.tta})"
    )
    pseudo = {path.name: len(read_json(path)["ids"]) for path in folder.pseudo_label_files()}
    result = {
        "score": score,
        "history": state.history,
        "valid_rows": state.valid_rows,
        "probabilities": probabilities,
        "pseudo_labels": pseudo,  # test images added per pseudo-labelling stage (the files list them)
    }
    save_array(folder.oof, probabilities)
    write_json(
        folder.result_file,
        {
            "score": score,
            "history": state.history,
            "valid_rows": state.valid_rows.tolist(),
            "pseudo_labels": pseudo,
        },
    )
    folder.resume_point.unlink(missing_ok=True)  # the fold is done: its result replaces the resume point
    return result


def finished_fold(folder: FoldFolder) -> dict | None:
    """A fold completed before an interruption: its result and OOF probabilities, read back."""
    if not folder.result_file.exists():
        return None
    result = read_json(folder.result_file)
    result["valid_rows"] = np.array(result["valid_rows"], dtype=np.int64)
    result["probabilities"] = np.load(folder.oof)
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


def train(config: Config, labels: LabelTable, fold: str, run_dir: Path) -> dict:
    """Train one fold or all of them (`fold`: as `fold_numbers_of` accepts) in `run_dir`; write OOF
    probabilities and metrics.json."""
    run = Run(run_dir)
    fold_numbers = fold_numbers_of(config, fold)
    with distributed.main_first():  # folds.csv is written once
        folds = load_folds(config, labels)
    if distributed.is_main():
        write_json(run.plan_file, {"fold": fold})  # what --resume continues
    rows = usable_rows(config, labels, run)
    task = labels.task
    oof = np.full((len(labels.ids), task.head_size(labels.classes)), np.nan)
    row_folds = np.full(len(labels.ids), -1, dtype=np.int64)  # the fold that predicted each row; -1: none
    results = {}
    started = time.time()
    for number in fold_numbers:
        finished = finished_fold(run.fold(number)) if distributed.is_main() else None
        finished = distributed.broadcast_object(finished)
        result = finished or train_fold(config, labels, folds, number, run, rows)
        oof[result["valid_rows"]] = result["probabilities"]
        row_folds[result["valid_rows"]] = number
        results[number] = {
            "score": result["score"],
            "history": result["history"],
            "valid_rows": result["valid_rows"],
        }
        if result.get("pseudo_labels"):
            results[number]["pseudo_labels"] = result["pseudo_labels"]
        if distributed.is_main():  # after every fold: an interrupted --fold all keeps its progress
            save_array(run.oof, oof)
    prediction = None
    if config.predict.select and distributed.is_main():
        prediction, oof = run_summary.select_prediction(config, labels, run_dir, fold_numbers, results, oof)
        save_array(run.oof, oof)
    prediction = distributed.broadcast_object(prediction)
    summary = {
        **run_summary.cv_summary(config, labels, oof, row_folds),
        "folds_trained": fold_numbers,
        "classes": labels.classes,
        "seconds": round(time.time() - started, 1),
        "folds": {  # pseudo_labels: test images joined per pseudo-labelling stage (when any)
            str(k): {key: v[key] for key in ("score", "history", "pseudo_labels") if key in v}
            for k, v in results.items()
        },
        "weights_rule": weights_rule(config),
        **({"prediction": prediction} if prediction else {}),
        "worse_stages": {str(k): found for k, v in results.items() if (found := worse_stages(v["history"]))},
    }
    if distributed.is_main():
        write_json(run.summary_file, summary)
    return summary
