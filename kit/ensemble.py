"""OOF ensembles: blend runs with weights fitted on out-of-fold log loss, calibrate, write the submission.

Every run keeps oof.npy (N_train x C probabilities, NaN rows for folds it did not train) and, after
prediction, test-probabilities.npy. A blend is judged only on rows that every run predicted out of fold;
its weights are non-negative and sum to one, and each single run is among the candidates, so the blend's
OOF log loss is never worse than the best run's. The result is a run folder of its own
(runs/<name>/<time>-ensemble) that `kit report` and `kit submit --run` accept like any other run.
"""

from __future__ import annotations

import time
from pathlib import Path

import click
import numpy as np

from kit import calibrate, data, metrics, runs, submission
from kit.config import Config
from kit.runs import find_run, git_commit, read_json, save_array, utc_stamp, write_json


def common_rows(oofs: list[np.ndarray]) -> np.ndarray:
    """Boolean mask of the rows that every run predicted out of fold."""
    return np.logical_and.reduce([~np.isnan(oof).any(1) for oof in oofs])


def blend(probabilities: list[np.ndarray], weights: np.ndarray) -> np.ndarray:
    return sum(weight * array for weight, array in zip(weights, probabilities, strict=True))


def fit_weights(probabilities: list[np.ndarray], targets: np.ndarray) -> np.ndarray:
    """Non-negative weights summing to one that minimise the blend's log loss.

    Rows sum to one, so the blend's probability of the true class is the weighted sum of each run's:
    the loss, -mean log(sum_i w_i q_i), is convex in w and SLSQP finds its minimum on the simplex.
    Uniform and one-hot weights are candidates too, so the result never loses to the best single run.
    """
    from scipy.optimize import minimize

    count = len(probabilities)
    true_class = np.stack([p[np.arange(len(targets)), targets] for p in probabilities], 1)  # rows x runs
    true_class = np.clip(true_class, calibrate.NO_CLIP, 1.0)

    def loss(weights: np.ndarray) -> float:
        return float(-np.mean(np.log(np.clip(true_class @ weights, calibrate.NO_CLIP, None))))

    def gradient(weights: np.ndarray) -> np.ndarray:
        return -np.mean(true_class / np.clip(true_class @ weights, calibrate.NO_CLIP, None)[:, None], 0)

    uniform = np.full(count, 1 / count)
    found = minimize(
        loss, uniform, jac=gradient, method="SLSQP", bounds=[(0.0, 1.0)] * count,
        constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1, "jac": lambda w: np.ones_like(w)}],
    )
    fitted = np.clip(found.x, 0, None)
    candidates = [fitted / fitted.sum() if fitted.sum() > 0 else uniform, uniform, *np.eye(count)]
    losses = [calibrate.log_loss(blend(probabilities, w), targets) for w in candidates]
    return candidates[int(np.argmin(losses))]


def load_run_predictions(run_dirs: list[Path], row_count: int) -> tuple[list[np.ndarray], list[str], str]:
    """Each run's OOF probabilities, checked to cover the same rows and classes; returns (oofs, classes, metric)."""
    oofs, classes = [], None
    for run_dir in run_dirs:
        if not (run_dir / "metrics.json").exists() or not (run_dir / "oof.npy").exists():
            raise click.ClickException(f"{run_dir}: no metrics.json or oof.npy; train it first (`make train`)")
        summary = read_json(run_dir / "metrics.json")
        oof = np.load(run_dir / "oof.npy")
        if classes is not None and summary["classes"] != classes:
            raise click.ClickException(f"{run_dir.name}: its classes differ from {run_dirs[0].name}'s; blend runs of one label set")
        if oof.shape[0] != row_count:
            raise click.ClickException(
                f"{run_dir / 'oof.npy'}: {oof.shape[0]} rows but the labels have {row_count}; the data changed since this run"
            )
        classes = summary["classes"]
        oofs.append(oof)
    return oofs, classes, read_json(run_dirs[0] / "metrics.json")["metric"]


def test_probabilities(run_dir: Path) -> np.ndarray:
    """A run's test probabilities, predicting them first when the run has none yet."""
    path = run_dir / "test-probabilities.npy"
    if not path.exists():
        from kit import predict
        from kit.pipeline import run_config

        click.echo(f"predicting the test set with {run_dir.name} first")
        predict.predict_run(run_config(run_dir), run_dir)
    return np.load(path)


def new_ensemble_dir(config: Config) -> Path:
    base = runs.RUNS_DIR / config.name  # looked up at call time: tests point it elsewhere
    run_dir, suffix = base / f"{utc_stamp()}-ensemble", 1
    while run_dir.exists():
        suffix += 1
        run_dir = base / f"{utc_stamp()}-ensemble-{suffix}"
    run_dir.mkdir(parents=True)
    return run_dir


def ensemble(config: Config, run_dirs: list[Path]) -> Path:
    """Blend runs on OOF, calibrate (log-loss metrics), write the submission; returns the ensemble's folder."""
    if len(run_dirs) < 2 or len(set(run_dirs)) != len(run_dirs):
        raise click.ClickException("an ensemble needs at least two different runs: `kit ensemble COMP RUN RUN ...`")
    started = time.time()
    labels = data.load_labels(config)
    oofs, classes, metric = load_run_predictions(run_dirs, len(labels.ids))
    rows = common_rows(oofs)
    if not rows.any():
        raise click.ClickException(
            "no training image was predicted out of fold by every run; train the runs on shared folds (e.g. --fold all)"
        )
    targets = labels.targets[rows]
    weights = fit_weights([oof[rows] for oof in oofs], targets)
    blended = blend([oof[rows] for oof in oofs], weights)
    temperature, epsilon, before, after = calibrate.calibrate(blended, targets)
    if metric != "log_loss":  # temperature cannot change a label or an accuracy: leave the blend as it is
        temperature, epsilon = 1.0, calibrate.NO_CLIP
    blended = calibrate.apply_calibration(blended, temperature, epsilon)
    cv = metrics.score(metric, targets, blended)
    single = {d.name: {"log_loss": calibrate.log_loss(o[rows], targets), metric: metrics.score(metric, targets, o[rows])}
              for d, o in zip(run_dirs, oofs, strict=True)}

    tests = [test_probabilities(run_dir) for run_dir in run_dirs]
    for run_dir, test in zip(run_dirs, tests, strict=True):
        if test.shape != tests[0].shape:
            raise click.ClickException(
                f"{run_dir / 'test-probabilities.npy'}: shape {test.shape}, but {run_dirs[0].name}'s is {tests[0].shape}; "
                f"the test set changed between runs: re-run `make predict COMP={config.name} RUN={run_dir.name}`"
            )
    test_blend = calibrate.apply_calibration(blend(tests, weights), temperature, epsilon)

    run_dir = new_ensemble_dir(config)
    # config.json makes the folder a run (listed, reportable, submittable): the first run's settings.
    write_json(run_dir / "config.json", read_json(run_dirs[0] / "config.json"))
    write_json(run_dir / "provenance.json", {"commit": git_commit(), "started_utc": utc_stamp(), "runs": [d.name for d in run_dirs]})
    full_oof = np.full((len(labels.ids), len(classes)), np.nan)
    full_oof[rows] = blended
    save_array(run_dir / "oof.npy", full_oof)
    save_array(run_dir / "test-probabilities.npy", test_blend)
    details = {
        "runs": [d.name for d in run_dirs], "weights": [float(w) for w in weights], "rows": int(rows.sum()),
        "single_runs": single, "oof_log_loss": calibrate.log_loss(blend([o[rows] for o in oofs], weights), targets),
        "calibration": {"temperature": temperature, "epsilon": epsilon, "log_loss_before": before, "log_loss_after": after,
                        "applied": metric == "log_loss"},
    }
    write_json(run_dir / "metrics.json", {
        "metric": metric, "cv": cv, "folds_trained": [], "classes": classes,
        "seconds": round(time.time() - started, 1), "folds": {}, "ensemble": details,
    })
    test = data.load_test(config)
    sample = submission.read_sample(config)
    frame = submission.build(config, test.ids, test_blend, classes, sample)
    path = submission.write(config, frame, sample, metric, cv, classes)
    write_json(run_dir / "submission.json", {"file": path.name, "weights": [], "runs": details["runs"]})
    return run_dir


def ensemble_runs(config: Config, run_ids: list[str]) -> Path:
    """`kit ensemble`: the runs by id (or unique prefix), blended; returns the ensemble's folder."""
    return ensemble(config, [find_run(config, run_id) for run_id in run_ids])
