"""The learning-rate finder (Smith's range test, lesson 2): raise the LR exponentially, step by step,
record the loss, stop when it diverges, put the weights back, and suggest a rate.

It runs on any stage of the recipe, so it answers "which LR now?" when frozen, after unfreezing or at
a new image size. The suggestion itself is a pure function: kit.train.schedule.suggest_lr. The
command draws the plot (kit.report.plots).
"""

from __future__ import annotations

import copy
import itertools
from pathlib import Path

import numpy as np
import torch

from kit import models
from kit.config import Config
from kit.data.folds import load_folds
from kit.data.labels import LabelTable
from kit.device import place
from kit.files import write_json
from kit.run import Run
from kit.train import schedule
from kit.train.stage import FoldState, PreparedStage, prepare_stage, train_step


def range_test(
    prepared: PreparedStage, model: torch.nn.Module, start: float = 1e-7, end: float = 10.0, steps: int = 100
) -> tuple[list[float], list[float]]:
    """Losses at exponentially rising LRs; the model and optimizer are restored afterwards.

    Per-group learning rates keep their ratios: the group with the largest base LR gets the tried rate.
    """
    saved_model = copy.deepcopy(model.state_dict())
    saved_optimizer = copy.deepcopy(prepared.optimizer.state_dict())
    largest = max(group["initial_lr"] for group in prepared.optimizer.param_groups)
    rates_tried, losses = [], []
    models.train_mode(model)
    batches = itertools.chain.from_iterable(
        itertools.repeat(prepared.train_batches)
    )  # as many epochs as needed
    for rate, (inputs, targets) in zip(schedule.lr_find_rates(start, end, steps), batches, strict=False):
        for group in prepared.optimizer.param_groups:
            group["lr"] = rate * group["initial_lr"] / largest
        # One host sync per step is fine here: the range test needs each loss to decide when to stop.
        losses.append(float(train_step(prepared, model, inputs, targets)))
        rates_tried.append(rate)
        if schedule.diverged(schedule.smooth(losses)):
            break
    model.load_state_dict(saved_model)
    prepared.optimizer.load_state_dict(saved_optimizer)
    return rates_tried, losses


def lr_find(
    config: Config, labels: LabelTable, stage_index: int, run_dir: Path, weights: Path | None = None
) -> dict:
    """Range test on fold 0's training rows at stage `stage_index`; writes lr-find-stage<N>.json."""
    folds = load_folds(config, labels)
    torch.manual_seed(config.train.seed)  # the same head and batches every time: a repeatable suggestion
    model = place(
        models.create_model(
            config.train.model, labels.task.head_size(labels.classes), config.train.pretrained
        )
    )
    meta = models.weights_meta(config, labels.classes)
    if weights is not None:  # e.g. after the frozen stages of a run, to pick the LR for unfreezing
        models.load_weights(model, weights, meta)
    rows = np.arange(len(labels.ids))
    state = FoldState(model, labels, rows[folds != 0], rows[folds == 0], run_dir, meta, [])
    prepared = prepare_stage(config, stage_index, state)
    rates, losses = range_test(prepared, model)
    suggestion, reason = schedule.suggest_lr(rates, losses)
    result = {
        "stage": config.stages[stage_index].name,
        "rates": rates,
        "losses": losses,
        "suggestion": suggestion,
        "reason": reason,
    }
    write_json(Run(run_dir).lr_find(stage_index), result)
    return result
