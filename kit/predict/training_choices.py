"""Choices made during training on the rows the CV then scores (issue 26), refitted where they can be and
named where they cannot.

A fold's validation rows are its out-of-fold rows: whatever training decides by looking at them flatters
the CV scored on them. Of the choices training can make on them:

- train.stop_when_worse (kit.train.stopping): after a stop, the best check point that kept a weight file
  predicts by default, chosen on the epoch validation of every row of the fold
  (kit.train.views.weights_after_stop). Its files' OOF are kept, so the choice is made again here on the
  rows cross-fitting hands in (`default_chooser`): each part of the OOF rows is scored with the check
  point the other parts prefer. Where the stop ended training (which later check points exist at all) is
  a choice on the rows too, and is named.
- predict.weights = "best": best.pt is the epoch with the best validation score; the other epochs' weights
  are not kept, so the choice cannot be refitted: named.
- pseudo-labels (a stage's pseudo_label): the fold's model is temperature-calibrated on its validation
  rows before the confident test images are taken (kit.train.pseudo_labels): one number, named.

Not choices on the scored rows: the LR finder (fold 0's training rows, and it only prints), the batch-size
probe (one row's shape), the moving average's validation (recorded only), `worse_stages` (reported only).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from kit.config import Config
from kit.predict import selection
from kit.run import stage_stem, weight_file_name
from kit.tasks import Task
from kit.train.views import joined_stages


def stop_of(recipe: dict | None) -> dict | None:
    """A fold's stop as recorded (result.json "recipe"), None without one."""
    return (recipe or {}).get("stop")


def checkpoint_files(recipe: dict | None, names: list[str]) -> list[str]:
    """After a stop, the weight files (stems, in `names`' order) of the check points that kept one and did
    not diverge: what the default's check point is chosen among. [] without a stop."""
    if stop_of(recipe) is None:
        return []
    kept = {
        item["weights"] for item in recipe["checkpoints"] if item["weights"] and not math.isnan(item["score"])
    }
    return [name for name in names if name in kept]


def default_chooser(
    config: Config, task: Task, recipe: dict | None, names: list[str], default: list[Path]
) -> Callable[[list[dict[str, np.ndarray]], list[np.ndarray]], list[str] | None]:
    """default_on(kept per fold, targets per fold) -> the default rule's weight files (stems) that
    selection anchors on (None: every candidate), with, after a stop, its check point chosen on those rows.

    `recipe`: the first trained fold's (its stop and check points, as kit.train.views.prediction_weights
    reads them); `names`: the candidate files every fold kept; `default`: prediction_weights' files."""
    fixed = [path.stem for path in default if path.stem in names] or None
    checkpoints = checkpoint_files(recipe, names)
    if not checkpoints or fixed is None:
        return lambda kept_by_fold, targets_by_fold: fixed
    stop_index = stop_of(recipe)["stage_index"]
    # the stages that join prediction and ran before the stop predict beside the check point, as in training
    ran = [stage_stem(index) for index in joined_stages(config) if index < stop_index]

    def default_on(kept_by_fold: list[dict[str, np.ndarray]], targets_by_fold: list[np.ndarray]) -> list[str]:
        best = selection.best_alone(
            config.competition.metric, kept_by_fold, targets_by_fold, checkpoints, task, config.predict.mean
        )
        return list(dict.fromkeys([*(name for name in ran if name in names), best]))

    return default_on


def named_choices(config: Config, recipes: list[dict | None]) -> list[str]:
    """The choices training made on the scored rows that cross-fitting cannot refit, in words (empty when
    none): the CV is in sample for these."""
    found = []
    if any(stop_of(recipe) is not None for recipe in recipes):
        found.append(
            "train.stop_when_worse ended training where the validation rows said so (the check point that "
            "predicts is chosen again cross-fitted; the epochs never trained are not)"
        )
    if config.predict.weights == "best":
        best = weight_file_name("best")
        found.append(f"predict.weights = 'best': {best} is the epoch with the best validation score")
    if any(stage.pseudo_label for stage in config.stages):
        found.append("pseudo-labels: the fold's temperature for the confidence threshold")
    return found
