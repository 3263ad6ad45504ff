"""Training: the recipe's stages for each fold, with one explicit loop (`run_stage`) read top to bottom.

A stage is: which layer groups train, at what image size, with which learning rates, for how many SGDR
cycles, on augmented images or on precomputed body features, saving snapshots or not.

Under torchrun every rank runs this code on its shard of the rows (kit.distributed); rank 0 alone writes.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import click
import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from kit import distributed, metrics, models
from kit.config import Config, Stage
from kit.data.folds import load_folds
from kit.data.images import cache_side
from kit.data.labels import LabelTable
from kit.device import batched_inference, device, gpu_paths, place
from kit.files import read_json, save_array, write_json
from kit.paths import interim_dir
from kit.predict import calibrate, selection
from kit.predict.inference import (
    ensemble_probabilities,
    joined_stages,
    joined_weights_path,
    prediction_cache_side,
    prediction_weights,
    weights_rule,
)
from kit.predict.tta import MIRROR_FIRST, view_names
from kit.tasks import SINGLE_LABEL, SingleLabel
from kit.train import batch_size, pseudo_labels, schedule
from kit.train.stage import FoldState, PreparedStage, prepare_stage, train_step, training_images


def epoch_seed(config: Config, fold: int, stage_index: int, epoch: int) -> int:
    """Randomness is a function of (seed, fold, stage, epoch): a resumed run draws what the original did."""
    return (config.train.seed * 1_000_003 + fold * 10_007 + stage_index * 101 + epoch) % 2**31


def save_resume_point(state: FoldState, prepared: PreparedStage, stage_index: int, epoch: int) -> None:
    """Everything needed to continue after the last completed epoch, written atomically."""
    point = {
        "model": models.unwrap(state.model).state_dict(),
        "optimizer": prepared.optimizer.state_dict(),
        "batch_size": prepared.batch_size,
        "stage_index": stage_index,
        "epoch": epoch,
        "history": state.history,
        "best_score": state.best_score,
        "snapshots_taken": state.snapshots_taken,
        "meta": state.meta,
        "ema": None if state.ema is None else state.ema.module.state_dict(),
        "ema_updates": state.ema_updates,
    }
    models.save_checkpoint(point, state.fold_dir / "resume.pt")


RESUME_FIX = (
    "delete it to train fold {fold} again from its start (`make resume` then does), or start a new run"
)
RESUME_KEYS = {
    "model",
    "optimizer",
    "batch_size",
    "stage_index",
    "epoch",
    "history",
    "best_score",
    "snapshots_taken",
    "meta",
}


def read_resume_point(path: Path, fold: int, stages: int) -> dict:
    """A resume point as save_resume_point wrote it; a damaged or tampered one is one line with the fix."""
    fix = RESUME_FIX.format(fold=fold)
    point = models.load_checkpoint(path, fix)
    missing = sorted(RESUME_KEYS - set(point))
    if missing:
        raise click.ClickException(f"{path}: not a resume point (no {', '.join(missing)}); {fix}")
    if not (isinstance(point["stage_index"], int) and 0 <= point["stage_index"] < stages):
        raise click.ClickException(f"{path}: stage {point['stage_index']!r} is not one of the run's; {fix}")
    return point


def evaluate(
    config: Config,
    module: nn.Module,
    inputs: torch.Tensor | np.ndarray,
    targets: np.ndarray,
    batch_size: int,
    model: nn.Module,
    task: SingleLabel = SINGLE_LABEL,
    image_size: int | None = None,
) -> tuple[float, float, np.ndarray]:
    """Validation loss, metric (at the task's default decisions) and predictions; outputs stay on the
    device until the end (one sync).

    Each rank predicts its shard of the rows; the gathered logits give every rank the same metric.
    """
    model.eval()
    mean, std = model.pretrained_cfg["mean"], model.pretrained_cfg["std"]
    logits = batched_inference(
        module, distributed.shard(inputs), batch_size, mean, std, image_size=image_size
    )
    logits_all = distributed.gather_shards(logits, len(targets))
    loss = task.loss(logits_all, torch.from_numpy(task.encode(targets)).to(logits_all.device)).item()
    predictions = task.activate(logits_all).double().cpu().numpy()
    metric = metrics.METRICS[config.competition.metric]
    score = task.score(metric, targets, predictions) if math.isfinite(loss) else math.nan
    return loss, score, predictions


def check_loss(config: Config, stage: Stage, state: FoldState, epoch: int, kind: str, loss: float) -> None:
    """Stop the stage on a NaN loss, or one 20x a chance guess's (ln classes, ...): the LR is too high.

    Called before any weights of the epoch are saved, so best.pt stays the last good one.
    """
    if math.isfinite(loss) and loss < 20 * state.labels.task.chance_loss(state.meta["classes"]):
        return
    best = state.fold_dir / "best.pt"
    kept = f"last good weights: {best}" if best.exists() else "no good weights were saved"
    raise click.ClickException(
        f"stage '{stage.name}': {kind} loss is {loss:.4g} (diverged) at epoch {epoch}; "
        "lower the learning rate "
        f"(try `make lr-find COMP={config.name}`); {kept}"
    )


def run_stage(config: Config, stage_index: int, state: FoldState, progress: bool = True) -> None:
    """Train one stage of the recipe: the whole loop, from data to snapshots."""
    stage = config.stages[stage_index]
    model = state.model
    compute = device()
    # Pseudo-labels: confident test predictions of this fold's own model so far join the training rows.
    pseudo = pseudo_labels.for_stage(config, stage_index, state) if stage.pseudo_label else None
    prepared = prepare_stage(config, stage_index, state, pseudo)
    batch_size.set_batch_size(
        config, stage_index, state, prepared, train_step
    )  # the largest that fits, rates scaled
    optimizer, module, image_size = prepared.optimizer, prepared.module, prepared.image_size
    train_batches, base_rates = prepared.train_batches, prepared.base_rates
    epoch = 0
    if state.resume is not None and state.resume["stage_index"] == stage_index:  # continue mid-stage
        optimizer.load_state_dict(state.resume["optimizer"])
        epoch = state.resume["epoch"]
    prepared.train_module = distributed.wrap(module)  # DDP over the layer groups this stage trains
    if config.train.compile and gpu_paths(compute) and prepared.images_are_raw:
        prepared.train_module = torch.compile(prepared.train_module)

    # Schedule: per iteration, in fractional epochs; the report draws the same object from base_rates.
    rates = schedule.for_stage(config.train.schedule, stage, base_rates, config.stage_warmup(stage))
    steps_per_epoch = len(train_batches)
    total_steps = max(1, round(rates.epochs * steps_per_epoch))
    cycle_end_steps = [round(end * steps_per_epoch) for end in rates.cycle_end_epochs()]
    mix_until_step = total_steps - round(stage.mix_off_epochs * steps_per_epoch)  # then unmixed images
    step = min(total_steps, epoch * steps_per_epoch)
    bar = tqdm(
        total=total_steps,
        initial=step,
        desc=f"{stage.name} ({image_size}px)",
        disable=not (progress and distributed.is_main()),
        leave=False,
    )
    while step < total_steps:
        epoch_started = time.time()
        seed = epoch_seed(config, state.fold, stage_index, epoch)
        torch.manual_seed(seed + distributed.rank())  # dropout, drop-path: other draws on each rank
        np.random.seed(seed + distributed.rank())  # timm's Mixup/CutMix draw from numpy's global generator
        prepared.generator.manual_seed(seed)  # shuffling: one order on every rank, dealt into shards
        if prepared.transform is not None:
            prepared.transform.set_random_seed(
                seed + distributed.rank()
            )  # augmentation (in-process; workers seed themselves)
        models.train_mode(model)
        loss_sum = torch.zeros((), device=compute)  # summed on the device: no sync per batch
        seen = 0
        for inputs, targets in train_batches:
            factor = rates.factor(step / steps_per_epoch)
            for group in optimizer.param_groups:
                group["lr"] = group["initial_lr"] * factor
            if prepared.mixup is not None:
                prepared.mixup.mixup_enabled = step < mix_until_step
            loss_sum += train_step(prepared, model, inputs, targets) * len(targets)
            if state.ema is not None:  # timm's decay warms up with the number of updates
                state.ema_updates += 1
                state.ema.update(model, step=state.ema_updates)
            seen += len(targets)
            step += 1
            bar.update()
            if step in cycle_end_steps and stage.snapshots:
                state.snapshots_taken += 1
                if distributed.is_main():
                    models.save_weights(
                        model, state.fold_dir / f"snapshot-{state.snapshots_taken}.pt", state.meta
                    )
                    if state.ema is not None:
                        name = f"ema-snapshot-{state.snapshots_taken}.pt"
                        models.save_weights(state.ema.module, state.fold_dir / name, state.meta)
            if step == total_steps:
                break
        epoch += 1

        # End of epoch: validate, record, keep the best and the last weights.
        train_loss = distributed.average(loss_sum / max(seen, 1)).item()  # the same on every rank
        distributed.sync_buffers(model)
        check_loss(config, stage, state, epoch, "training", train_loss)
        valid_loss, valid_score, _ = evaluate(
            config,
            module,
            prepared.valid_inputs,
            prepared.valid_targets,
            prepared.batch_size * 2,
            model,
            prepared.task,
            image_size,
        )
        check_loss(
            config, stage, state, epoch, "validation", valid_loss
        )  # the epoch's last steps show only here
        record = {
            "stage": stage.name,
            "stage_index": stage_index,  # names need not be unique (two stages may both be "train")
            "epoch": epoch,
            "step": step,
            "image_size": image_size,
            "batch_size": prepared.batch_size,
            "base_rates": list(base_rates),
            "lr": factor * base_rates[-1],
            "train_loss": train_loss,
            "valid_loss": valid_loss,
            config.competition.metric: valid_score,
            "seconds": round(time.time() - epoch_started, 2),
        }
        if state.ema is not None:  # the averaged weights, validated alike
            average = state.ema.module
            record["ema_valid_loss"], record[f"ema_{config.competition.metric}"], _ = evaluate(
                config,
                average if prepared.images_are_raw else average.get_classifier(),
                prepared.valid_inputs,
                prepared.valid_targets,
                prepared.batch_size * 2,
                average,
                prepared.task,
                image_size,
            )
        state.history.append(record)
        improved = metrics.is_better(config.competition.metric, valid_score, state.best_score)
        state.best_score = valid_score if improved else state.best_score
        if distributed.is_main():
            tqdm.write(
                f"  {stage.name} epoch {epoch}: train loss {train_loss:.4f}  valid loss {valid_loss:.4f}  "
                f"{config.competition.metric} {valid_score:.4f}  ({record['seconds']:.1f}s)"
            )
            if improved:
                models.save_weights(model, state.fold_dir / "best.pt", state.meta)
            save_resume_point(state, prepared, stage_index, epoch)
    bar.close()
    if distributed.is_main():
        models.save_weights(model, state.fold_dir / "last.pt", state.meta)
        if stage_index in joined_stages(config):  # a second opinion that predicts beside the last stage
            models.save_weights(model, joined_weights_path(state.fold_dir, stage_index), state.meta)
        if state.ema is not None:
            models.save_weights(state.ema.module, state.fold_dir / "ema.pt", state.meta)


def usable_rows(config: Config, labels: LabelTable, run_dir: Path) -> np.ndarray:
    """Rows whose image decodes; a few bad ones are skipped and reported, many stop training."""
    _, problems = training_images(config, labels, cache_side(config.train.image_size))
    if problems:
        # Too many stop the run before it trains (its folder is then removed): the list goes to data/interim.
        too_many = len(problems) > config.data.max_bad_images
        listed = (interim_dir(config.name) if too_many else run_dir) / "bad-images.json"
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
                f"skipping {len(problems)} unreadable training images ({listing}); see bad-images.json"
            )
    bad = {str(p) for p in problems}
    return np.array([i for i, path in enumerate(labels.paths) if str(path) not in bad], dtype=np.int64)


def train_fold(
    config: Config, labels: LabelTable, folds: np.ndarray, fold: int, run_dir: Path, rows: np.ndarray
) -> dict:
    """All stages on one fold; its metrics and OOF probabilities.

    Continues from fold-K/resume.pt if there is one.
    """
    torch.manual_seed(config.train.seed + fold)
    fold_dir = run_dir / f"fold-{fold}"
    model = models.create_model(
        config.train.model, labels.task.head_size(labels.classes), config.train.pretrained
    )
    meta = models.weights_meta(config, labels.classes)
    in_fold = folds[rows] == fold
    state = FoldState(model, labels, rows[~in_fold], rows[in_fold], fold_dir, meta, [], fold=fold)
    first_stage = 0
    if distributed.is_main():  # rank 0 reads the run folder and tells the others
        fold_dir.mkdir(parents=True, exist_ok=True)
        if (fold_dir / "resume.pt").exists():
            state.resume = read_resume_point(fold_dir / "resume.pt", fold, len(config.stages))
    state.resume = distributed.broadcast_object(state.resume)
    if state.resume is not None:
        if state.resume["meta"] != meta:
            raise click.ClickException(f"{fold_dir / 'resume.pt'} was made for another model or class list")
        try:
            model.load_state_dict(state.resume["model"])
        except RuntimeError:  # tensors of other shapes: not this run's model
            raise click.ClickException(
                f"{fold_dir / 'resume.pt'}: its weights do not fit the run's model; "
                f"{RESUME_FIX.format(fold=fold)}"
            ) from None
        state.history, state.best_score = state.resume["history"], state.resume["best_score"]
        state.snapshots_taken, first_stage = state.resume["snapshots_taken"], state.resume["stage_index"]
        if distributed.is_main():
            tqdm.write(f"fold {fold}: resuming stage {first_stage} after epoch {state.resume['epoch']}")
    place(model)  # on the compute device, channels_last on the GPU paths
    if config.train.ema_decay:
        state.ema = models.weights_average(model, config.train.ema_decay)
        if state.resume is not None:
            if state.resume.get("ema") is None:  # every resume point of a run with ema_decay holds it
                raise click.ClickException(
                    f"{fold_dir / 'resume.pt'}: no moving average (train.ema_decay) to resume; "
                    f"{RESUME_FIX.format(fold=fold)}"
                )
            state.ema.module.load_state_dict(state.resume["ema"])
            state.ema_updates = state.resume["ema_updates"]
    for stage_index in range(first_stage, len(config.stages)):
        run_stage(config, stage_index, state)
    images, _ = training_images(config, labels, prediction_cache_side(config))
    return distributed.broadcast_object(out_of_fold(config, state, images) if distributed.is_main() else None)


def out_of_fold(config: Config, state: FoldState, images: np.ndarray) -> dict:
    """Out-of-fold probabilities, made (and written) the way test predictions are.

    That is, from the snapshots or the last weights, with TTA.
    """
    last_stage, model, fold_dir = config.stages[-1], state.model, state.fold_dir
    weights = prediction_weights(config, fold_dir)
    probabilities = ensemble_probabilities(
        model,
        weights,
        state.meta,
        images[state.valid_rows],
        config.stage_batch_size(last_stage) * 2,
        keep=fold_dir / "oof-",
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
    pseudo = {path.name: len(read_json(path)["ids"]) for path in sorted(fold_dir.glob("pseudo-labels-*"))}
    result = {
        "score": score,
        "history": state.history,
        "valid_rows": state.valid_rows,
        "probabilities": probabilities,
        "pseudo_labels": pseudo,  # test images added per pseudo-labelling stage (the files list them)
    }
    save_array(fold_dir / "oof.npy", probabilities)
    write_json(
        fold_dir / "result.json",
        {
            "score": score,
            "history": state.history,
            "valid_rows": state.valid_rows.tolist(),
            "pseudo_labels": pseudo,
        },
    )
    (fold_dir / "resume.pt").unlink(missing_ok=True)  # the fold is done: its result replaces the resume point
    return result


def finished_fold(fold_dir: Path) -> dict | None:
    """A fold completed before an interruption: its result and OOF probabilities, read back."""
    if not (fold_dir / "result.json").exists():
        return None
    result = read_json(fold_dir / "result.json")
    result["valid_rows"] = np.array(result["valid_rows"], dtype=np.int64)
    result["probabilities"] = np.load(fold_dir / "oof.npy")
    return result


def fold_numbers_of(config: Config, fold: str) -> list[int]:
    """--fold K or --fold all as fold numbers, refusing anything else in one line."""
    if fold != "all" and not (fold.isdigit() and int(fold) < config.train.folds):
        raise click.ClickException(f"--fold {fold}: choose 0..{config.train.folds - 1} or 'all'")
    return list(range(config.train.folds)) if fold == "all" else [int(fold)]


def kept_oof(config: Config, fold_dir: Path) -> dict[str, np.ndarray]:
    """A fold's kept per-view OOF probabilities of the weight files that predict, by file stem."""
    return {
        path.stem: np.load(fold_dir / f"oof-{path.stem}.npy").astype(np.float64)
        for path in prediction_weights(config, fold_dir)
    }


def select_prediction(
    config: Config, labels: LabelTable, run_dir: Path, fold_numbers: list[int], results: dict, oof: np.ndarray
) -> tuple[dict, np.ndarray]:
    """Which weight files and views predict (kit.predict.selection), chosen on every trained fold's OOF;
    and the OOF predictions of that choice (NaN rows where no fold predicted), as the test side will be."""
    kept = [kept_oof(config, run_dir / f"fold-{number}") for number in fold_numbers]
    targets = [labels.targets[results[number]["valid_rows"]] for number in fold_numbers]
    names = [path.stem for path in prediction_weights(config, run_dir / f"fold-{fold_numbers[0]}")]
    chosen = selection.choose(
        config.competition.metric,
        kept,
        targets,
        names,
        1 + config.predict.tta,
        config.predict.min_gain,
        labels.task,
        fewest_views=2 if config.augment.preset in MIRROR_FIRST else 1,
        mean=config.predict.mean,
    )
    view_names_all = view_names(config.augment.preset, config.predict.tta)
    chosen["view_names"] = [view_names_all[index] for index in chosen["views"]]
    chosen["forward_passes_per_image"] = chosen["cost"] * len(fold_numbers)
    default = chosen["default"]
    tqdm.write(
        f"prediction: {'+'.join(chosen['weights'])} x {'+'.join(chosen['view_names'])} "
        f"({chosen['forward_passes_per_image']} forward passes per test image; the default "
        f"{default['cost'] * len(fold_numbers)}), OOF {config.competition.metric} {chosen['score']:.4f} "
        f"(default {default['score']:.4f})"
    )
    chosen_oof = np.full_like(oof, np.nan)
    for number, fold_kept in zip(fold_numbers, kept, strict=True):
        rows = results[number]["valid_rows"]
        chosen_oof[rows] = selection.blend(
            fold_kept, tuple(chosen["weights"]), tuple(chosen["views"]), config.predict.mean, labels.task
        )
    return chosen, chosen_oof


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


def cv_summary(config: Config, labels: LabelTable, oof: np.ndarray, row_folds: np.ndarray) -> dict:
    """CV as submitted (calibrated per fold, upload clip included; decisions fitted on OOF) and uncalibrated,
    with the calibration and the decisions (thresholds, cut-points) the submission will apply.

    `cv` is what the submission file will score on these rows; `cv_uncalibrated` the raw OOF's score.
    """
    metric, predicted, task = config.competition.metric, row_folds >= 0, labels.task
    calibration = calibrate.for_metric(metric, oof, labels.targets, row_folds, config.submission.clip_epsilon)
    calibrated = calibrate.apply_by_fold(oof, row_folds, calibration)[predicted]
    targets, raw, scorer = labels.targets[predicted], oof[predicted], metrics.METRICS[metric]
    decisions = task.fit_decisions(calibrated, targets, scorer)
    return {
        "metric": metric,
        "cv": task.score(scorer, targets, calibrated, decisions),
        "cv_uncalibrated": task.score(scorer, targets, raw, decisions),
        "cv_default_decisions": task.score(scorer, targets, raw),
        "task": task.describe(),
        "decisions": decisions,
        "calibration": calibration,
    }


def train(config: Config, labels: LabelTable, fold: str, run_dir: Path) -> dict:
    """Train one fold or all of them (`fold`: as `fold_numbers_of` accepts) in `run_dir`; write OOF
    probabilities and metrics.json."""
    fold_numbers = fold_numbers_of(config, fold)
    with distributed.main_first():  # folds.csv is written once
        folds = load_folds(config, labels)
    if distributed.is_main():
        write_json(run_dir / "plan.json", {"fold": fold})  # what --resume continues
    rows = usable_rows(config, labels, run_dir)
    task = labels.task
    oof = np.full((len(labels.ids), task.head_size(labels.classes)), np.nan)
    row_folds = np.full(len(labels.ids), -1, dtype=np.int64)  # the fold that predicted each row; -1: none
    results = {}
    started = time.time()
    for number in fold_numbers:
        finished = finished_fold(run_dir / f"fold-{number}") if distributed.is_main() else None
        result = distributed.broadcast_object(finished) or train_fold(
            config, labels, folds, number, run_dir, rows
        )
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
            save_array(run_dir / "oof.npy", oof)
    prediction = None
    if config.predict.select and distributed.is_main():
        prediction, oof = select_prediction(config, labels, run_dir, fold_numbers, results, oof)
        save_array(run_dir / "oof.npy", oof)
    prediction = distributed.broadcast_object(prediction)
    summary = {
        **cv_summary(config, labels, oof, row_folds),
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
        write_json(run_dir / "metrics.json", summary)
    return summary
