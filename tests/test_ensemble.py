"""OOF ensembles and calibration: pure numpy properties, then a blend of two tiny digits runs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import invoke

from kit import commands
from kit.data.labels import load_labels
from kit.predict import calibrate, ensemble
from kit.run import BLEND, LAYOUT, Run


def softmax(logits: np.ndarray) -> np.ndarray:
    exponentials = np.exp(logits - logits.max(1, keepdims=True))
    return exponentials / exponentials.sum(1, keepdims=True)


def synthetic(rows: int = 2000, classes: int = 10, signal: float = 2.0, seed: int = 0):
    """Logits whose true class is `signal` higher on average, and the targets."""
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, classes, rows)
    logits = rng.normal(size=(rows, classes))
    logits[np.arange(rows), targets] += signal
    return logits, targets


def test_temperature_softens_over_confident_and_sharpens_under_confident_predictions():
    logits, targets = synthetic()
    over_temperature, _, over_before, over_after = calibrate.calibrate(softmax(4 * logits), targets)
    under_temperature, _, under_before, under_after = calibrate.calibrate(softmax(0.25 * logits), targets)
    # With unit Gaussian noise the true posterior is softmax(signal * logits) = softmax(2 * logits):
    # 4x logits are twice too sharp (T = 2), 0.25x eight times too soft (T = 1/8).
    assert over_temperature == pytest.approx(2, rel=0.1) and over_after < over_before - 0.05
    assert under_temperature == pytest.approx(1 / 8, rel=0.1) and under_after < under_before - 0.5
    reference = calibrate.log_loss(softmax(2 * logits), targets)
    assert over_after == pytest.approx(reference, abs=0.005) and under_after == pytest.approx(
        reference, abs=0.005
    )


@pytest.mark.parametrize("seed", range(12))
def test_calibration_never_raises_oof_log_loss(seed):
    rng = np.random.default_rng(seed)
    rows, classes = int(rng.integers(5, 300)), int(rng.integers(2, 12))
    # Anything from pure noise to sharp, from well-calibrated to wildly off,
    # even labels that ignore the model.
    probabilities = rng.dirichlet(np.full(classes, rng.choice([0.05, 0.5, 5.0])), rows)
    targets = rng.integers(0, classes, rows) if seed % 3 == 0 else probabilities.argmax(1)
    temperature, epsilon, before, after = calibrate.calibrate(probabilities, targets)
    assert after <= before
    assert after == pytest.approx(
        calibrate.log_loss(calibrate.apply_temperature(probabilities, temperature), targets, epsilon)
    )


def test_calibrated_rows_keep_their_argmax_and_sum_to_one():
    logits, _ = synthetic(rows=50)
    probabilities = softmax(3 * logits)
    for temperature in (0.3, 1.0, 4.0):
        scaled = calibrate.apply_calibration(probabilities, temperature, 1e-3)
        assert np.array_equal(scaled.argmax(1), probabilities.argmax(1))
        assert np.allclose(scaled.sum(1), 1)
    assert np.allclose(calibrate.apply_temperature(probabilities, 1.0), probabilities)


def test_epsilon_is_chosen_on_oof_to_soften_confident_mistakes():
    targets = np.zeros(100, dtype=np.int64)
    probabilities = np.tile([0.99, 0.01], (100, 1))
    probabilities[0] = [1e-12, 1 - 1e-12]  # one confidently wrong row would cost 0.28 on its own
    epsilon = calibrate.choose_epsilon(probabilities, targets)
    assert epsilon > calibrate.NO_CLIP
    assert calibrate.log_loss(probabilities, targets, epsilon) < calibrate.log_loss(probabilities, targets)


def test_oof_nan_rows_are_ignored_by_calibration():
    logits, targets = synthetic(rows=200)
    probabilities = softmax(3 * logits)
    probabilities[:50] = np.nan
    temperature, _, before, after = calibrate.calibrate(probabilities, targets)
    assert np.isfinite([temperature, before, after]).all() and after <= before


def test_weights_lie_on_the_simplex_and_the_blend_beats_each_run():
    logits, targets = synthetic(signal=1.5)
    rng = np.random.default_rng(1)
    # Two runs that see the truth through independent noise: the blend knows more than either.
    first, second = (softmax(logits + rng.normal(scale=1.5, size=logits.shape)) for _ in range(2))
    weights = ensemble.fit_weights([first, second], targets)
    assert np.all(weights >= 0) and weights.sum() == pytest.approx(1)
    blended = calibrate.log_loss(ensemble.blend([first, second], weights), targets)
    assert blended < min(calibrate.log_loss(first, targets), calibrate.log_loss(second, targets)) - 0.01


def test_a_useless_run_gets_no_weight():
    logits, targets = synthetic()
    good = softmax(logits)
    noise = np.random.default_rng(2).dirichlet(np.ones(10), len(targets))
    weights = ensemble.fit_weights([noise, good], targets)
    assert weights[1] > 0.95
    assert calibrate.log_loss(ensemble.blend([noise, good], weights), targets) <= calibrate.log_loss(
        good, targets
    )


def test_common_rows_are_those_every_run_predicted():
    first, second = np.ones((5, 2)) / 2, np.ones((5, 2)) / 2
    first[[0, 1]] = np.nan
    second[[1, 4]] = np.nan
    assert ensemble.common_rows([first, second]).tolist() == [False, False, True, True, False]


@pytest.mark.slow
def test_ensemble_of_two_digits_runs_beats_the_better_one_on_oof(digits, project):
    # Log loss as the metric, so calibration is fitted and applied end to end; fold 0 of 10 keeps it quick.
    settings = ("competition.metric=log_loss", "train.folds=10", "train.lr=1e-2", "predict.tta=0")
    first = commands.train(digits(*settings), "0")
    second = commands.train(digits(*settings, "train.seed=7"), "0")
    assert invoke("ensemble", "digits", first.name).exit_code == 1  # one run is not an ensemble

    result = invoke("ensemble", "digits", first.name, second.name)
    assert result.exit_code == 0, result.output
    (blend_dir,) = (project / "runs" / "digits").glob("*-ensemble")
    summary = json.loads((blend_dir / "metrics.json").read_text())
    targets = load_labels(digits()).targets
    oofs = [np.load(run / "oof.npy") for run in (first, second)]
    rows = ensemble.common_rows(oofs)
    assert 0 < rows.sum() < len(targets)  # fold 0 only
    singles = [calibrate.log_loss(oof[rows], targets[rows]) for oof in oofs]
    blended = np.load(blend_dir / "oof.npy")
    # The in-sample figure (fitted and scored on these rows) beats each run; the CV itself is cross-fitted.
    assert summary["metric"] == "log_loss" and summary["cv_in_sample"] <= min(singles) + 1e-12
    # oof.npy is the uncalibrated blend (like a run's); the CV is the calibrated one, as submitted.
    assert calibrate.log_loss(blended[rows], targets[rows]) == pytest.approx(summary["cv_uncalibrated"])
    calibrated = calibrate.apply_to_parts({BLEND: blended[rows]}, Run(blend_dir).read_calibration())
    assert calibrate.log_loss(calibrated, targets[rows]) == pytest.approx(summary["cv_in_sample"])
    assert np.isnan(blended[~rows]).all()
    details = summary["ensemble"]
    fitted = Run(blend_dir).read_calibration()  # calibration.json: one shape for runs and blends
    assert fitted.after <= fitted.before
    assert sum(details["weights"]) == pytest.approx(1) and min(details["weights"]) >= 0

    # The blended submission: written from both runs' test probabilities (predicted on demand),
    # valid, submittable.
    assert all((run / "test-probabilities.npy").exists() for run in (first, second))
    name = json.loads((blend_dir / "submission.json").read_text())["file"]
    frame = pd.read_csv(project / "submissions" / name, dtype=str)
    assert len(frame) == 360 and set(frame["label"]) <= {str(d) for d in range(10)}
    result = invoke("submit", "digits", "--run", blend_dir.name, "-m", "blend")
    assert result.exit_code == 0 and "local leaderboard" in result.output, result.output
    assert blend_dir.name in invoke("runs", "digits").output

    # An ensemble has no weights to predict with: a deleted CSV is rebuilt from its blended test
    # probabilities, then submitted (this once ended in a traceback).
    (project / "submissions" / name).unlink()
    result = invoke("submit", "digits", "--run", blend_dir.name, "-m", "blend again")
    assert result.exit_code == 0 and "local leaderboard" in result.output, result.output
    rebuilt = json.loads((blend_dir / "submission.json").read_text())["file"]
    pd.testing.assert_frame_equal(pd.read_csv(project / "submissions" / rebuilt, dtype=str), frame)
    ledger = pd.read_csv(project / "submissions" / "ledger.csv", dtype=str)
    assert ledger["message"].str.startswith("blend again |").sum() == 1


def fake_run(project, name: str, oof: np.ndarray, classes: list[str]):
    run_dir = project / "runs" / "digits" / name
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text("{}")
    (run_dir / "metrics.json").write_text(
        json.dumps({"layout": LAYOUT, "metric": "accuracy", "cv": 0.5, "classes": classes, "folds": {}})
    )
    np.save(run_dir / "oof.npy", oof)
    return run_dir


def test_runs_that_cannot_be_blended_are_refused_in_one_line(digits, project):
    labels = load_labels(digits())
    probabilities = np.full((len(labels.ids), 10), 0.1)
    first_half, second_half = probabilities.copy(), probabilities.copy()
    first_half[: len(labels.ids) // 2] = np.nan
    second_half[len(labels.ids) // 2 :] = np.nan
    fake_run(project, "a", first_half, labels.classes)
    fake_run(project, "b", second_half, labels.classes)
    fake_run(project, "c", probabilities, [*labels.classes[:9], "x"])
    fake_run(project, "d", probabilities[:100], labels.classes)
    for runs, message in (
        (["a", "b"], "no training image was predicted out of fold by every run"),
        (["a", "c"], "classes differ"),
        (["a", "d"], "the data changed since this run"),
        (["a", "a"], "at least two different runs"),
    ):
        result = invoke("ensemble", "digits", *runs)
        assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output, (
            result.output
        )


@pytest.mark.slow
def test_kept_variants_of_one_run_blend_like_runs(digits, project):
    # Two snapshots, each kept with its plain view and one TTA view: four blendable variants of one run.
    config = digits(
        "stages=[{n_cycles=2, cycle_len=0.5, snapshots=true}]",
        "predict.tta=1",
        "predict.snapshot_ensemble=2",
        "competition.metric=log_loss",
        "predict.select=false",  # every snapshot and view predicts the test set too
    )
    run = commands.train(config, "0").name
    assert invoke("predict", "digits", run).exit_code == 0
    result = invoke("ensemble", "digits", f"{run}@snapshot-1", f"{run}@snapshot-2:plain", f"{run}@snapshot-2")
    assert result.exit_code == 0, result.output
    (blend_dir,) = (project / "runs" / "digits").glob("*-ensemble")
    summary = json.loads((blend_dir / "metrics.json").read_text())
    singles = summary["ensemble"]["single_runs"]
    assert set(singles) == {f"{run}@snapshot-1", f"{run}@snapshot-2:plain", f"{run}@snapshot-2"}
    assert summary["ensemble"]["oof_log_loss"] <= min(s["log_loss"] for s in singles.values()) + 1e-12
    # The plain view and the TTA mean of one snapshot differ: the variants really are different inputs.
    fold = project / "runs" / "digits" / run / "fold-0"
    views = np.load(fold / "oof-snapshot-2.npy")
    assert views.shape[0] == 2 and not np.allclose(views[0], views.mean(0))
    result = invoke("ensemble", "digits", f"{run}@snapshot-9", f"{run}@snapshot-2")
    assert result.exit_code == 1 and "kept: snapshot-1, snapshot-2" in result.output, result.output


@pytest.mark.slow
def test_an_ensemble_scores_on_copies_of_its_oof_rows_what_it_reports_as_cv(digits, project):
    # Issue 13, defect 1: members gave uncalibrated OOF but calibrated test probabilities, and the blend
    # was calibrated again on top. Here the "test" images are copies of fold 0's validation images, so
    # a consistent blend scores on the test set exactly its OOF CV.
    import shutil

    from kit.data.folds import load_folds

    settings = (
        "competition.metric=log_loss",
        "submission.format=probabilities",
        "train.folds=10",
        "train.lr=1e-2",
        "predict.tta=0",
        "predict.weights=last",
    )
    config = digits(*settings)
    labels = load_labels(config)
    valid = np.flatnonzero(load_folds(config, labels) == 0)
    raw = project / "data" / "raw" / "digits"
    shutil.rmtree(raw / "test")
    (raw / "test").mkdir()
    ids = [f"copy-{labels.ids[row]}" for row in valid]
    for row, name in zip(valid, ids, strict=True):
        shutil.copy(labels.paths[row], raw / "test" / f"{name}.png")
    pd.DataFrame({"id": ids, **{c: 0.1 for c in labels.classes}}).to_csv(
        raw / "sample_submission.csv", index=False
    )
    first = commands.train(config, "0")
    second = commands.train(digits(*settings, "train.lr=3e-2"), "0")  # the same folds: same seed
    blend_dir = commands.ensemble(config, [first.name, second.name])
    summary = json.loads((blend_dir / "metrics.json").read_text())
    temperature = Run(blend_dir).read_calibration().temperatures[BLEND]
    assert temperature != pytest.approx(1.0, abs=0.05)  # it matters
    name = json.loads((blend_dir / "submission.json").read_text())["file"]
    submitted = pd.read_csv(project / "submissions" / name, dtype={"id": str}).set_index("id").loc[ids]
    test_loss = calibrate.log_loss(submitted[labels.classes].to_numpy(), labels.targets[valid])
    # What the blend scores on copies of its OOF rows is its in-sample figure (fitted on those rows).
    assert test_loss == pytest.approx(summary["cv_in_sample"], abs=2e-4)
    assert f"log_loss{summary['cv']:.4f}" in name  # the file says the CV of what it holds


def test_calibration_is_fitted_per_fold_on_what_it_is_applied_to():
    # Issue 13, defect 4: one temperature fitted on pooled single-fold OOF was applied to the average of
    # the folds' models. Two folds, one twice too sharp and one four times too soft: each gets its own.
    logits, targets = synthetic(rows=4000)
    row_folds = np.arange(len(targets)) % 2
    oof = np.where((row_folds == 0)[:, None], softmax(4 * logits), softmax(0.5 * logits))
    fitted = calibrate.fit_by_fold(oof, targets, row_folds)
    assert fitted.temperatures["0"] == pytest.approx(2, rel=0.1)
    assert fitted.temperatures["1"] == pytest.approx(0.25, rel=0.1)
    calibrated = calibrate.apply_by_fold(oof, row_folds, fitted)
    assert calibrate.log_loss(calibrated, targets) == pytest.approx(fitted.after)
    # The test side: each fold's model on new rows (the same kinds of error), calibrated fold by fold,
    # then averaged, scores what the calibrated OOF promised; one pooled temperature does worse.
    test_logits, test_targets = synthetic(rows=4000, seed=5)
    per_fold = {0: softmax(4 * test_logits), 1: softmax(0.5 * test_logits)}
    test_loss = calibrate.log_loss(calibrate.apply_to_parts(per_fold, fitted), test_targets)
    assert test_loss <= fitted.after + 0.02
    pooled_t, pooled_eps, _, _ = calibrate.calibrate(oof, targets)
    pooled = calibrate.apply_calibration(np.mean(list(per_fold.values()), axis=0), pooled_t, pooled_eps)
    assert calibrate.log_loss(pooled, test_targets) > test_loss + 0.02


def test_the_reported_cv_includes_the_upload_clip():
    # Issue 13, defect 4 (cats-vs-dogs): the upload clips to submission.clip_epsilon; the CV must too.
    logits, targets = synthetic(rows=500, classes=2, signal=3.0)
    oof = softmax(6 * logits)
    row_folds = np.zeros(len(targets), dtype=np.int64)
    fitted = calibrate.for_metric("log_loss", oof, targets, row_folds, min_epsilon=0.005)
    assert fitted.epsilon >= 0.005
    calibrated = calibrate.apply_by_fold(oof, row_folds, fitted)
    assert calibrated.min() >= 0.005 - 1e-12
    uploaded = np.clip(calibrated[:, 1], 0.005, 1 - 0.005)  # what kit.predict.submission.clip does (binary)
    assert fitted.after == pytest.approx(calibrate.log_loss(np.stack([1 - uploaded, uploaded], 1), targets))
    # Other metrics: nothing applied, and predictions are never renormalised (regression values stay).
    assert calibrate.for_metric("accuracy", oof, targets, row_folds, 0.005) == calibrate.identity()
    values = np.array([[3.5], [-1.0]])
    assert np.array_equal(calibrate.apply_to_parts({0: values}, calibrate.identity()), values)
    assert np.array_equal(
        calibrate.apply_by_fold(values, np.zeros(2, dtype=np.int64), calibrate.identity()), values
    )
