"""Which saved weight files and TTA views predict, chosen on out-of-fold predictions.

Prediction dominates a CPU run's time (each weight file x each view is a forward pass over the test
set), and not every snapshot or view pays. Training keeps every weight file's per-view OOF
probabilities (fold-K/oof-<weights>.npy), so the choice costs no forward pass: each candidate (all the
default weight files or the last one; all views, the plain view and its mirror, or the plain view alone)
is scored on the OOF rows of every trained fold. The cheapest candidate that is not worse than the
default is taken, and a costlier one only when it gains at least `min_gain` over it (small folds are
noisy: a gain below that is not worth its forward passes); the default itself is always a candidate,
so the choice is never worse on OOF than the default. Where the first view is the mirror image (photos,
tiles: kit.data.tta.MIRROR_FIRST) the plain view is never taken without it: a mirrored photo shows
the same thing, and averaging the two is a hedge whose gain a small fold cannot show (on cats-vs-dogs-dev
the mirror lowered the answer key's log loss by 0.002-0.004 in three runs, while 320 OOF rows preferred
the plain view alone in two of them). Pure numpy.
"""

from __future__ import annotations

import numpy as np

from kit import metrics
from kit.tasks import Task
from kit.train.views import average


def candidates(
    weight_names: list[str], view_count: int, fewest_views: int = 1, default: list[str] | None = None
) -> list[tuple[tuple[str, ...], tuple[int, ...]]]:
    """(weight files, view indices) to try, the default (the `default` files, else all; all views) first;
    then the default's last file alone, and every file alone; no duplicates; none with fewer than
    `fewest_views` views (2: the plain view never goes without its mirror). Blends beyond the default are
    added by `choose`, greedily, from the scores."""
    default_set = tuple(default if default is not None else weight_names)
    singles = [(name,) for name in weight_names]
    weight_sets = [default_set, default_set[-1:], *singles]
    found = []
    for weights in weight_sets:
        for views in view_sets(view_count, fewest_views):
            if weights and (weights, views) not in found:
                found.append((weights, views))
    return found


def view_sets(view_count: int, fewest_views: int = 1) -> list[tuple[int, ...]]:
    """All views, the plain view and its mirror, the plain view alone: none with fewer than `fewest_views`."""
    sets = [tuple(range(view_count)), tuple(range(min(2, view_count))), (0,)]
    kept = []
    for views in sets:
        if len(views) >= min(fewest_views, view_count) and views not in kept:
            kept.append(views)
    return kept


def blend(
    kept: dict[str, np.ndarray],
    weights: tuple[str, ...],
    views: tuple[int, ...],
    mean: str = "probabilities",
    *,
    task: Task,  # no default: a forgotten task would silently average as single-label probabilities
) -> np.ndarray:
    """The average over these weight files and views of kept per-view probabilities (views x rows x C):
    each file's views, then the files, as prediction averages them (kit.predict.inference)."""
    return average([average(kept[name][list(views)], mean, task) for name in weights], mean, task)


def pays(gain: float, min_gain: float) -> bool:
    """Whether a costlier candidate's gain pays for it: at least `min_gain`, and more than rounding (an
    equal score never pays for more forward passes, even with a minimum of 0)."""
    return gain >= min_gain and gain > 1e-12


def choose(
    metric: str,
    kept_by_fold: list[dict[str, np.ndarray]],
    targets_by_fold: list[np.ndarray],
    weight_names: list[str],
    view_count: int,
    min_gain: float,
    task: Task,
    fewest_views: int = 1,
    mean: str = "probabilities",
    default: list[str] | None = None,
) -> dict:
    """The weight files and views that predict, and every candidate's OOF score and cost.

    kept_by_fold: per trained fold, {weight file stem: views x rows x outputs}; `weight_names` are every
    candidate file (every stage's final weights, snapshots), `default` the files the config's rule names
    (kit.train.views.prediction_weights; None: all). Besides `candidates`, blends are grown greedily
    from the best single file, one file at a time while a file gains at least `min_gain`. Scored as the
    task scores (kit.tasks) at its default decisions (thresholds 0.5, rounding): decisions are fitted
    afterwards, on the chosen blend. The cheapest candidate not worse than the default is taken (the best
    of those at one cost), then a costlier one only when it gains at least `min_gain` over it.
    """
    higher = metrics.METRICS[metric].higher_is_better
    targets = np.concatenate(targets_by_fold)
    order = {name: index for index, name in enumerate(weight_names)}
    tried: list[dict] = []

    def score(weights: tuple[str, ...], views: tuple[int, ...]) -> dict:
        weights = tuple(sorted(weights, key=order.get))  # one order per set: duplicates are found
        for item in tried:
            if tuple(item["weights"]) == weights and tuple(item["views"]) == views:
                return item
        blended = [blend(kept, weights, views, mean, task=task) for kept in kept_by_fold]
        probabilities = np.concatenate(blended)
        value = task.score(metrics.METRICS[metric], targets, probabilities)
        item = {
            "weights": list(weights),
            "views": list(views),
            "score": value,
            "cost": len(weights) * len(views),
        }
        tried.append(item)
        return item

    def gain(new: dict, old: dict) -> float:  # positive: `new` is better
        return (new["score"] - old["score"]) if higher else (old["score"] - new["score"])

    for weights, views in candidates(weight_names, view_count, fewest_views, default):
        score(weights, views)
    default_item = tried[0]
    for views in view_sets(view_count, fewest_views):  # blends: greedy forward selection of files
        singles = [score((name,), views) for name in weight_names]
        grown = max(singles, key=lambda item: item["score"] if higher else -item["score"])
        while len(grown["weights"]) < len(weight_names):
            added = [
                score((*grown["weights"], name), views)
                for name in weight_names
                if name not in grown["weights"]
            ]
            better = max(added, key=lambda item: gain(item, grown))
            if not pays(gain(better, grown), min_gain):
                break
            grown = better

    chosen = None
    cheapest_first = sorted(tried, key=lambda item: (item["cost"], -gain(item, default_item)))
    for candidate in cheapest_first:  # at one cost, the best first
        if chosen is None:
            if gain(candidate, default_item) >= -1e-12:  # equal but for rounding (a mean of more copies)
                chosen = candidate
        elif pays(gain(candidate, chosen), min_gain):
            chosen = candidate
    return {**(chosen or default_item), "default": default_item, "candidates": tried, "min_gain": min_gain}


def best_alone(
    metric: str,
    kept_by_fold: list[dict[str, np.ndarray]],
    targets_by_fold: list[np.ndarray],
    names: list[str],
    task: Task,
    mean: str = "probabilities",
) -> str:
    """Of `names`, the weight file whose OOF (all its views) scores best alone on these rows; the first of
    equals wins, a NaN score never does.

    After train.stop_when_worse stopped a fold, this chooses the check point that predicts by default. In
    training it was chosen on the epoch validation of every row of the fold, the rows the CV then scores
    (kit.train.views.weights_after_stop); chosen here, on the rows cross-fitting hands in, it is refitted
    with the other choices (issue 26)."""
    higher = metrics.METRICS[metric].higher_is_better
    targets = np.concatenate(targets_by_fold)

    def goodness(name: str) -> float:
        probabilities = np.concatenate([average(kept[name], mean, task) for kept in kept_by_fold])
        value = task.score(metrics.METRICS[metric], targets, probabilities)
        return -np.inf if np.isnan(value) else (value if higher else -value)

    return max(names, key=goodness)  # max keeps the first of equals
