"""How much better the submission of a `--fold all` run should score than its CV, estimated without labels.

The CV scores each training row with the one fold model that did not see it; the submission averages every
fold's model on each test image. An average of models beats each of them alone, and no out-of-fold row can
show by how much (docs/2026-12-03-cv-trust.md: on 181 dog photos of 20 breeds the five models alone scored
1.863 on a held-out key, their average 1.625). The test images show it: where the fold models disagree on an
image, the average gains.

For log loss the gain on an image whose true class is y is exact (and never negative, by the inequality of
the arithmetic and geometric means):

    gain(y) = mean_k(-log p_k[y]) - (-log pbar[y]),   pbar = mean_k p_k (the file averages probabilities)

y is unknown on the test set; the estimate is its expectation under the consensus of the models, averaged
over the test images. The consensus is their normalised geometric mean (the log-opinion pool), not pbar:
an arithmetic mean of disagreeing models is less sure than the truth (its entropy 2.08 against its log loss
1.63 on the dog-breed key; the linear pool is overdispersed, Ranjan & Gneiting 2010), and under pbar the
expectation overstated the measured gain by 37% there (0.324 against 0.238) where the geometric pool
overstated it by 17% (0.278); on 300 cats-vs-dogs photos 0.0153 against 0.0162 measured.

For squared error (RMSE) no expectation is needed: the average's gain in squared error is exactly the fold
models' variance on each image, whatever the truth; it is turned into RMSE from the CV. Pure numpy.
"""

from __future__ import annotations

import math

import numpy as np

from kit.metrics import apply_temperature, clip_and_renormalise

# log 0 guard where no clip is applied (a probability this small is a sure mistake either way)
PROBABILITY_FLOOR = 1e-15


def expected_gain(parts: np.ndarray, epsilon: float | None = None) -> float:
    """The expected log-loss gain of averaging the parts' probabilities over the mean part alone, per image.

    parts: fold models x images x classes (each row a probability vector, as each model alone would be
    submitted); epsilon: the upload's clip, applied to each model alone and to the average as Kaggle
    applies it to a file (None: no clip). Identical parts gain 0."""
    stack = np.asarray(parts, dtype=np.float64)
    floor = PROBABILITY_FLOOR if epsilon is None else max(epsilon, PROBABILITY_FLOOR)
    members = clip_and_renormalise(stack.reshape(-1, stack.shape[-1]), floor).reshape(stack.shape)
    average = clip_and_renormalise(stack.mean(0), floor)
    log_members = np.log(members)
    gain_by_class = -log_members.mean(0) + np.log(average)  # images x classes: gain(y) for each y
    consensus = np.exp(log_members.mean(0))
    consensus /= consensus.sum(1, keepdims=True)
    return float(np.mean(np.sum(consensus * gain_by_class, axis=1)))


def scaled_parts(parts: dict, temperatures: dict[str, float]) -> np.ndarray:
    """Each fold's test probabilities with its own temperature, as the submission scales them before
    averaging (kit.predict.calibrate.apply_to_parts): fold models x images x classes."""
    return np.stack(
        [
            apply_temperature(probabilities, temperatures[str(part)])
            if str(part) in temperatures
            else probabilities
            for part, probabilities in parts.items()
        ]
    )


def squared_error_gain(parts: np.ndarray) -> float:
    """The mean squared error the average of the parts' values gains over the mean part alone, per image:
    exactly the spread of the parts (the variance across them, averaged over the images), whatever the true
    values are (mean_k (y - v_k)^2 = (y - mean_k v_k)^2 + variance_k v_k). parts: fold models x images x 1."""
    values = np.asarray(parts, dtype=np.float64)[..., 0]
    return float(values.var(axis=0).mean())


def rmse_gain(cv: float, spread: float) -> float:
    """By how much the RMSE of the averaged file should beat `cv` (the RMSE of one fold model per row),
    taking the CV's square as the fold models' mean squared error alone and `spread` (squared_error_gain)
    as what averaging removes from it."""
    return cv - math.sqrt(max(cv * cv - spread, 0.0))


def estimate(
    metric: str,
    single_label: bool,
    parts: dict,
    temperatures: dict[str, float],
    epsilon,
    cv: float | None = None,
) -> dict:
    """The record of the estimate for submission.json: the fold models averaged, the metric, and the gain
    (None where it is not estimated: a metric other than log loss and RMSE, tags, or one fold model).
    `cv`: the run's CV, which the RMSE gain is measured from."""
    record = {"fold_models": len(parts), "metric": metric, "gain": None}
    if len(parts) < 2:
        return record
    if metric == "rmse" and cv is not None and math.isfinite(cv):
        spread = squared_error_gain(np.stack(list(parts.values())))
        return {**record, "gain": rmse_gain(cv, spread), "squared_error_gain": spread}
    if metric != "log_loss" or not single_label:
        return record
    return {**record, "gain": expected_gain(scaled_parts(parts, temperatures), epsilon)}


def gain_line(record: dict) -> str:
    """One line for `kit predict`: the file averages K fold models, the CV scores one per row, and by how
    much the leaderboard should beat the CV where it is estimated."""
    said = f"the submission averages {record['fold_models']} fold models; CV scores one per row: "
    if record["gain"] is None:
        metric = record["metric"]
        return said + f"an average usually scores better than its models alone ({metric}: not estimated)"
    if record["metric"] == "rmse":
        how = "RMSE; the fold models' spread on the test images, exact in squared error, taken from the CV"
    else:
        how = "log loss; estimated from how the fold models disagree on the test images"
    return said + f"expect the leaderboard about {record['gain']:.4f} better ({how})"
