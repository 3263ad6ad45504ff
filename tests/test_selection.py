"""Choosing on OOF which weight files and TTA views predict: pure numpy, then a tiny digits run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kit.predict import calibrate, selection
from kit.tasks import SINGLE_LABEL


def softmax(logits: np.ndarray) -> np.ndarray:
    exponentials = np.exp(logits - logits.max(-1, keepdims=True))
    return exponentials / exponentials.sum(-1, keepdims=True)


def kept_views(rng, targets, view_noise: list[float], classes: int = 5) -> np.ndarray:
    """views x rows x classes: each view sees the truth through its own amount of noise."""
    logits = rng.normal(size=(len(targets), classes))
    logits[np.arange(len(targets)), targets] += 2.0
    return np.stack([softmax(logits + rng.normal(scale=noise, size=logits.shape)) for noise in view_noise])


def test_views_and_weight_files_that_do_not_pay_are_dropped():
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 5, 3000)
    # Two snapshots; views: plain, a good mirror, and a bad one (a view that hurts).
    kept = {
        "snapshot-1": kept_views(rng, targets, [0.5, 0.5, 4.0]),
        "snapshot-2": kept_views(rng, targets, [0.5, 0.5, 4.0]),
    }
    folds = [
        {name: array[:, :1500] for name, array in kept.items()},
        {name: array[:, 1500:] for name, array in kept.items()},
    ]
    chosen = selection.choose(
        "log_loss",
        folds,
        [targets[:1500], targets[1500:]],
        ["snapshot-1", "snapshot-2"],
        3,
        0.002,
        task=SINGLE_LABEL,
    )
    assert chosen["views"] == [0, 1]  # the bad view is not computed for the test set
    assert chosen["score"] <= chosen["default"]["score"]  # never worse than the default on OOF
    assert chosen["score"] == pytest.approx(
        calibrate.log_loss(
            selection.blend(kept, tuple(chosen["weights"]), (0, 1), task=SINGLE_LABEL), targets
        )
    )
    # both files, the last, the first, each with 3 view sets: every file alone is a candidate too
    assert chosen["cost"] < chosen["default"]["cost"] and len(chosen["candidates"]) == 9


def test_a_costlier_choice_must_gain_at_least_the_minimum():
    rng = np.random.default_rng(1)
    targets = rng.integers(0, 5, 2000)
    # Identical views: extra views gain nothing, so the plain view alone is taken (cheapest, not worse).
    same = kept_views(rng, targets, [0.0])
    kept = [{"last": np.repeat(same, 3, axis=0)}]
    chosen = selection.choose("log_loss", kept, [targets], ["last"], 3, 0.002, task=SINGLE_LABEL)
    assert chosen["views"] == [0] and chosen["weights"] == ["last"]
    # Independent noisy views do gain: nothing cheaper is as good as the default, so the default stays,
    # whatever the minimum gain (it guards costlier choices, never lets a worse one in).
    noisy = [{"last": kept_views(rng, targets, [1.5, 1.5, 1.5])}]
    for metric, min_gain in (("log_loss", 0.002), ("accuracy", 10.0)):
        chosen = selection.choose(metric, noisy, [targets], ["last"], 3, min_gain, task=SINGLE_LABEL)
        assert chosen["views"] == [0, 1, 2]


def test_every_stages_weights_are_candidates_and_the_harmful_ones_are_left_out():
    # Four files: the head stages' final weights (good), the unfrozen stage's snapshots (one harmful).
    # The default (the config's rule: the snapshots) is a candidate, but a better file outside it wins.
    rng = np.random.default_rng(5)
    targets = rng.integers(0, 5, 2000)
    kept = {
        "stage-0": kept_views(rng, targets, [0.8, 0.8]),
        "stage-1": kept_views(rng, targets, [0.3, 0.3]),
        "snapshot-1": kept_views(rng, targets, [6.0, 6.0]),  # a harmful cycle: noise
        "snapshot-2": kept_views(rng, targets, [5.0, 5.0]),
    }
    names = list(kept)
    chosen = selection.choose(
        "log_loss",
        [kept],
        [targets],
        names,
        2,
        0.002,
        default=["snapshot-1", "snapshot-2"],
        task=SINGLE_LABEL,
    )
    assert chosen["default"]["weights"] == ["snapshot-1", "snapshot-2"]
    assert "snapshot-1" not in chosen["weights"] and "snapshot-2" not in chosen["weights"]
    assert "stage-1" in chosen["weights"]
    assert chosen["score"] < chosen["default"]["score"]
    # Blends are grown from the best file: two good, independent files blend better than either.
    twins = {"a": kept_views(rng, targets, [1.0]), "b": kept_views(rng, targets, [1.0])}
    blended = selection.choose(
        "log_loss", [twins], [targets], ["a", "b"], 1, 0.002, default=["a"], task=SINGLE_LABEL
    )
    assert blended["weights"] == ["a", "b"] and blended["cost"] == 2


def test_at_equal_score_the_cheaper_candidate_is_taken():
    # Copies of one file: every blend scores as one file alone, so one file and one view predict.
    rng = np.random.default_rng(6)
    targets = rng.integers(0, 5, 1000)
    same = np.repeat(kept_views(rng, targets, [0.5]), 2, axis=0)  # two identical views
    kept = {name: same.copy() for name in ("stage-0", "stage-1", "last")}
    chosen = selection.choose("log_loss", [kept], [targets], list(kept), 2, 0.0, task=SINGLE_LABEL)
    assert chosen["cost"] == 1 and len(chosen["weights"]) == 1 and chosen["views"] == [0]
    assert chosen["default"]["cost"] == 6


@pytest.mark.slow
def test_prediction_computes_only_what_was_chosen(digits, project):
    from kit import commands

    config = digits(
        "stages=[{n_cycles=2, cycle_len=0.5, snapshots=true}]", "predict.tta=2", "predict.snapshot_ensemble=2"
    )
    run_dir = commands.train(config, "0")
    summary = json.loads((run_dir / "metrics.json").read_text())
    chosen = summary["prediction"]
    assert chosen["score"] <= chosen["default"]["score"] or config.competition.metric != "log_loss"
    commands.predict(config, run_dir.name)
    fold = run_dir / "fold-0"
    computed = sorted(p.stem.removeprefix("test-") for p in fold.glob("test-*.npy"))
    assert computed == sorted(chosen["weights"])
    assert all(np.load(fold / f"test-{name}.npy").shape[0] == len(chosen["views"]) for name in computed)
    record = json.loads((run_dir / "submission.json").read_text())
    assert record["views"] == chosen["view_names"]
    assert record["forward_passes"] == 360 * len(chosen["weights"]) * len(chosen["views"])


def test_the_choice_is_scored_as_the_task_scores():
    # Tags (multi-label, F2): outputs are tag probabilities, scored once decided at 0.5 (the default
    # thresholds), never as class probabilities.
    from kit.tasks import MultiLabel

    rng = np.random.default_rng(2)
    truth = (rng.random((800, 4)) < 0.4).astype(np.float32)
    good = np.clip(truth + rng.normal(scale=0.2, size=truth.shape), 0, 1)[None]
    bad = rng.random((1, *truth.shape))  # a view that knows nothing
    kept = [{"last": np.concatenate([good, good, bad])}]
    chosen = selection.choose("f2_samples", kept, [truth], ["last"], 3, 0.0, MultiLabel())
    assert chosen["views"] in ([0], [0, 1]) and chosen["score"] > 0.9
    assert chosen["default"]["score"] < chosen["score"]  # the blind view makes the default worse


def test_the_mirror_is_never_dropped_where_the_preset_mirrors():
    # Identical views gain nothing on OOF: with fewest_views=1 the plain view alone would be taken; with
    # 2 (photos: kit.data.tta.MIRROR_FIRST) the plain view keeps its mirror, and no candidate lacks it.
    from kit.data.tta import MIRROR_FIRST, view_names

    rng = np.random.default_rng(3)
    targets = rng.integers(0, 5, 1000)
    kept = [{"last": np.repeat(kept_views(rng, targets, [0.0]), 3, axis=0)}]
    chosen = selection.choose(
        "log_loss", kept, [targets], ["last"], 3, 0.002, fewest_views=2, task=SINGLE_LABEL
    )
    assert chosen["views"] == [0, 1]
    assert all(len(candidate["views"]) >= 2 for candidate in chosen["candidates"])
    assert selection.choose(
        "log_loss", kept, [targets], ["last"], 1, 0.002, fewest_views=2, task=SINGLE_LABEL
    )["views"] == [0]
    assert all(view_names(preset, 1)[1] == "flip" for preset in MIRROR_FIRST)  # the first view mirrors


def test_logit_means_are_geometric_for_classes_log_odds_for_tags_plain_for_values():
    from kit.tasks import SINGLE_LABEL, MultiLabel, Regression

    sure, unsure = np.array([[0.9, 0.1]]), np.array([[0.5, 0.5]])
    stack = np.stack([sure, unsure])
    np.testing.assert_allclose(selection.average(stack, "probabilities", SINGLE_LABEL), [[0.7, 0.3]])
    # softmax of the mean log-probability: sqrt(0.9 * 0.5) : sqrt(0.1 * 0.5) = 3 : 1
    np.testing.assert_allclose(selection.average(stack, "logits", SINGLE_LABEL), [[0.75, 0.25]])
    # tags: log-odds ln 9 and 0, mean ln 3, so 3 / (3 + 1)
    np.testing.assert_allclose(selection.average(stack[:, :, :1], "logits", MultiLabel()), [[0.75]])
    values = np.array([[[2.0]], [[4.0]]])
    np.testing.assert_allclose(selection.average(values, "logits", Regression(mean=0.0, std=1.0)), [[3.0]])
    # A member's zero does not veto a class: the floor keeps the other member's say.
    zero_and_not = np.stack([np.array([[1.0, 0.0]]), np.array([[0.2, 0.8]])])
    vetoed = selection.average(zero_and_not, "logits", SINGLE_LABEL)
    assert 0 < vetoed[0, 1] < 0.5 and vetoed.sum() == pytest.approx(1.0)


def test_the_choice_is_scored_on_the_blend_prediction_will_make():
    rng = np.random.default_rng(4)
    targets = rng.integers(0, 5, 1000)
    kept = {"stage-0": kept_views(rng, targets, [1.0, 1.0]), "last": kept_views(rng, targets, [0.3, 0.3])}
    for mean in ("probabilities", "logits"):
        chosen = selection.choose(
            "log_loss", [kept], [targets], ["stage-0", "last"], 2, 0.0, mean=mean, task=SINGLE_LABEL
        )
        blended = selection.blend(kept, ("stage-0", "last"), (0, 1), mean, task=SINGLE_LABEL)
        assert chosen["default"]["score"] == pytest.approx(calibrate.log_loss(blended, targets))
    arithmetic = selection.blend(kept, ("stage-0", "last"), (0, 1), task=SINGLE_LABEL)
    assert not np.allclose(
        arithmetic, selection.blend(kept, ("stage-0", "last"), (0, 1), "logits", task=SINGLE_LABEL)
    )


@pytest.mark.slow
def test_a_stage_that_joins_prediction_predicts_beside_the_last(digits, project):
    # The head trained on frozen features, kept (fold-K/stage-0.pt), predicts beside the fine-tuned
    # network; OOF and test average the two the same way (here as logits).
    from kit import commands
    from kit.tasks import SINGLE_LABEL
    from kit.train import views

    config = digits(
        "stages=[{freeze_to=-1, cycle_len=0.5, joins_prediction=true}, {cycle_len=0.5}]",
        "predict.weights='last'",
        "predict.tta=1",
        "predict.select=false",
        "predict.mean='logits'",
    )
    run_dir = commands.train(config, "0")
    fold = run_dir / "fold-0"
    assert views.prediction_weights(config, fold) == [fold / "stage-0.pt", fold / "last.pt"]
    assert (fold / "stage-0.pt").read_bytes() != (fold / "last.pt").read_bytes()
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert "stage-0.pt" in summary["weights_rule"]
    kept = {name: np.load(fold / f"oof-{name}.npy").astype(np.float64) for name in ("stage-0", "last")}
    oof = selection.blend(kept, ("stage-0", "last"), (0, 1), "logits", task=SINGLE_LABEL)
    np.testing.assert_allclose(np.load(fold / "oof.npy"), oof, atol=1e-5)
    commands.predict(config, run_dir.name)
    tests = {name: np.load(fold / f"test-{name}.npy").astype(np.float64) for name in ("stage-0", "last")}
    blended = selection.blend(tests, ("stage-0", "last"), (0, 1), "logits", task=SINGLE_LABEL)
    np.testing.assert_allclose(np.load(run_dir / "test-probabilities.npy"), blended, atol=1e-5)
    assert json.loads((run_dir / "submission.json").read_text())["weights"] == [
        "fold-0/stage-0.pt",
        "fold-0/last.pt",
    ]
    # `kit ensemble RUN@last` takes that file's views as the run averaged them.
    from kit.data.labels import load_labels
    from kit.predict import ensemble

    rows = json.loads((fold / "result.json").read_text())["valid_rows"]
    row_count = len(load_labels(config).paths)
    oof_variant, test_variant = ensemble.variant_predictions(run_dir, "last", False, row_count)
    oof_average = selection.average(kept["last"], "logits", SINGLE_LABEL)
    np.testing.assert_allclose(oof_variant[rows], oof_average, atol=1e-6)
    test_average = selection.average(tests["last"], "logits", SINGLE_LABEL)
    np.testing.assert_allclose(test_variant, test_average, atol=1e-6)
    # On the last stage itself (the quick recipe's head) it adds nothing: last.pt is those weights.
    only = digits("stages=[{cycle_len=0.5, joins_prediction=true}]", "predict.weights='last'")
    assert views.prediction_weights(only, fold) == [fold / "last.pt"]


def test_after_a_stop_the_best_check_point_with_a_file_predicts_by_default():
    checkpoints = [
        {"score": 0.9, "weights": None},  # a cycle's end in a stage without snapshots: no file
        {"score": 0.5, "weights": "stage-0"},
        {"score": 0.4, "weights": None},
        {"score": 0.45, "weights": "stage-1"},
        {"score": 0.7, "weights": "snapshot-1"},  # the check point that stopped the fold
    ]
    from kit.train import views

    assert views.weights_after_stop(checkpoints, higher_is_better=False) == "stage-1"
    assert views.weights_after_stop(checkpoints, higher_is_better=True) == "snapshot-1"
    assert views.weights_after_stop([{"score": float("nan"), "weights": "last"}], True) is None
