"""Training: one recipe stage's loop (`run_stage`), read top to bottom, and the validation it runs.

A stage is: which layer groups train, at what image size, with which learning rates, for how many SGDR
cycles, on augmented images or on precomputed body features, saving snapshots or not. Tricks (the weights'
moving average, mixing switched off late: kit.train.tricks) are objects handed in; resume points are
kit.train.resume's; the folds around the stages are kit.train.cross_validation's.

Under torchrun every rank runs this code on its shard of the rows (kit.distributed); rank 0 alone writes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from kit import distributed, metrics, models
from kit.config import Config, Stage
from kit.device import batched_inference, capability, compile_skipped, device
from kit.errors import KitError
from kit.tasks import SingleLabel
from kit.train import batch_size, pseudo_labels, resume, schedule
from kit.train.stage import FoldState, PreparedStage, prepare_stage, train_step
from kit.train.tricks import StageView, Trick


def epoch_seed(config: Config, fold: int, stage_index: int, epoch: int) -> int:
    """Randomness is a function of (seed, fold, stage, epoch): a resumed run draws what the original did."""
    return (config.train.seed * 1_000_003 + fold * 10_007 + stage_index * 101 + epoch) % 2**31


def evaluate(
    config: Config,
    module: nn.Module,
    inputs: torch.Tensor | np.ndarray,
    targets: np.ndarray,
    batch_size: int,
    model: nn.Module,
    task: SingleLabel,
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


def diverged(state: FoldState, loss: float) -> bool:
    """A NaN loss, or one 20x a chance guess's (ln classes, ...): the LR is too high."""
    return not (math.isfinite(loss) and loss < 20 * state.labels.task.chance_loss(state.meta["classes"]))


def check_loss(config: Config, stage: Stage, state: FoldState, epoch: int, kind: str, loss: float) -> None:
    """Stop the stage on a diverged loss (`diverged`).

    Called before any weights of the epoch are saved, so best.pt stays the last good one.
    """
    if not diverged(state, loss):
        return
    best = state.folder.best
    kept = f"last good weights: {best}" if best.exists() else "no good weights were saved"
    raise KitError(
        f"stage '{stage.name}': {kind} loss is {loss:.4g} (diverged) at epoch {epoch}; "
        "lower the learning rate "
        f"(try `make lr-find COMP={config.name}`); {kept}"
    )


def validation(config: Config, prepared: PreparedStage) -> Callable[[nn.Module], tuple[float, float]]:
    """Validation loss and metric of a model on the stage's validation rows: the fold's model, or a copy
    of it such as its moving average (on precomputed features, its head alone)."""

    def validate(model: nn.Module) -> tuple[float, float]:
        module = model if prepared.images_are_raw else model.get_classifier()
        loss, score, _ = evaluate(
            config,
            module,
            prepared.valid_inputs,
            prepared.valid_targets,
            prepared.batch_size * 2,
            model,
            prepared.task,
            prepared.image_size,
        )
        return loss, score

    return validate


def run_stage(
    config: Config,
    stage_index: int,
    state: FoldState,
    *,
    tricks: Sequence[Trick] = (),
    progress: bool = True,
) -> None:
    """Train one stage of the recipe: the whole loop, from data to snapshots. `tricks` are called at their
    points (kit.train.tricks) in the order given."""
    stage = config.stages[stage_index]
    model = state.model
    compute = device()
    # Pseudo-labels: confident test predictions of this fold's own model so far join the training rows.
    pseudo = pseudo_labels.for_stage(config, stage_index, state) if stage.pseudo_label else None
    prepared = prepare_stage(config, stage_index, state, pseudo)
    batch_size.set_batch_size(config, stage_index, state, prepared, train_step)  # the largest that fits
    optimizer, module, image_size = prepared.optimizer, prepared.module, prepared.image_size
    train_batches, base_rates = prepared.train_batches, prepared.base_rates
    epoch = resume.first_epoch(state, stage_index, optimizer)  # mid-stage: continue after its last epoch
    prepared.train_module = distributed.wrap(module)  # DDP over the layer groups this stage trains
    if config.train.compile and not compile_skipped(capability(compute)) and prepared.images_are_raw:
        prepared.train_module = torch.compile(prepared.train_module)

    # Schedule: per iteration, in fractional epochs; the report draws the same object from base_rates.
    rates = schedule.for_stage(config.train.schedule, stage, base_rates, config.stage_warmup(stage))
    steps_per_epoch = len(train_batches)
    total_steps = max(1, round(rates.epochs * steps_per_epoch))
    cycle_end_steps = [round(end * steps_per_epoch) for end in rates.cycle_end_epochs()]
    step = min(total_steps, epoch * steps_per_epoch)
    validate = validation(config, prepared)
    view = StageView(config, stage_index, state, prepared, steps_per_epoch, total_steps, step, validate)
    for trick in tricks:
        trick.on_stage_start(view)
    bar = tqdm(
        total=total_steps,
        initial=step,
        desc=f"{stage.name} ({image_size}px)",
        disable=not (progress and distributed.is_main()),
        leave=False,
    )
    while step < total_steps and view.stop_reason is None:  # a trick may end the stage (StageView)
        epoch_started = time.time()
        seed = epoch_seed(config, state.fold, stage_index, epoch)
        torch.manual_seed(seed + distributed.rank())  # dropout, drop-path: other draws on each rank
        np.random.seed(seed + distributed.rank())  # timm's Mixup/CutMix draw from numpy's global generator
        prepared.generator.manual_seed(seed)  # shuffling: one order on every rank, dealt into shards
        if prepared.transform is not None:  # augmentation (in-process; workers seed themselves)
            prepared.transform.set_random_seed(seed + distributed.rank())
        models.train_mode(model)
        loss_sum = torch.zeros((), device=compute)  # summed on the device: no sync per batch
        seen = 0
        for inputs, targets in train_batches:
            factor = rates.factor(step / steps_per_epoch)
            for group in optimizer.param_groups:
                group["lr"] = group["initial_lr"] * factor
            loss_sum += train_step(prepared, model, inputs, targets) * len(targets)
            seen += len(targets)
            step += 1
            view.step = step
            for trick in tricks:
                trick.on_step(view)
            bar.update()
            if step in cycle_end_steps and stage.snapshots:
                state.snapshots_taken += 1
                if distributed.is_main():
                    models.save_weights(model, state.folder.snapshot(state.snapshots_taken), state.meta)
                for trick in tricks:
                    trick.on_snapshot(view, state.snapshots_taken)
            if step == total_steps:
                break
        epoch += 1

        # End of epoch: validate, record, keep the best and the last weights.
        train_loss = distributed.average(loss_sum / max(seen, 1)).item()  # the same on every rank
        distributed.sync_buffers(model)
        # A trick that ends the stage on a check point that does not pay (kit.train.stopping) takes a
        # diverged loss as one: the recipe stops there and earlier weights predict, instead of an error.
        tolerated = any(trick.ends_diverged_stage for trick in tricks)
        if not tolerated:
            check_loss(config, stage, state, epoch, "training", train_loss)
        valid_loss, valid_score = validate(model)
        if not tolerated:
            check_loss(config, stage, state, epoch, "validation", valid_loss)  # the epoch's last steps show
        elif diverged(state, train_loss) or diverged(state, valid_loss):
            valid_score = math.nan  # never pays
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
        for trick in tricks:
            trick.on_epoch_end(view, record)
        state.history.append(record)
        improved = metrics.is_better(config.competition.metric, valid_score, state.best_score)
        state.best_score = valid_score if improved else state.best_score
        if distributed.is_main():
            tqdm.write(
                f"  {stage.name} epoch {epoch}: train loss {train_loss:.4f}  valid loss {valid_loss:.4f}  "
                f"{config.competition.metric} {valid_score:.4f}  ({record['seconds']:.1f}s)"
            )
            if improved:
                models.save_weights(model, state.folder.best, state.meta)
            resume.save(state, prepared, stage_index, epoch, tricks)
    bar.close()
    if distributed.is_main():
        models.save_weights(model, state.folder.last, state.meta)
        if stage_index < len(config.stages) - 1:  # every stage's final weights may predict (selection)
            models.save_weights(model, state.folder.stage_weights(stage_index), state.meta)
    for trick in tricks:
        trick.on_stage_end(view)
