"""Competition kinds (`competition.task`): what the labels are, what the network outputs, how it learns and
how its outputs become a submission, one small object per kind.

  single_label  one class per image; a logit per class, cross-entropy, softmax; probabilities or the class
  multi_label   space-separated tags; a logit per tag, BCE, sigmoid; a threshold per tag fitted on OOF;
                the tags over their thresholds, space-separated
  regression    a number; one output, MSE on the standardised target, unscaled back; the number
  ordinal       a few integer grades; one output (the grade), MSE on the standardised grade; cut-points
                between grades fitted on OOF; the grade

Ordinal grades are learnt as a regression on the grade index and cut into grades by cut-points fitted
on OOF predictions: a prediction between two grades counts as closer to the right one, which a
per-class softmax ignores and quadratic weighted kappa rewards.

Every part of the kit takes these arrays:
  targets      what `read_labels` made: class index (N,) int64; tags (N, T) float32 0/1; values (N,) float64;
               grade index (N,) int64
  predictions  what the kit averages (snapshots, folds, TTA views, ensembles): (N, head) float64:
               probabilities, tag probabilities, values, grade indices
  decided      `decide(predictions, decisions)`: what a metric and the submission see

This module needs no torch at import: loss and activation take tensors and import torch themselves.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd


class Metric(typing.Protocol):
    """A metric as kit.metrics.METRICS holds it (passed in: this module imports no scikit-learn)."""

    score: typing.Callable[[np.ndarray, np.ndarray], float]  # (targets, decided predictions)
    higher_is_better: bool


# Steps tried per threshold or cut-point in one pass of the coordinate search (fitting decisions on OOF).
SEARCH_STEPS = 41
SEARCH_PASSES = 3
# Smallest probability taken to a log when predictions are averaged as logits (predict.mean = "logits"):
# a member's 0 would otherwise veto a class outright.
LOG_FLOOR = 1e-7


class LabelError(ValueError):
    """A label the task cannot read: (row index, the text, what was expected)."""

    def __init__(self, row: int, text: str, expected: str):
        super().__init__(f"row {row + 2}: label {text!r} is not {expected}")
        self.row, self.text, self.expected = row, text, expected


@dataclass(frozen=True)
class Task:
    """What every competition kind answers; the kinds below are siblings, each stating its own answers
    (a kind never passes for another: a regression is not a single-label task). The methods given here
    are the ones most kinds share: targets used as they are, no decisions fitted on OOF."""

    name: ClassVar[str]
    stratify: ClassVar[str]  # kit.data.folds.SPLITTERS: the fold splitter for these targets
    blend_loss: ClassVar[str]  # kit.predict.ensemble.WEIGHT_FITTERS: how blends are weighted

    @classmethod
    def read_labels(cls, texts: list[str]) -> tuple[Task, np.ndarray, list[str]]:
        """(task, targets, classes) from the label column's texts; LabelError names a bad row."""
        raise NotImplementedError

    def head_size(self, classes: list[str]) -> int:
        """The network's outputs."""
        raise NotImplementedError

    def chance_loss(self, classes: list[str]) -> float:
        """The loss of a uniform guess: a loss far above it means training diverged."""
        raise NotImplementedError

    def encode(self, targets: np.ndarray) -> np.ndarray:
        """Targets as the loss takes them (what the DataLoader yields)."""
        return targets

    def loss(self, outputs, encoded):
        """The training loss of raw head outputs (tensors) against encoded targets."""
        raise NotImplementedError

    def activate(self, outputs):
        """Raw head outputs (tensor) -> predictions (probabilities or values)."""
        raise NotImplementedError

    def mean_of_logits(self, stack: np.ndarray) -> np.ndarray:
        """Predictions (members x rows x outputs) averaged on the scale the head outputs (predict.mean)."""
        raise NotImplementedError

    def blend_truth(self, targets: np.ndarray) -> np.ndarray:
        """What blend weights are fitted against (kit.predict.ensemble.WEIGHT_FITTERS[blend_loss])."""
        raise NotImplementedError

    def fit_decisions(self, predictions: np.ndarray, targets: np.ndarray, metric: Metric) -> dict:
        return {}

    def decide(self, predictions: np.ndarray, decisions: dict | None = None) -> np.ndarray:
        return predictions

    def score(
        self, metric: Metric, targets: np.ndarray, predictions: np.ndarray, decisions: dict | None = None
    ) -> float:
        """The metric of the predictions once decided (thresholds, cut-points; defaults when None)."""
        return metric.score(targets, self.decide(predictions, decisions))

    def submitted_labels(self, predictions: np.ndarray, decisions: dict, classes: list[str]) -> list[str]:
        """The submission's label column (format "label")."""
        raise NotImplementedError

    def label_problem(self, values: pd.Series, classes: list[str]) -> str | None:
        """Why a submission's label column is invalid, or None."""
        raise NotImplementedError

    def row_labels(self, targets: np.ndarray, classes: list[str]) -> list[str]:
        """Each row's label as text (folds.csv, captions)."""
        raise NotImplementedError

    def fold_groups(self, targets: np.ndarray, classes: list[str]) -> list[list[str]]:
        """The groups each row counts in when folds are shown (`kit folds`): its class, its tags, its bin."""
        raise NotImplementedError

    def describe(self) -> dict:
        """What a run records about its task (metrics.json); `from_record` makes the task again from it."""
        return {"name": self.name, **dataclasses.asdict(self)}


def unknown_classes(values: pd.Series, classes: list[str]) -> str | None:
    """Why a label column naming one class per row is invalid (a class not trained on), or None."""
    unknown = set(values.astype(str)) - set(classes)
    return f"unknown labels, e.g. {sorted(unknown)[0]!r}" if unknown else None


@dataclass(frozen=True)
class SingleLabel(Task):
    """One class per image: softmax over the classes, cross-entropy, class probabilities submitted."""

    name: ClassVar[str] = "single_label"
    stratify: ClassVar[str] = "classes"
    blend_loss: ClassVar[str] = "log_loss"

    @classmethod
    def read_labels(cls, texts: list[str]) -> tuple[SingleLabel, np.ndarray, list[str]]:
        classes = sorted(set(texts))
        index = {name: i for i, name in enumerate(classes)}
        return cls(), np.array([index[text] for text in texts], dtype=np.int64), classes

    def head_size(self, classes: list[str]) -> int:
        return len(classes)

    def chance_loss(self, classes: list[str]) -> float:
        return math.log(max(2, len(classes)))

    def loss(self, outputs, encoded):
        """Cross-entropy against class indices, or against soft targets (rows of class weights: label
        smoothing, mixup/cutmix, pseudo-labelled rows scaled by their weight; kit.train.stage)."""
        from torch.nn import functional

        if encoded.is_floating_point():  # in float32 whatever the autocast dtype of the outputs
            return functional.cross_entropy(outputs.float(), encoded.float())
        return functional.cross_entropy(outputs, encoded)

    def activate(self, outputs):
        return outputs.float().softmax(1)

    def mean_of_logits(self, stack: np.ndarray) -> np.ndarray:
        """Predictions (members x rows x outputs) averaged on the scale the head outputs, not as
        probabilities: the softmax of the mean log-probability (a geometric mean, renormalised). Members
        of unequal confidence (a head on frozen features beside the fine-tuned network) then meet in
        between, where the arithmetic mean leans to the one that is less sure (predict.mean)."""
        geometric = np.exp(np.log(np.clip(stack, LOG_FLOOR, None)).mean(0))  # in [LOG_FLOOR, 1]: no overflow
        return geometric / geometric.sum(1, keepdims=True)

    def blend_truth(self, targets: np.ndarray) -> np.ndarray:
        """What blend weights are fitted against (kit.predict.ensemble.WEIGHT_FITTERS[blend_loss]): class
        indices for log loss; for squared error, a perfect prediction (N x head)."""
        return targets

    def submitted_labels(self, predictions: np.ndarray, decisions: dict, classes: list[str]) -> list[str]:
        return [classes[i] for i in predictions.argmax(1)]

    def label_problem(self, values: pd.Series, classes: list[str]) -> str | None:
        return unknown_classes(values, classes)

    def row_labels(self, targets: np.ndarray, classes: list[str]) -> list[str]:
        return [classes[t] for t in targets]

    def fold_groups(self, targets: np.ndarray, classes: list[str]) -> list[list[str]]:
        return [[label] for label in self.row_labels(targets, classes)]


@dataclass(frozen=True)
class MultiLabel(Task):
    """Any number of tags per image: one sigmoid per tag, BCE, thresholds per tag fitted on OOF."""

    name: ClassVar[str] = "multi_label"
    stratify: ClassVar[str] = "tags"
    blend_loss: ClassVar[str] = "squared_error"  # the Brier score of the tag probabilities

    @classmethod
    def read_labels(cls, texts: list[str]) -> tuple[MultiLabel, np.ndarray, list[str]]:
        tag_lists = [text.split() for text in texts]
        classes = sorted({tag for tags in tag_lists for tag in tags})
        index = {name: i for i, name in enumerate(classes)}
        targets = np.zeros((len(texts), len(classes)), dtype=np.float32)
        for row, tags in enumerate(tag_lists):
            targets[row, [index[tag] for tag in tags]] = 1
        return cls(), targets, classes

    def head_size(self, classes: list[str]) -> int:
        return len(classes)

    def chance_loss(self, classes: list[str]) -> float:
        return math.log(2)  # BCE of p = 0.5, per tag

    def blend_truth(self, targets: np.ndarray) -> np.ndarray:
        return targets.astype(np.float64)

    def loss(self, outputs, encoded):
        from torch.nn import functional

        return functional.binary_cross_entropy_with_logits(outputs, encoded.to(outputs.dtype))

    def activate(self, outputs):
        return outputs.float().sigmoid()

    def mean_of_logits(self, stack: np.ndarray) -> np.ndarray:
        """Each tag's probability from the mean of its log-odds."""
        clipped = np.clip(stack, LOG_FLOOR, 1 - LOG_FLOOR)
        return 1 / (1 + np.exp(-np.log(clipped / (1 - clipped)).mean(0)))

    def fit_decisions(self, predictions: np.ndarray, targets: np.ndarray, metric: Metric) -> dict:
        """One threshold per tag maximising the metric on OOF: coordinate ascent from 0.5, each tag's
        threshold searched on a grid with the others held, a few passes (Planet's winning recipe)."""
        grid = np.linspace(0.02, 0.98, SEARCH_STEPS)

        def score(thresholds: np.ndarray) -> float:
            return self.score(metric, targets, predictions, {"thresholds": thresholds.tolist()})

        thresholds = coordinate_search(
            np.full(predictions.shape[1], 0.5), lambda values, tag: grid, score, metric
        )
        return {"thresholds": thresholds.tolist()}

    def decide(self, predictions: np.ndarray, decisions: dict | None = None) -> np.ndarray:
        thresholds = np.asarray((decisions or {}).get("thresholds", 0.5))
        return (predictions >= thresholds).astype(np.float64)

    def submitted_labels(self, predictions: np.ndarray, decisions: dict, classes: list[str]) -> list[str]:
        decided = self.decide(predictions, decisions)
        return [" ".join(classes[i] for i in np.flatnonzero(row)) for row in decided]

    def label_problem(self, values: pd.Series, classes: list[str]) -> str | None:
        unknown = {tag for text in values.astype(str) for tag in text.split()} - set(classes)
        return f"unknown tags, e.g. {sorted(unknown)[0]!r}" if unknown else None

    def row_labels(self, targets: np.ndarray, classes: list[str]) -> list[str]:
        return [" ".join(classes[i] for i in np.flatnonzero(row)) for row in targets]

    def fold_groups(self, targets: np.ndarray, classes: list[str]) -> list[list[str]]:
        return [label.split() for label in self.row_labels(targets, classes)]


@dataclass(frozen=True)
class StandardisedOutput(Task):
    """What regression and ordinal grades share, not a kind itself: one output trained on the standardised
    target ((y - mean) / std of the training labels), so one learning rate suits any scale; predictions
    are unscaled back."""

    blend_loss: ClassVar[str] = "squared_error"
    mean: float = 0.0
    std: float = 1.0

    def head_size(self, classes: list[str]) -> int:
        return 1

    def chance_loss(self, classes: list[str]) -> float:
        # Predicting the mean scores 1 on the standardised scale, but an untrained head's outputs spread
        # over several standard deviations (MSE 10-25 in the first epoch); a diverged one is far beyond.
        return 5.0

    def blend_truth(self, targets: np.ndarray) -> np.ndarray:
        return targets.astype(np.float64)[:, None]

    def encode(self, targets: np.ndarray) -> np.ndarray:
        return ((targets.astype(np.float64) - self.mean) / self.std).astype(np.float32)[:, None]

    def loss(self, outputs, encoded):
        from torch.nn import functional

        return functional.mse_loss(outputs.float(), encoded.float())

    def activate(self, outputs):
        return outputs.float() * self.std + self.mean

    def mean_of_logits(self, stack: np.ndarray) -> np.ndarray:
        """Values have no logits: their plain mean."""
        return stack.mean(0)


@dataclass(frozen=True)
class Regression(StandardisedOutput):
    """A number per image."""

    name: ClassVar[str] = "regression"
    stratify: ClassVar[str] = "bins"

    @classmethod
    def read_labels(cls, texts: list[str]) -> tuple[Regression, np.ndarray, list[str]]:
        values = pd.to_numeric(pd.Series(texts), errors="coerce").to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(values))
        if len(bad):
            raise LabelError(int(bad[0]), texts[bad[0]], "a number (task = 'regression')")
        return cls(float(values.mean()), float(values.std()) or 1.0), values, ["value"]

    def submitted_labels(self, predictions: np.ndarray, decisions: dict, classes: list[str]) -> list[str]:
        return [f"{value:.6g}" for value in self.decide(predictions, decisions)[:, 0]]

    def label_problem(self, values: pd.Series, classes: list[str]) -> str | None:
        numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
        if not np.isfinite(numbers).all():
            return f"row {int(np.argmax(~np.isfinite(numbers))) + 2} is not a finite number"
        return None

    def row_labels(self, targets: np.ndarray, classes: list[str]) -> list[str]:
        return [f"{value:g}" for value in targets]

    def fold_groups(self, targets: np.ndarray, classes: list[str]) -> list[list[str]]:
        bins = pd.qcut(targets, 5, duplicates="drop")  # quintiles of the target
        return [[str(interval)] for interval in bins]


@dataclass(frozen=True)
class Ordinal(StandardisedOutput):
    """A few integer grades (0-4): regression on the grade index, cut into grades by cut-points fitted
    on OOF."""

    name: ClassVar[str] = "ordinal"
    stratify: ClassVar[str] = "classes"
    grade_count: int = 2

    @classmethod
    def read_labels(cls, texts: list[str]) -> tuple[Ordinal, np.ndarray, list[str]]:
        values = pd.to_numeric(pd.Series(texts), errors="coerce").to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(values) | (values != np.round(values)))
        if len(bad):
            raise LabelError(int(bad[0]), texts[bad[0]], "an integer grade (task = 'ordinal')")
        grades = sorted({int(value) for value in values})
        index = {grade: i for i, grade in enumerate(grades)}
        targets = np.array([index[int(value)] for value in values], dtype=np.int64)
        scale = (float(targets.mean()), float(targets.std()) or 1.0)
        return cls(*scale, grade_count=len(grades)), targets, [str(g) for g in grades]

    def fit_decisions(self, predictions: np.ndarray, targets: np.ndarray, metric: Metric) -> dict:
        """Cut-points between grades maximising the metric on OOF: coordinate search, each cut on a grid
        between its neighbours, from rounding (cuts at k + 0.5), a few passes. Cuts stay increasing."""

        def between_neighbours(cuts: np.ndarray, index: int) -> np.ndarray:
            low = cuts[index - 1] if index else cuts[index] - 1
            high = cuts[index + 1] if index + 1 < len(cuts) else cuts[index] + 1
            return np.linspace(low, high, SEARCH_STEPS)[1:-1]

        def score(cuts: np.ndarray) -> float:
            return self.score(metric, targets, predictions, {"cuts": cuts.tolist()})

        start = np.arange(self.grade_count - 1) + 0.5  # rounding to the nearest grade
        return {"cuts": coordinate_search(start, between_neighbours, score, metric.higher_is_better).tolist()}

    def decide(self, predictions: np.ndarray, decisions: dict | None = None) -> np.ndarray:
        """Grade index per row (N x 1): how many cut-points the predicted value passes."""
        cuts = (decisions or {}).get("cuts")
        if cuts is None:  # no fitted cuts: the nearest grade
            return np.clip(np.rint(predictions[:, :1]), 0, self.grade_count - 1).astype(np.float64)
        return np.searchsorted(np.asarray(cuts), predictions[:, 0], side="right")[:, None].astype(np.float64)

    def submitted_labels(self, predictions: np.ndarray, decisions: dict, classes: list[str]) -> list[str]:
        return [classes[int(g)] for g in self.decide(predictions, decisions)[:, 0]]

    def label_problem(self, values: pd.Series, classes: list[str]) -> str | None:
        return unknown_classes(values, classes)

    def row_labels(self, targets: np.ndarray, classes: list[str]) -> list[str]:
        return [classes[t] for t in targets]

    def fold_groups(self, targets: np.ndarray, classes: list[str]) -> list[list[str]]:
        return [[label] for label in self.row_labels(targets, classes)]


def coordinate_search(
    values: np.ndarray,
    candidates: typing.Callable[[np.ndarray, int], np.ndarray],
    score: typing.Callable[[np.ndarray], float],
    higher_is_better: bool,
) -> np.ndarray:
    """Improve `values` one coordinate at a time: each is tried at every candidate with the others held,
    for a few passes. Of the candidates that score best, the middle one is kept: a decision in the
    middle of a plateau, not on its edge next to the OOF rows that bound it. Never scores below the start."""
    best = score(values)
    for _ in range(SEARCH_PASSES):
        improved = False
        for index in range(len(values)):
            grid = candidates(values, index)
            trials = [np.concatenate([values[:index], [value], values[index + 1 :]]) for value in grid]
            found = np.array([score(trial) for trial in trials])
            top = np.flatnonzero(found == (found.max() if higher_is_better else found.min()))
            better = found[top[0]] > best if higher_is_better else found[top[0]] < best
            if better:
                best, values, improved = float(found[top[0]]), trials[top[len(top) // 2]], True
        if not improved:
            break
    return values


TASKS: dict[str, type[Task]] = {
    task.name: task for task in (SingleLabel, MultiLabel, Regression, Ordinal)
}
SINGLE_LABEL = SingleLabel()


def task_names() -> tuple[str, ...]:
    return tuple(TASKS)


def from_record(record: dict) -> Task:
    """The task a run recorded (metrics.json "task"), its settings included (a regression's scale)."""
    fields = dict(record)
    return TASKS[fields.pop("name")](**fields)


def read_labels(task: str, texts: typing.Sequence[str]) -> tuple[Task, np.ndarray, list[str]]:
    """(task object, targets, classes) from the label column's texts; LabelError names a bad row."""
    return TASKS[task].read_labels(list(texts))
