"""A competitor's first hour (issue 29): no dead ends. Hand-filled data is a first-class path, Ctrl-C says
how to resume, every CV has its baseline beside it, a quick run is told what the full recipe adds,
`kit runs` stays readable when quick, full and ensemble runs mix, and `make new` passes --from-raw."""

from __future__ import annotations

import json
import re
import subprocess

import numpy as np
import pytest
from conftest import REPO, _copy_competitions, copy_download, invoke
from test_scaffold import breeds_layout, cats_layout

from kit import baselines, commands
from kit.commands import training as training_commands
from kit.competitions import load_competition
from kit.data.labels import load_labels
from kit.report import runs_table
from kit.run import LAYOUT, Run, Summary
from kit.run_folder import new_run_dir
from kit.tasks import SINGLE_LABEL

# --- hand-filled data -------------------------------------------------------------------------------------


def test_hand_filled_data_is_marked_once_and_list_and_download_agree(project, digits_download):
    raw = project / "data" / "raw" / "digits"
    copy_download(digits_download, project)
    (raw / ".download-complete").unlink()  # as if copied in by hand
    listed = invoke("list")
    assert re.search(r"digits .*not marked: `kit download digits --hand-filled`", listed.output)
    refused = invoke("download", "digits")
    assert refused.exit_code == 1 and "kit download digits --hand-filled" in refused.output
    assert len(refused.output.strip().splitlines()) == 1

    marked = invoke("download", "digits", "--hand-filled")
    assert marked.exit_code == 0, marked.output
    assert "marked as the competition's data" in marked.output and "training images" in marked.output
    assert re.search(r"^digits .*downloaded \(hand-filled\)", invoke("list").output, re.M)
    again = invoke("download", "digits")
    assert again.exit_code == 0 and "already downloaded" in again.output


def test_hand_filled_refuses_an_empty_folder_and_files_that_do_not_load(project):
    empty = invoke("download", "digits", "--hand-filled")
    assert empty.exit_code == 1 and "is empty; put the competition's files there first" in empty.output
    raw = project / "data" / "raw" / "digits"
    raw.mkdir(parents=True)
    (raw / "notes.txt").write_text("not the competition's files")
    wrong = invoke("download", "digits", "--hand-filled")
    assert wrong.exit_code == 1 and not (raw / ".download-complete").exists()


def test_kit_new_from_raw_marks_the_hand_filled_folder(project):
    cats_layout(project / "data" / "raw" / "kittens")
    assert invoke("new", "kittens", "--from-raw").exit_code == 0
    assert re.search(r"^kittens .*downloaded \(hand-filled\)", invoke("list").output, re.M)


def test_make_new_passes_from_raw_and_like():
    dry = subprocess.run(
        ["make", "-n", "new", "COMP=kittens", "FROM_RAW=1", "LIKE=cats-vs-dogs"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert re.search(r"kit new kittens .*--from-raw --like cats-vs-dogs", dry)
    marked = subprocess.run(
        ["make", "-n", "download", "COMP=kittens", "HAND_FILLED=1"], cwd=REPO, capture_output=True, text=True
    ).stdout
    assert re.search(r"kit download kittens .*--hand-filled", marked)


# --- Ctrl-C -----------------------------------------------------------------------------------------------


def test_ctrl_c_names_the_run_and_the_exact_resume_command(project, monkeypatch):
    def interrupted(config, labels, fold, parallel=None, seeds=1):
        run_dir = new_run_dir(config, config.train.model, "cpu")
        (run_dir / "plan.json").write_text(json.dumps({"fold": fold}))  # an epoch ended: resumable
        raise KeyboardInterrupt

    monkeypatch.setattr(training_commands, "load_labels", lambda config: None)
    monkeypatch.setattr(training_commands, "train_in_new_run", interrupted)
    result = invoke("train", "digits")
    assert result.exit_code != 0
    (run_dir,) = (project / "runs" / "digits").iterdir()
    assert f"kit train digits --resume --run {run_dir.name}" in result.output
    assert f"make resume COMP=digits RUN={run_dir.name}" in result.output

    def interrupted_again(config, run):
        raise KeyboardInterrupt

    monkeypatch.setattr(training_commands, "_resume", interrupted_again)
    result = invoke("train", "digits", "--resume")
    assert f"kit train digits --resume --run {run_dir.name}" in result.output


def test_ctrl_c_before_an_epoch_ended_says_there_is_nothing_to_resume(project, monkeypatch):
    def interrupted(config, labels, fold, parallel=None, seeds=1):
        raise KeyboardInterrupt

    monkeypatch.setattr(training_commands, "load_labels", lambda config: None)
    monkeypatch.setattr(training_commands, "train_in_new_run", interrupted)
    result = invoke("train", "digits")
    assert result.exit_code != 0 and "nothing to resume; `kit train digits` starts again" in result.output


def test_resuming_a_finished_run_says_there_is_nothing_to_resume_and_does_nothing(project, monkeypatch):
    """`make resume RUN=` of a run whose metrics.json is written used to settle it again (the prediction
    choice and calibration redone, every line printed); now one line says it is finished and what is next."""
    config = load_competition("digits")
    run_dir = new_run_dir(config, config.train.model, "cpu")
    (run_dir / "plan.json").write_text(json.dumps({"fold": "0"}))
    Run(run_dir).summary_file.write_text(json.dumps({"layout": LAYOUT}))
    monkeypatch.setattr(training_commands, "_train_and_settle", lambda *args: pytest.fail("settled again"))
    result = invoke("train", "digits", "--resume", "--run", run_dir.name)
    assert result.exit_code == 1
    (line,) = result.output.strip().splitlines()
    assert f"run {run_dir.name} is finished" in line and "nothing to resume" in line
    assert f"`kit predict digits {run_dir.name}`" in line


# --- baselines and the quick run's lines ------------------------------------------------------------------


SUMMARY = {
    "metric": "log_loss",
    "cv": 0.2,
    "cv_uncalibrated": 0.25,
    "folds_trained": [0],
    "worse_stages": {"0": [{"stage": "head-augmented", "start": 0.3, "end": 0.35}]},
}


def test_cv_line_has_the_baseline_beside_it_and_a_quick_run_is_not_sent_to_the_quick_recipe():
    reference = baselines.describe(baselines.baseline("log_loss", np.array([0, 1, 1, 0]), 2))
    full = commands.cv_line(Summary(SUMMARY), reference)
    assert full.startswith("CV log_loss: 0.2000 (uncalibrated 0.2500; folds [0]); baseline 0.6931 (")
    assert "recipe=quick" in full
    quick = commands.cv_line(Summary(SUMMARY), reference, quick=True)
    assert "recipe=quick" not in quick and "shorten those stages or lower their rates" in quick


def write_run(project, name, summary, saved):
    run_dir = project / "runs" / "digits" / name
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"path": "x", **saved}))
    record = {"layout": LAYOUT, "classes": [], "seconds": 60, "folds": {}, **summary}
    (run_dir / "metrics.json").write_text(json.dumps(record))
    return run_dir


FULL_STAGES = [
    {"name": "head-precomputed", "n_cycles": 1, "lr": 0.01},
    {"name": "head-augmented", "n_cycles": 1, "lr": 0.01},
    {"name": "unfrozen", "n_cycles": 3, "cycle_len": 1, "cycle_mult": 2, "lr": [1e-4, 3e-4, 1e-3]},
]


def test_runs_table_of_quick_full_and_ensemble_runs_is_readable(project):
    summary = {"metric": "accuracy", "cv": 0.9, "folds_trained": [0]}
    quick = write_run(
        project, "20260101-000000-quick", summary, {"train": {"recipe": "quick"}, "stages": FULL_STAGES[:2]}
    )
    full = write_run(
        project,
        "20260101-000001-full",
        {**summary, "folds_trained": [0, 1, 2, 3, 4]},
        {"train": {"recipe": "full"}, "stages": FULL_STAGES},
    )
    write_run(
        project,
        "20260101-000002-blend",
        {**summary, "ensemble": {"runs": [quick.name, full.name], "weights": [0.5, 0.5]}},
        {"train": {"recipe": "quick"}, "stages": FULL_STAGES[:2]},
    )
    table = runs_table.runs_table(load_competition("digits"))
    assert not [column for column in table.columns if column.startswith("stages.")]
    assert table["trained"].tolist() == ["fold 0", "folds 0-4", "ensemble of 2 runs"]
    assert table["stages"].tolist()[:2] == [
        "head-precomputed 1, head-augmented 1",
        "head-precomputed 1, head-augmented 1, unfrozen 7",
    ]
    blend = table.iloc[2].astype(str).tolist()
    assert not any(quick.name in value or full.name in value for value in blend[1:])  # no member ids
    assert "train.recipe" in table.columns


def test_runs_table_keeps_stage_columns_when_the_recipes_are_alike(project):
    summary = {"metric": "accuracy", "cv": 0.9, "folds_trained": [0]}
    longer = [*FULL_STAGES[:2], {**FULL_STAGES[2], "cycle_len": 2}]
    write_run(project, "20260101-000000-a", summary, {"stages": FULL_STAGES})
    write_run(project, "20260101-000001-b", summary, {"stages": longer})
    table = runs_table.runs_table(load_competition("digits"))
    assert [column for column in table.columns if column.startswith("stages")] == ["stages.2.cycle_len"]


def test_runs_and_ledger_print_the_baseline(project, digits_download):
    copy_download(digits_download, project)
    write_run(project, "20260101-000000-a", {"metric": "accuracy", "cv": 0.9, "folds_trained": [0]}, {})
    labels = load_labels(load_competition("digits"))
    expected = baselines.baseline("accuracy", labels.targets, len(labels.classes))
    result = invoke("runs", "digits")
    assert result.exit_code == 0, result.output
    assert f"accuracy baseline {expected.score:.4f} (the most common class for every image)" in result.output
    (project / "submissions").mkdir(exist_ok=True)
    from kit import ledger

    ledger.append_ledger(
        {"time_utc": "20260101-000000", "competition": "digits", "file": "f.csv", "run": "20260101-000000-a",
         "metric": "accuracy", "cv": "0.9", "cv_uncalibrated": "0.9", "status": "dry run", "message": "m"}
    )  # fmt: skip
    shown = invoke("ledger", "digits")
    assert shown.exit_code == 0 and f"accuracy baseline {expected.score:.4f}" in shown.output


def test_a_quick_run_says_what_the_full_recipe_adds_from_measured_epochs(project):
    config = load_competition("cats-vs-dogs", ("train.recipe=quick",))
    history = [
        {"stage": "head-precomputed", "seconds": 1.0},
        {"stage": "head-augmented", "seconds": 40.0},
    ]
    summary = Summary({"folds": {"0": {"history": history}}})
    note = commands.full_recipe_note(config, summary, [])
    minutes = 5 * training_commands.UNFROZEN_EPOCH_COST * 40 / 60  # cats-vs-dogs: one 5-epoch unfrozen cycle
    assert note.startswith("quick recipe: the full recipe adds 'unfrozen' (5 epochs): about ")
    assert f"about {minutes:.0f} min per fold here" in note and "this run's 40 s frozen-body epochs" in note

    resolved = load_competition("cats-vs-dogs")  # an earlier full run, as `kit train` saves one
    full_dir = new_run_dir(resolved, resolved.train.model, "cpu")
    unfrozen = [{"stage": "unfrozen", "seconds": 90.0}] * 5
    record = {
        "layout": LAYOUT,
        "metric": "log_loss",
        "cv": 0.1,
        "classes": [],
        "folds": {"0": {"history": unfrozen}},
    }
    (full_dir / "metrics.json").write_text(json.dumps(record))
    measured = commands.full_recipe_note(config, summary, [full_dir])
    assert f"about 8 min per fold here (as run {full_dir.name} measured its epochs)" in measured

    # A small fork's frozen-body epochs take a second: the cost is said in seconds, not "about 0 min".
    history[-1]["seconds"] = 1.0
    small = commands.full_recipe_note(config, summary, [])
    assert f"about {5 * training_commands.UNFROZEN_EPOCH_COST:.0f} s per fold here" in small


def test_kit_new_writes_the_measured_defaults_for_a_cats_vs_dogs_like_folder(project):
    cats_layout(project / "data" / "raw" / "kittens")
    result = invoke("new", "kittens", "--from-raw")
    assert result.exit_code == 0, result.output
    text = (project / "competitions" / "kittens" / "competition.toml").read_text()
    config = load_competition("kittens")
    assert config.submission.clip_epsilon == 0.005  # not Kaggle's 1e-15
    assert (config.predict.tta, config.predict.image_scale, config.predict.mean) == (1, 1.143, "logits")
    assert config.stages[1].joins_prediction
    for key in ("clip_epsilon", "tta", "image_scale", "mean", "joins_prediction"):
        comment = re.search(rf"((?:^# .*\n)+){key} = ", text, re.M)  # the comment lines just above
        assert comment and "docs/" in comment.group(1), key  # each names its measurement


def test_kit_new_writes_the_measured_defaults_for_a_dog_breeds_like_folder(project):
    breeds_layout(project / "data" / "raw" / "pups")
    assert invoke("new", "pups", "--from-raw").exit_code == 0
    config = load_competition("pups")
    assert config.submission.clip_epsilon == pytest.approx(0.003)  # a hundredth of 1/3
    assert config.predict.mean == "probabilities" and config.predict.tta == 1
    assert not any(stage.joins_prediction for stage in config.stages)


def test_kit_new_like_a_shipped_competition_takes_its_recipe(project):
    cats_layout(project / "data" / "raw" / "kittens")
    result = invoke("new", "kittens", "--from-raw", "--like", "cats-vs-dogs")
    assert result.exit_code == 0, result.output
    fork, shipped = load_competition("kittens"), load_competition("cats-vs-dogs")
    assert fork.stages == shipped.stages and fork.predict == shipped.predict
    assert fork.train.batch_size == 32 and fork.submission.clip_epsilon == 0.005
    assert fork.data.train_dir == "train" and fork.competition.kaggle == ""
    assert fork.train.folds == 5 and fork.data.max_aspect == shipped.data.max_aspect
    text = (project / "competitions" / "kittens" / "competition.toml").read_text()
    assert "# as competitions/cats-vs-dogs: one confident mistake" in text

    breeds_layout(project / "data" / "raw" / "pups")  # 4 photos per breed: 4 folds
    assert invoke("new", "pups", "--from-raw", "--like", "dog-breeds").exit_code == 0
    pups = load_competition("pups")
    assert (
        pups.data.max_aspect == 1.0
        and pups.train.folds == 4
        and pups.stages == load_competition("dog-breeds").stages
    )

    wrong = invoke("new", "tags", "--from-raw", "--like", "digits-tags")
    assert wrong.exit_code == 1
    cats_layout(project / "data" / "raw" / "tags")
    wrong = invoke("new", "tags", "--from-raw", "--like", "digits-tags")
    assert wrong.exit_code == 1 and "is a multi_label competition" in wrong.output
    assert len(wrong.output.strip().splitlines()) == 1


@pytest.mark.parametrize("name", ["cats-vs-dogs", "dog-breeds"])
def test_a_like_forks_comments_cite_measurements_that_exist(name):
    # --like copies these comments into every fork; the measurement history left the README for docs/, so a
    # comment citing "README" sends a competitor to a section that is no longer there.
    text = (REPO / "competitions" / name / "competition.toml").read_text()
    comments = "\n".join(line.partition("#")[2] for line in text.splitlines() if "#" in line)
    assert "README" not in comments
    cited = re.findall(r"docs/[\w.-]+\.md", comments)
    assert cited and all((REPO / path).is_file() for path in cited), cited


def test_the_tests_copy_the_shipped_competitions_not_the_competitors_forks(project, tmp_path):
    # A fresh clone's walk: `make new COMP=kittens` then `make test` failed 8 tests ('kittens' already exists,
    # a slug now ambiguous), because every test project copied the checkout's forks too.
    cats_layout(project / "data" / "raw" / "kittens")
    assert invoke("new", "kittens", "--from-raw").exit_code == 0
    _copy_competitions(tmp_path / "copy", source=project / "competitions")
    copied = {path.name for path in (tmp_path / "copy" / "competitions").iterdir()}
    assert "kittens" not in copied and {"cats-vs-dogs", "digits", "dog-breeds"} <= copied


def test_lr_find_from_a_run_uses_the_settings_that_run_trained_with(project, monkeypatch):
    # The walk's `make lr-find COMP=redux STAGE=2 RUN=...` of a run trained at 96 px cached and tested at
    # the TOML's 224 px: minutes more on a CPU, and not the regime the weights were trained in.
    trained = load_competition("cats-vs-dogs", ("train.image_size=96",))
    run_dir = new_run_dir(trained, trained.train.model, "cpu")
    weights = training_commands.Run(run_dir).fold(0).last
    weights.parent.mkdir(parents=True, exist_ok=True)
    weights.write_bytes(b"")
    seen = {}
    monkeypatch.setattr(training_commands, "_lr_find", lambda config, *rest: seen.update(config=config))
    monkeypatch.setattr(training_commands, "load_labels", lambda config: None)
    commands.find_learning_rate(load_competition("cats-vs-dogs"), 1, run=run_dir.name)
    assert seen["config"].train.image_size == 96
    commands.find_learning_rate(
        load_competition("cats-vs-dogs"), 1, run=run_dir.name, overrides=("train.lr=0.01",)
    )
    assert seen["config"].train.image_size == 96 and seen["config"].train.lr == 0.01


def test_the_report_states_the_baseline():
    from kit.data.labels import LabelTable
    from kit.report.report import baseline_sentence

    labels = LabelTable(
        ids=["a", "b", "c"], paths=[], targets=np.array([0, 1, 1]), classes=["x", "y"], task=SINGLE_LABEL
    )
    sentence = baseline_sentence("accuracy", labels)
    assert sentence.endswith("baseline 0.6667 (the most common class for every image).")
