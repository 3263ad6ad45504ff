"""The learning-rate finder (Smith's range test, lesson 2): raise the LR exponentially, step by step,
record the loss, stop when it diverges, put the weights back, and suggest a rate.

It runs on any stage of the recipe, so it answers "which LR now?" when frozen, after unfreezing or at
a new image size. The suggestion itself is a pure function: kit.schedule.suggest_lr.
"""

from __future__ import annotations

import copy
import itertools
from pathlib import Path

import numpy as np
import torch

from kit import models, predict, schedule
from kit.config import Config
from kit.data import load_folds, load_labels
from kit.plots import plot_lr_find
from kit.runs import write_json
from kit.stage import FoldState, StageData, prepare_stage, train_step


def range_test(
    data: StageData, model: torch.nn.Module, start: float = 1e-7, end: float = 10.0, steps: int = 100
) -> tuple[list[float], list[float]]:
    """Losses at exponentially rising LRs; the model and optimizer are restored afterwards.

    Per-group learning rates keep their ratios: the group with the largest base LR gets the tried rate.
    """
    saved_model = copy.deepcopy(model.state_dict())
    saved_optimizer = copy.deepcopy(data.optimizer.state_dict())
    largest = max(group["initial_lr"] for group in data.optimizer.param_groups)
    rates_tried, losses = [], []
    models.train_mode(model)
    batches = itertools.chain.from_iterable(itertools.repeat(data.train_batches))  # as many epochs as needed
    for rate, (inputs, targets) in zip(schedule.lr_find_rates(start, end, steps), batches, strict=False):
        for group in data.optimizer.param_groups:
            group["lr"] = rate * group["initial_lr"] / largest
        # One host sync per step is fine here: the range test needs each loss to decide when to stop.
        losses.append(float(train_step(data, model, inputs, targets)))
        rates_tried.append(rate)
        if schedule.diverged(schedule.smooth(losses)):
            break
    model.load_state_dict(saved_model)
    data.optimizer.load_state_dict(saved_optimizer)
    return rates_tried, losses


def lr_find(config: Config, stage_index: int, run_dir: Path, weights: Path | None = None) -> dict:
    """Range test on fold 0's training rows at stage `stage_index`; writes lr-find-stage<N>.json and .png."""
    labels = load_labels(config)
    folds = load_folds(config, labels)
    torch.manual_seed(config.train.seed)  # the same head and batches every time: a repeatable suggestion
    model = models.create_model(config.train.model, len(labels.classes), config.train.pretrained).to(predict.device())
    meta = {"model": config.train.model, "classes": labels.classes}
    if weights is not None:  # e.g. after the frozen stages of a run, to pick the LR for unfreezing
        models.load_weights(model, weights, meta)
    rows = np.arange(len(labels.ids))
    state = FoldState(model, labels, rows[folds != 0], rows[folds == 0], run_dir, meta, [])
    data = prepare_stage(config, stage_index, state)
    rates, losses = range_test(data, model)
    suggestion, reason = schedule.suggest_lr(rates, losses)
    result = {
        "stage": config.stages[stage_index].name, "rates": rates, "losses": losses,
        "suggestion": suggestion, "reason": reason,
    }
    write_json(run_dir / f"lr-find-stage{stage_index}.json", result)
    plot_lr_find(rates, losses, suggestion, run_dir / f"lr-find-stage{stage_index}.png")
    return result
