"""CV you can trust (issue 26): `kit submit` takes the best run, not the newest; CV figures are scored on
rows that chose nothing (cross-fitting); an ensemble worse than its best member is never written silently."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kit.competitions import load_competition
from kit.run import LAYOUT, Summary
from kit.run_folder import best_run
from kit.tasks import SINGLE_LABEL


def fake_run(project, name: str, metric: str, cv: float, folds=(0,)) -> None:
    folder = project / "runs" / "digits" / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "metrics.json").write_text(
        json.dumps({"layout": LAYOUT, "metric": metric, "cv": cv, "classes": [], "folds_trained": [*folds]})
    )


@pytest.mark.parametrize(("metric", "higher", "best"), [("log_loss", False, "b"), ("accuracy", True, "c")])
def test_submit_takes_the_best_cv_not_the_newest(project, metric, higher, best):
    fake_run(project, "20261201-000000-a", metric, 0.30)
    fake_run(project, "20261201-000001-b", metric, 0.10)
    fake_run(project, "20261201-000002-c", metric, 0.50)
    fake_run(project, "20261201-000003-d", metric, 0.20)  # the newest
    fake_run(project, "20261201-000004-e", "f1_micro", 0.99)  # another metric: not compared
    config = load_competition("digits", [f"competition.metric={metric}"])
    run_dir, why = best_run(config, higher)
    assert run_dir.name.endswith(best), why
    assert f"the best CV {metric}" in why and "of 4 finished runs" in why and "20261201-000003-d" in why


def test_equal_cvs_take_the_newer_and_other_folds_are_said(project):
    fake_run(project, "20261201-000000-a", "log_loss", 0.10, folds=(0, 1, 2, 3, 4))
    fake_run(project, "20261201-000001-b", "log_loss", 0.10)
    run_dir, why = best_run(load_competition("digits", ["competition.metric=log_loss"]), False)
    assert run_dir.name.endswith("b") and "runs on other folds" in why


def test_best_cv_of_a_run_another_kit_made_is_one_line_not_a_guess(project):
    """metrics.json without this kit's layout number: its keys are not read as if they were this kit's."""
    from kit.run import RunError

    fake_run(project, "20261201-000000-a", "log_loss", 0.10)
    (project / "runs" / "digits" / "20261201-000000-a" / "metrics.json").write_text(
        json.dumps({"metric": "log_loss", "cv": 0.1, "folds_trained": [0]})
    )
    with pytest.raises(RunError, match="made by another kit.*retrain"):
        best_run(load_competition("digits", ["competition.metric=log_loss"]), False)


def write_ledger(project, rows: list[tuple[str, float, str]]) -> None:
    import pandas as pd

    folder = project / "submissions"
    folder.mkdir(exist_ok=True)
    table = [
        {"competition": "digits", "file": file, "run": f"run-{file}", "metric": "accuracy", "cv": f"{cv:.4f}",
         "public_score": public, "time_utc": f"2026120{index}-000000"}
        for index, (file, cv, public) in enumerate(rows)
    ]  # fmt: skip
    pd.DataFrame(table).to_csv(folder / "ledger.csv", index=False)


def test_kit_ledger_plots_cv_against_public_with_the_correlation(project):
    from conftest import invoke

    write_ledger(
        project,
        [("a.csv", 0.90, "0.88"), ("b.csv", 0.92, "0.91"), ("c.csv", 0.95, "0.93"), ("d.csv", 0.97, "0.96"),
         ("e.csv", 0.99, "")],  # not scored yet: left out
    )  # fmt: skip
    result = invoke("ledger", "digits")
    assert result.exit_code == 0, (result.output, result.exc_info)
    assert "CV against public score: 4 submissions, Pearson r 0.99, Spearman 1.00" in result.output
    assert "orders submissions as the leaderboard does" in result.output
    plot = project / "submissions" / "digits-cv-vs-public.png"
    assert plot.stat().st_size > 1000 and f"plot: {plot}" in result.output

    write_ledger(project, [("a.csv", 0.90, "0.96"), ("b.csv", 0.92, "0.88"), ("c.csv", 0.95, "0.91")])
    result = invoke("ledger", "digits")
    assert "Spearman -0.50" in result.output and "disagree often" in result.output


def test_the_report_shows_cv_against_public_and_the_duplicates(project):
    from kit.report.report import duplicates_section, leaderboard_section

    config = load_competition("digits")
    run_dir = project / "runs" / "digits" / "run-b.csv"
    run_dir.mkdir(parents=True)
    assert leaderboard_section(config, run_dir) == ""  # no scored submission yet
    assert "not searched" in duplicates_section(config)
    write_ledger(project, [("a.csv", 0.90, "0.88"), ("b.csv", 0.92, "0.91"), ("c.csv", 0.95, "0.93")])
    section = leaderboard_section(config, run_dir)
    assert "data:image/png;base64," in section and "3 submissions, Pearson r" in section
    interim = project / "data" / "interim" / "digits"
    interim.mkdir(parents=True, exist_ok=True)
    (interim / "duplicates.csv").write_text(
        "kind,id,label,other_id,other_label,distance\ntrain,a,1,b,7,3\ntrain,c,2,d,2,0\ntrain-test,e,4,t9,,2\n"
    )
    section = duplicates_section(config)
    assert "2 pairs within train (1 with different labels), 1 between train and test" in section
    assert "<td>t9</td>" in section and "<td>b</td>" in section and "<td>d</td>" not in section


# Cross-fitting, on plain arrays ---------------------------------------------------------------------


def overconfident(rows: int, seed: int, sharpness: float = 4.0):
    """Two-class OOF probabilities, right about 75% of the time but far too sure: calibration helps them
    in sample, by more than it can on rows it did not see."""
    random = np.random.default_rng(seed)
    targets = random.integers(0, 2, rows)
    right = random.random(rows) < 0.75
    said = np.where(right, targets, 1 - targets)
    sure = 1 / (1 + np.exp(-sharpness * random.uniform(0.5, 1.5, rows)))
    probabilities = np.zeros((rows, 2))
    probabilities[np.arange(rows), said] = sure
    probabilities[np.arange(rows), 1 - said] = 1 - sure
    return probabilities, targets


def test_a_tiny_fold_reports_the_cross_fitted_cv_not_the_in_sample_one():
    from kit.predict import calibrate, crossfit

    probabilities, targets = overconfident(60, seed=3)
    row_folds = np.zeros(60, dtype=np.int64)  # one fold of 60 rows
    in_sample = calibrate.calibrate(probabilities, targets, 1e-3)[3]
    fields = crossfit.honest_cv(
        "log_loss", SINGLE_LABEL, targets, row_folds, lambda seen: probabilities, 1e-3, in_sample
    )
    # By hand: fitted on one half, scored on the other, both ways; the halves drawn HALF_REPEATS times.
    by_hand = []
    for seed in range(crossfit.HALF_REPEATS):
        parts = crossfit.parts_of(row_folds, seed)
        assert sorted(np.bincount(parts).tolist()) == [30, 30]
        scored = np.zeros_like(probabilities)
        for part in (0, 1):
            seen, held = parts != part, parts == part
            temperature, epsilon, _, _ = calibrate.calibrate(probabilities[seen], targets[seen], 1e-3)
            scored[held] = calibrate.apply_calibration(probabilities[held], temperature, epsilon)
        by_hand.append(calibrate.log_loss(scored, targets))
    by_hand = np.mean(by_hand)
    assert fields["calibration_pays"] and fields["cv"] == pytest.approx(by_hand)
    assert fields["cv_in_sample"] == in_sample and fields["cv"] > in_sample + 1e-4  # not the in-sample figure
    assert fields["cv_cross_fitted_by"] == "halves" and fields["cv_rows"] == 60
    low, high = fields["cv_interval"]
    assert low < fields["cv"] < high and high - low > 0.1  # 60 rows: a wide interval


def test_calibration_that_does_not_pay_under_cross_fitting_is_dropped():
    from kit.predict import calibrate, crossfit

    random = np.random.default_rng(0)
    chance = random.uniform(0.2, 0.8, 40)  # calibrated already: each row's probability is its chance
    targets = (random.random(40) < chance).astype(np.int64)
    probabilities = np.stack([1 - chance, chance], 1)
    row_folds = np.arange(40) % 4  # four folds
    fields = crossfit.honest_cv(
        "log_loss", SINGLE_LABEL, targets, row_folds, lambda seen: probabilities, 1e-3, in_sample=0.0
    )
    assert not fields["calibration_pays"] and fields["cv_cross_fitted_by"] == "folds"
    assert fields["cv"] == pytest.approx(calibrate.log_loss(probabilities, targets, 1e-3))
    in_sample = calibrate.calibrate(probabilities, targets, 1e-3)[3]
    assert in_sample < fields["cv"]  # in sample, the same temperature looked like a gain


def test_the_bootstrap_interval_is_given_only_for_small_folds():
    from kit.predict import crossfit

    for rows, interval in ((150, True), (400, False)):
        probabilities, targets = overconfident(rows, seed=1)
        fields = crossfit.honest_cv(
            "accuracy",
            SINGLE_LABEL,
            targets,
            np.arange(rows) % 2,
            lambda seen, kept=probabilities: kept,
            1e-3,
            0.0,
        )
        assert ("cv_interval" in fields) is interval


def test_a_blend_worse_than_its_best_member_keeps_the_best_member_alone():
    from kit.predict import crossfit

    good, targets = overconfident(200, seed=5, sharpness=1.0)
    noise = np.random.default_rng(9).dirichlet((1, 1), 200)
    row_folds = np.arange(200) % 5
    halves = crossfit.blend_or_best_member(
        "log_loss", SINGLE_LABEL, targets, row_folds, [noise, good], lambda rows, truth: [0.5, 0.5], 1e-3
    )
    assert not halves["blend_pays"] and halves["weights"] == [0.0, 1.0] and halves["best_member"] == 1
    assert halves["blend_cv"] > halves["member_cvs"][1] and "member 2 predicts alone" in halves["line"]

    # Two members whose errors are independent: their blend pays, and its weights are kept.
    random = np.random.default_rng(4)
    members = []
    for _ in range(2):
        logits = 1.5 * (2 * targets - 1) + random.normal(0, 2.0, 200)
        members.append(np.stack([1 / (1 + np.exp(logits)), 1 / (1 + np.exp(-logits))], 1))
    kept = crossfit.blend_or_best_member(
        "log_loss", SINGLE_LABEL, targets, row_folds, members, lambda rows, truth: [0.5, 0.5], 1e-3
    )
    assert kept["blend_pays"] and kept["weights"] == [0.5, 0.5]
    assert kept["blend_cv"] < min(kept["member_cvs"]) and "alone" not in kept["line"]


def test_the_best_member_is_the_one_with_the_best_cv_its_choices_refitted_not_its_in_sample_oof():
    """A member whose own choices (views, weight files) flatter its OOF in sample: right wherever it chose,
    wrong elsewhere. Before, the blend scored each member's in-sample OOF, so that member was the "best
    member" with a figure that was neither run's CV (the README walk: 0.2947, weight 1 on the worse run);
    now each member is scored as its run's CV is, with its choices fitted on the other rows."""
    from kit.predict import crossfit

    good, targets = overconfident(200, seed=5, sharpness=1.0)
    right, wrong = np.eye(2)[targets] * 0.9 + 0.05, np.eye(2)[1 - targets] * 0.9 + 0.05
    row_folds = np.arange(200) % 5

    def chooser(seen: np.ndarray) -> np.ndarray:  # what it chose on the seen rows is right only there
        return np.where(seen[:, None], right, wrong)

    decision = crossfit.blend_or_best_member(
        "log_loss", SINGLE_LABEL, targets, row_folds, [chooser, good], lambda rows, truth: [0.5, 0.5], 1e-3,
        ["chooser", "fixed"],
    )  # fmt: skip
    fixed_cv = crossfit.honest_cv("log_loss", SINGLE_LABEL, targets, row_folds, lambda seen: good, 1e-3, 0)
    assert decision["best_member"] == 1 and decision["weights"] == [0.0, 1.0]
    assert decision["member_cvs"][1] == pytest.approx(fixed_cv["cv"])  # its run's CV, on these rows
    assert decision["member_cvs"][0] > 2.0  # wrong on every row it did not choose on
    assert "against its best member's, fixed: " in decision["line"] and "chooser " in decision["line"]


def test_the_weight_files_are_chosen_again_on_the_seen_rows_only():
    from kit.predict import crossfit, selection

    random = np.random.default_rng(0)
    targets = random.integers(0, 2, 40)
    right = np.eye(2)[targets] * 0.8 + 0.1  # sure and right
    wrong = np.eye(2)[1 - targets] * 0.8 + 0.1  # sure and wrong
    rows_by_fold = [np.arange(0, 20), np.arange(20, 40)]
    # File "a" is right on fold 0's rows and wrong on fold 1's; "b" the other way round.
    kept_by_fold = [
        {"a": right[None, :20], "b": wrong[None, :20]},
        {"a": wrong[None, 20:], "b": right[None, 20:]},
    ]

    def choose(kept, truth):
        return selection.choose(
            "log_loss", kept, truth, ["a", "b"], 1, min_gain=0.0, default=["a", "b"], task=SINGLE_LABEL
        )

    def blend(kept, chosen):
        return selection.blend(kept, tuple(chosen["weights"]), tuple(chosen["views"]), task=SINGLE_LABEL)

    predictions_for = crossfit.refitted_selection(kept_by_fold, rows_by_fold, targets, 40, choose, blend)
    seen_fold_0 = np.arange(40) < 20
    first = (np.arange(40) < 20)[:, None]
    assert np.allclose(predictions_for(seen_fold_0), np.where(first, right, wrong))  # "a", chosen on fold 0
    assert np.allclose(predictions_for(~seen_fold_0)[:20], wrong[:20])  # "b", chosen on fold 1's rows
    # Cross-fitted, each fold is predicted by the file the other fold chose: wrong everywhere.
    fields = crossfit.honest_cv(
        "accuracy", SINGLE_LABEL, targets, np.repeat([0, 1], 20), predictions_for, 1e-3, 1.0
    )
    assert fields["cv"] == 0.0 and fields["cv_in_sample"] == 1.0


def test_the_cv_line_names_the_in_sample_figure_and_the_interval():
    from kit.commands import cv_line

    summary = {
        "metric": "log_loss", "cv": 0.4012, "cv_uncalibrated": 0.3630, "folds_trained": [0],
        "cv_in_sample": 0.2177, "cv_cross_fitted_by": "halves", "calibration_pays": False,
        "cv_uncalibrated_cross_fitted": 0.4012, "cv_rows": 60, "cv_interval": [0.31, 0.52],
    }  # fmt: skip
    said = cv_line(Summary(summary)).splitlines()
    assert said[0].startswith("CV log_loss: 0.4012")
    # 0.3630 is the raw OOF scored on the rows that chose it: never shown beside a cross-fitted CV
    assert "0.3630" not in said[0] and "uncalibrated" not in said[0]
    pays = {**summary, "cv": 0.3500, "calibration_pays": True}  # then the cross-fitted raw figure compares
    assert "(uncalibrated 0.4012; folds [0])" in cv_line(Summary(pays)).splitlines()[0]
    assert "in sample (fitted and scored on the same rows, not a CV) 0.2177" in said[1]
    assert "each half of the one fold" in said[1]
    assert "calibration not applied" in said[2]
    assert "60 validation rows: the CV's 95% bootstrap interval is 0.3100-0.5200" in said[3]
    older = {key: summary[key] for key in ("metric", "cv", "cv_uncalibrated", "folds_trained")}
    assert len(cv_line(Summary(older)).splitlines()) == 1  # not cross-fitted (a full-data refit's)


def test_kit_ensemble_never_writes_a_blend_worse_than_its_best_member_silently(
    digits_download, project, monkeypatch
):
    from conftest import copy_download, invoke

    from kit.data.labels import load_labels, load_test
    from kit.predict import ensemble

    copy_download(digits_download, project)
    config = load_competition("digits")
    labels, test = load_labels(config), load_test(config)
    classes = labels.classes
    random = np.random.default_rng(0)
    right = np.eye(len(classes))[labels.targets] * 0.6 + 0.04  # a good member: the right class
    wrong = np.eye(len(classes))[(labels.targets + 1) % len(classes)] * 0.9 + 0.01  # sure and always wrong
    good_test = np.eye(len(classes))[random.integers(0, len(classes), len(test.ids))] * 0.6 + 0.04
    members = {}
    for name, oof, test_probabilities in (("a-wrong", wrong, 1 - good_test), ("b-good", right, good_test)):
        folder = project / "runs" / "digits" / name
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")
        summary = {"layout": LAYOUT, "metric": "accuracy", "cv": 0.5, "classes": classes, "folds_trained": []}
        (folder / "metrics.json").write_text(json.dumps(summary))
        members[name] = ensemble.Member(name, folder, oof, lambda value=test_probabilities: value)
    monkeypatch.setattr(ensemble, "load_member", lambda config, spec, labels: members[spec])
    result = invoke("ensemble", "digits", "a-wrong", "b-good")
    assert result.exit_code == 0, (result.output, result.exc_info)
    assert "the blend does not pay, so member 2 predicts alone (weight 1)" in result.output
    (blend_dir,) = [p for p in (project / "runs" / "digits").iterdir() if p.name not in members]
    summary = json.loads((blend_dir / "metrics.json").read_text())
    assert (
        summary["ensemble"]["weights"] == [0.0, 1.0] and not summary["ensemble"]["cross_fitted"]["blend_pays"]
    )
    assert "cv_in_sample" in summary and "cross-fitted" in result.output


def test_the_report_names_the_in_sample_figure_and_the_interval():
    from kit.report.report import honesty_note

    summary = {
        "cv_in_sample": 0.2177,
        "cv_cross_fitted_by": "halves",
        "cv_rows": 60,
        "cv_interval": [0.3, 0.5],
    }
    note = honesty_note(Summary(summary))
    assert "in sample, fitted and scored on the same rows: 0.2177" in note and "0.3000-0.5000" in note
    assert honesty_note(Summary({"cv": 0.1})) == ""


# A fold stopped by train.stop_when_worse (its last check point did not pay): stage-0, snapshot-1 and
# snapshot-2 kept weight files; training chose the check point that predicts on the fold's own rows.
STOPPED = [
    "stages=[{cycle_len=1}, {n_cycles=2, cycle_len=1, snapshots=true}]",
    "train.stop_when_worse=true",
    "predict.weights='snapshots'",
    "predict.tta=0",
]


def stopped_run(project, labels, best_by_fold: dict[int, str]) -> tuple:
    """A finished two-fold run (20 rows a fold) without training: per fold, the check point training chose
    (`best_by_fold`) is right on that fold's rows and wrong on the other's; snapshot-2 is wrong everywhere."""
    from kit.run import FoldResult, Run

    run_dir = project / "runs" / "digits" / "20261203-000000-stopped"
    rows_by_fold = {0: np.arange(0, 20), 1: np.arange(20, 40)}
    right_on = {name: fold for fold, name in best_by_fold.items()}
    for fold, rows in rows_by_fold.items():
        folder = Run(run_dir).fold(fold)
        folder.folder.mkdir(parents=True)
        targets = labels.targets[rows]
        right, wrong = np.eye(10)[targets] * 0.9 + 0.01, np.eye(10)[(targets + 1) % 10] * 0.9 + 0.01
        for name in ("stage-0", "snapshot-1", "snapshot-2"):
            folder.weights(name).write_bytes(b"")  # present: a candidate (never loaded here)
            np.save(folder.kept_oof(name), (right if right_on.get(name) == fold else wrong)[None])
        np.save(folder.oof, right)  # what out_of_fold wrote: the check point this fold chose
        scores = {name: (0.95 if name == best_by_fold[fold] else 0.9) for name in ("stage-0", "snapshot-1")}
        checkpoints = [
            {"stage_index": 0, "stage": "a", "epoch": 1, "kind": "stage", "score": scores["stage-0"],
             "weights": "stage-0"},
            {"stage_index": 1, "stage": "b", "epoch": 1, "kind": "cycle", "score": scores["snapshot-1"],
             "weights": "snapshot-1"},
            {"stage_index": 1, "stage": "b", "epoch": 2, "kind": "stage", "score": 0.5, "weights": "last"},
        ]  # fmt: skip
        stop = {**checkpoints[-1], "best": 0.95, "reason": "not better"}
        recipe = {"checkpoints": checkpoints, "stop": stop, "stages": []}
        folder.write_result(FoldResult(1.0, [], rows.tolist(), {}, recipe))
    return run_dir


def test_a_check_point_chosen_in_training_is_chosen_again_on_the_other_folds_rows(digits, project):
    """Training chose each fold's check point on the rows the CV scores (right there by construction):
    in sample the CV is 1.0. The old code reported that as the cross-fitted CV (predict.select off: nothing
    refitted); now each fold is scored with the check point the other fold's rows prefer: wrong everywhere."""
    from kit.data.labels import load_labels
    from kit.predict.summary import settle

    config = digits(*STOPPED, "predict.select=false")
    labels = load_labels(config)
    run_dir = stopped_run(project, labels, {0: "snapshot-1", 1: "stage-0"})
    summary = settle(config, labels, run_dir, [0, 1], 0.0)
    assert summary["cv_in_sample"] == 1.0 and summary["cv_cross_fitted_by"] == "folds"
    assert summary["cv"] == 0.0
    assert "train.stop_when_worse" in summary["chosen_in_training"][0]


def test_choices_training_makes_on_the_scored_rows_are_named(project):
    from kit.predict.training_choices import named_choices

    assert named_choices(load_competition("digits", ["train.stop_when_worse=false"]), [None]) == []
    best = named_choices(load_competition("digits", ["predict.weights='best'"]), [None])
    assert len(best) == 1 and "best.pt" in best[0]
    pseudo = load_competition("digits", ["stages.1.pseudo_label={threshold=0.9, weight=0.5}"])
    assert any("pseudo-labels" in line for line in named_choices(pseudo, [None]))


@pytest.mark.slow
def test_kit_ensemble_scores_each_member_as_its_run_scored_its_cv(digits, project):
    """Two fold-0 runs of digits whose selection chooses among snapshots and TTA views: the figure the blend
    gives each member is that run's reported CV (before: its in-sample OOF, 0.1383 for a run whose CV was
    0.1422), and a blend that does not pay reports its best member's CV."""
    import pandas as pd

    from kit import commands

    sample = project / "data" / "raw" / "digits" / "sample_submission.csv"
    ids = pd.read_csv(sample)["id"]
    pd.DataFrame({"id": ids, **{str(digit): 0.1 for digit in range(10)}}).to_csv(sample, index=False)
    settings = [
        "competition.metric=log_loss",
        "submission.format=probabilities",
        "predict.tta=2",
        "stages=[{cycle_len=1}, {n_cycles=2, cycle_len=1, snapshots=true}]",
        "predict.weights='snapshots'",
    ]
    runs = [commands.train(digits(*settings, f"train.lr={rate}"), "0") for rate in ("3e-3", "1e-2")]
    cvs = [json.loads((run / "metrics.json").read_text())["cv"] for run in runs]
    blend_dir = commands.ensemble(digits(*settings), [run.name for run in runs])
    summary = json.loads((blend_dir / "metrics.json").read_text())
    decision = summary["ensemble"]["cross_fitted"]
    assert decision["member_cvs"] == pytest.approx(cvs, rel=1e-9)
    best = int(np.argmin(cvs))
    assert f"against its best member's, {runs[best].name}: {cvs[best]:.4f}" in decision["line"]
    if not decision["blend_pays"]:
        assert summary["cv"] == pytest.approx(cvs[best], rel=1e-9)
        assert summary["ensemble"]["weights"] == [float(index == best) for index in range(2)]
