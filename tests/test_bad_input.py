"""Bad input, through the real CLI: every case ends in one `Error:` line (or a clear skip report), never a
traceback, and nothing is written outside data/, runs/ and submissions/ of the temporary project.

Each case builds its own broken input in a temporary project before the tree is snapshotted; then it runs
the command a user would run and checks the message names the problem, where it is and the fix.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import TINY, invoke
from kaggle_standin import KaggleStandIn, image_bytes, kaggle_env, make_zip

from kit.competitions import load_competition

# TINY with a one-step stage and no TTA views: a whole training run takes a few seconds on a loaded CPU.
QUICK = [*TINY, "stages=[{cycle_len=0.05}]", "predict.tta=0"]
TRAIN_CSV_ROW = 2  # the first data row of a CSV is row 2: row 1 is the header


def sets(values) -> list[str]:
    return [item for value in values for item in ("--set", value)]


def tree(root: Path) -> dict[str, str]:
    """Every file and link under root (links not followed): content digests, or size and time where
    outputs may legitimately change (data/interim, runs/, submissions/)."""
    state = {}
    for folder, folders, files in os.walk(root, followlinks=False):
        for name in files + [f for f in folders if os.path.islink(os.path.join(folder, f))]:
            path = Path(folder) / name
            relative = path.relative_to(root).as_posix()
            parts = relative.split("/")
            if path.is_symlink():
                state[relative] = "link to " + os.readlink(path)
            elif not path.is_file():  # a named pipe (reading it would wait for a writer forever)
                state[relative] = f"special file, mode {path.stat().st_mode:o}"
            elif parts[1:2] in (["runs"], ["submissions"]) or parts[1:3] == ["data", "interim"]:
                stat = path.stat()
                state[relative] = f"{stat.st_size} bytes, modified {stat.st_mtime_ns}"
            else:
                state[relative] = hashlib.sha1(path.read_bytes()).hexdigest()
    return state


class Watched:
    """The temporary project's parent folder, snapshotted before a command and compared after it."""

    def __init__(self, project: Path):
        self.project, self.root = project, project.parent
        self.before = self.current()

    def current(self) -> dict[str, str]:
        # The Kaggle stand-in's fake HOME and config folders belong to the test, not to the project.
        return {path: state for path, state in tree(self.root).items() if not path.startswith("kaggle-")}

    def check(self) -> None:
        """Only data/interim, runs/ and submissions/ of the project changed.

        data/raw is byte-for-byte the same.
        """
        after = self.current()
        changed = {
            path for path in self.before.keys() | after.keys() if self.before.get(path) != after.get(path)
        }
        allowed = ("project/data/interim/", "project/runs/", "project/submissions/")
        outside = sorted(path for path in changed if not path.startswith(allowed))
        assert not outside, f"written outside data/interim, runs/ and submissions/: {outside[:5]}"
        leftovers = [path for path in after if path.endswith(".tmp")]
        assert not leftovers, f"temporary files left behind: {leftovers[:5]}"


def refused(project: Path, *arguments, contains: tuple[str, ...] = ()) -> str:
    """Run the CLI and check: exit 1 from a ClickException, one line starting 'Error:', no traceback,
    every phrase of `contains` in it, nothing written where it must not be. Returns the line."""
    watched = Watched(project)
    result = invoke(*arguments)
    # CliRunner turns any other exception into exit code 1 too; a real terminal would show its traceback.
    assert isinstance(result.exception, SystemExit), (result.output, result.exc_info)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    said = [line for line in re.split(r"[\r\n]", result.stderr) if line.strip()]
    errors = [line for line in said if line.startswith("Error:")]
    assert len(errors) == 1 and said[-1] == errors[0], result.stderr  # one line, and the last word
    for phrase in contains:
        assert phrase in errors[0], errors[0]
    watched.check()
    return errors[0]


def succeeds(project: Path, *arguments):
    watched = Watched(project)
    result = invoke(*arguments)
    assert result.exit_code == 0, (result.output, result.exc_info)
    watched.check()
    return result


def raw(project: Path, competition: str = "digits") -> Path:
    return project / "data" / "raw" / competition


def train_rows(project: Path) -> pd.DataFrame:
    return pd.read_csv(raw(project) / "train.csv", dtype=str, keep_default_na=False)


def write_rows(path: Path, table: pd.DataFrame) -> None:
    table.to_csv(path, index=False)


@pytest.fixture(scope="module")
def module_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bad-input")


def keep_a_few(folder: Path, per_class: int = 15, tests: int = 40) -> None:
    """Cut a digits download to `per_class` training images per class and `tests` test images."""
    table = pd.read_csv(folder / "train.csv", dtype=str)
    kept = table[table.groupby("label").cumcount() < per_class]
    for identifier in set(table["id"]) - set(kept["id"]):
        (folder / "train" / f"{identifier}.png").unlink()
    kept.to_csv(folder / "train.csv", index=False)
    for listing in ("sample_submission.csv", "solution.csv"):
        frame = pd.read_csv(folder / listing, dtype=str)
        for identifier in frame["id"][tests:]:
            (folder / "test" / f"{identifier}.png").unlink(missing_ok=True)
        frame[:tests].to_csv(folder / listing, index=False)


@pytest.fixture
def digits(project, module_cache):
    """conftest's digits, cut to 150 training and 40 test images: a tenth of the files to write per test.

    Made once per module by the competition's download hook, then copied (file times kept).
    """
    from kit import commands

    cached = module_cache / "raw-digits"
    if not cached.exists():
        commands.download(load_competition("digits"))
        keep_a_few(raw(project))
        shutil.copytree(raw(project), cached)
    else:
        shutil.copytree(cached, raw(project))
    return lambda *extra: load_competition("digits", [*TINY, *extra])


@pytest.fixture
def trained(digits, project, module_cache) -> Path:
    """A finished QUICK run of the small digits, predicted, in the temporary project; returns its folder.

    Trained once per module and copied (file times kept, so the image caches stay valid) into later projects.
    """
    cached = module_cache / "trained"
    if not cached.exists():
        from kit import commands

        config = digits(*QUICK[len(TINY) :])
        commands.train(config, "0")
        commands.predict(config, None)
        for part in ("data/interim", "runs", "submissions"):
            shutil.copytree(project / part, cached / part, symlinks=True)
    else:
        for part in ("data/interim", "runs", "submissions"):
            shutil.copytree(cached / part, project / part, symlinks=True)
    (run_dir,) = (project / "runs" / "digits").iterdir()
    return run_dir


def spoil_images(folder: Path, names: list[str]) -> dict[str, str]:
    """Five kinds of bad image file, one per name: {name: kind}."""
    kinds = {}
    for name, kind in zip(names, ["corrupt", "truncated", "zero-byte", "text", "missing"], strict=True):
        path = folder / name
        content = path.read_bytes()
        if kind == "corrupt":
            path.write_bytes(content[:16] + bytes(range(256)) * 2)  # PNG signature, then garbage
        elif kind == "truncated":
            path.write_bytes(content[: len(content) // 2])
        elif kind == "zero-byte":
            path.write_bytes(b"")
        elif kind == "text":
            path.write_text("id,label\nthis is a CSV file named .png\n")
        else:
            path.unlink()
        kinds[name] = kind
    return kinds


# Bad images


def test_a_few_bad_training_images_are_skipped_and_listed(digits, project):
    names = [f"{identifier}.png" for identifier in train_rows(project)["id"][:5]]
    kinds = spoil_images(raw(project) / "train", names)
    result = succeeds(project, "train", "digits", *sets(QUICK))
    assert "skipping 5 unreadable training images" in result.output
    (run_dir,) = (project / "runs" / "digits").iterdir()
    report = json.loads((run_dir / "bad-images.json").read_text())
    assert sorted(Path(path).name for path in report) == sorted(names)
    for path, problem in report.items():
        assert (
            problem == "missing" if kinds[Path(path).name] == "missing" else problem.startswith("unreadable")
        )
    # The skipped images are neither trained on nor predicted out of fold.
    oof = np.load(run_dir / "oof.npy")
    assert np.isnan(oof[:5]).all() and json.loads((run_dir / "metrics.json").read_text())[
        "folds_trained"
    ] == [0]


def test_many_bad_training_images_stop_training_with_the_list(digits, project):
    names = [f"{identifier}.png" for identifier in train_rows(project)["id"][:5]]
    spoil_images(raw(project) / "train", names)
    line = refused(
        project,
        "train",
        "digits",
        *sets([*QUICK, "data.max_bad_images=2"]),
        contains=("5 training images cannot be read", "data.max_bad_images = 2", names[0], "bad-images.json"),
    )
    assert "missing" in line and "unreadable" in line
    assert not list((project / "runs" / "digits").iterdir())  # stopped before training: no run left
    listed = json.loads((project / "data" / "interim" / "digits" / "bad-images.json").read_text())
    assert sorted(Path(path).name for path in listed) == sorted(names) and str(project / "data") in line


def test_a_bad_test_image_stops_prediction(trained, project):
    submissions_before = sorted((project / "submissions").iterdir())
    test_image = sorted((raw(project) / "test").iterdir())[3]
    test_image.write_bytes(test_image.read_bytes()[:20])
    refused(
        project, "predict", "digits", contains=("1 test images cannot be read", test_image.name, "every id")
    )
    assert sorted((project / "submissions").iterdir()) == submissions_before
    assert list(json.loads((trained / "bad-test-images.json").read_text())) == [str(test_image)]


def test_a_test_folder_without_images(trained, project):
    for path in (raw(project) / "test").iterdir():
        path.unlink()
    refused(project, "predict", "digits", contains=("no test images", "'.png'", "data.test_dir", "download"))


# Bad tables


def test_duplicate_training_id_names_its_row(digits, project):
    table = train_rows(project)
    table.loc[7, "id"] = table.loc[3, "id"]
    write_rows(raw(project) / "train.csv", table)
    refused(
        project,
        "train",
        "digits",
        *sets(QUICK),
        contains=("train.csv", f"duplicate id {table.loc[3, 'id']!r}", "row 9"),
    )
    assert not (project / "runs").exists()  # refused before a run folder is made


def test_empty_label_names_its_row(digits, project):
    table = train_rows(project)
    table.loc[10, "label"] = ""
    write_rows(raw(project) / "train.csv", table)
    refused(project, "train", "digits", *sets(QUICK), contains=("train.csv", "empty label", "row 12"))


@pytest.mark.parametrize(
    "identifier", ["../../../../outside", "/etc/passwd", "train/digit-0001", "..", "a\\b", ""]
)
def test_ids_that_are_not_plain_file_names_are_refused_with_the_row(digits, project, identifier):
    table = train_rows(project)
    table.loc[4, "id"] = identifier
    write_rows(raw(project) / "train.csv", table)
    refused(
        project, "train", "digits", *sets(QUICK), contains=("train.csv", "row 6", "not a plain file name")
    )


def test_a_label_csv_without_the_configured_columns(digits, project):
    write_rows(
        raw(project) / "train.csv", train_rows(project).rename(columns={"id": "image", "label": "digit"})
    )
    refused(
        project,
        "train",
        "digits",
        *sets(QUICK),
        contains=("train.csv", "no column 'id', 'label'", "image, digit", "data.id_column"),
    )


@pytest.mark.parametrize(
    "content",
    [b'id,label\ndigit-0001,3\ndigit-0002,4,extra,"\n', b"\x80\x81\x00i\x00d\x00,\x00l\xd8\x00", b""],
    ids=["unparseable", "not-utf8", "empty"],
)
def test_a_malformed_label_csv_is_one_line(digits, project, content):
    (raw(project) / "train.csv").write_bytes(content)
    refused(project, "train", "digits", *sets(QUICK), contains=("train.csv", "not a readable CSV"))


def test_test_listing_with_a_duplicate_id(trained, project):
    sample = pd.read_csv(raw(project) / "sample_submission.csv", dtype=str)
    sample.loc[5, "id"] = sample.loc[2, "id"]
    write_rows(raw(project) / "sample_submission.csv", sample)
    refused(project, "predict", "digits", contains=("sample_submission.csv", "duplicate id", "row 7"))


def test_test_listing_with_a_path_id(trained, project):
    sample = pd.read_csv(raw(project) / "sample_submission.csv", dtype=str)
    sample.loc[0, "id"] = "../train/" + train_rows(project)["id"][0]
    write_rows(raw(project) / "sample_submission.csv", sample)
    refused(
        project, "predict", "digits", contains=("sample_submission.csv", "row 2", "not a plain file name")
    )


def test_a_labelled_training_image_in_the_test_set_is_refused(trained, project):
    """The same image file listed for training (with its label) and for testing: a leak, or a mix-up of
    the listings. Ids alone may repeat across separate train/ and test/ folders (numbered per folder)."""
    training_id = train_rows(project)["id"][6]
    sample = pd.read_csv(raw(project) / "sample_submission.csv", dtype=str)
    (raw(project) / "test" / f"{sample.loc[3, 'id']}.png").unlink()
    (raw(project) / "test" / f"{sample.loc[3, 'id']}.png").symlink_to(
        Path("..") / "train" / f"{training_id}.png"
    )
    refused(
        project,
        "predict",
        "digits",
        contains=("sample_submission.csv", "row 5", "training image", "train.csv row 8"),
    )


# Nothing built from data leaves the competition's folder


def test_an_image_linked_from_outside_the_raw_folder_is_refused(digits, project):
    outside = project.parent / "outside.png"
    outside.write_bytes(image_bytes((1, 2, 3), 0, "PNG", 8))
    name = f"{train_rows(project)['id'][2]}.png"
    (raw(project) / "train" / name).unlink()
    (raw(project) / "train" / name).symlink_to(outside)
    refused(
        project,
        "train",
        "digits",
        *sets(QUICK),
        contains=("train.csv row 4", name, "outside", "data/raw/digits"),
    )


def test_an_image_folder_linked_from_outside_is_refused(digits, project):
    elsewhere = project.parent / "elsewhere"
    shutil.move(raw(project) / "train", elsewhere)
    (raw(project) / "train").symlink_to(elsewhere)
    refused(
        project, "train", "digits", *sets(QUICK), contains=("data.train_dir", "outside", "data/raw/digits")
    )


@pytest.mark.parametrize(
    "setting", ["data.train_dir=../../../..", "data.labels_csv=/etc/passwd", "data.extension=/../../../x.png"]
)
def test_config_paths_that_leave_the_raw_folder_are_refused(digits, project, setting):
    refused(project, "train", "digits", *sets([*QUICK, setting]), contains=(setting.split("=")[0], "outside"))


# Diverging training


def test_a_diverging_first_stage_says_lower_the_learning_rate(digits, project):
    line = refused(
        project,
        "train",
        "digits",
        *sets([*QUICK, "train.lr=1e6"]),
        contains=("stage 'train'", "diverged", "lower the learning rate", "lr-find COMP=digits"),
    )
    assert "no good weights" in line
    assert not list((project / "runs" / "digits").iterdir())  # nothing trained: no run folder left behind


def test_a_diverging_later_stage_keeps_the_last_good_weights(digits, project):
    from kit import models

    recipe = "stages=[{name='calm', cycle_len=0.05, lr=1e-3}, {name='wild', cycle_len=0.05, lr=1e6}]"
    line = refused(
        project,
        "train",
        "digits",
        *sets([*QUICK, recipe]),
        contains=("stage 'wild'", "diverged", "lr-find", "best.pt"),
    )
    (run_dir,) = (project / "runs" / "digits").iterdir()
    assert str(run_dir / "fold-0" / "best.pt") in line and not (run_dir / "metrics.json").exists()
    model = models.create_model("test_efficientnet", 10, pretrained=False)
    models.load_weights(model, run_dir / "fold-0" / "best.pt", {"model": "test_efficientnet"})
    assert all(parameter.isfinite().all() for parameter in model.parameters())


# Checkpoints that do not fit


def replace_checkpoint(run_dir: Path, model_name: str, classes: list[str]) -> None:
    from kit import models

    model = models.create_model(model_name, len(classes), pretrained=False)
    models.save_weights(model, run_dir / "fold-0" / "last.pt", {"model": model_name, "classes": classes})


def test_predict_refuses_weights_of_another_model(trained, project):
    replace_checkpoint(trained, "test_resnet", [str(digit) for digit in range(10)])
    refused(
        project, "predict", "digits", contains=("last.pt", "model", "'test_resnet'", "'test_efficientnet'")
    )


def test_predict_refuses_weights_for_another_class_list(trained, project):
    replace_checkpoint(trained, "test_efficientnet", ["cat", "dog"])
    refused(project, "predict", "digits", contains=("last.pt", "classes", "['cat', 'dog']"))


def test_predict_refuses_a_damaged_checkpoint(trained, project):
    checkpoint = trained / "fold-0" / "last.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    refused(project, "predict", "digits", contains=("last.pt", "not a readable checkpoint", "train"))


def test_lr_find_refuses_a_run_of_another_model(trained, project):
    refused(
        project,
        "lr-find",
        "digits",
        "--run",
        trained.name,
        *sets([*QUICK, "train.model=test_resnet"]),
        contains=("last.pt", "'test_efficientnet'", "'test_resnet'"),
    )


def test_lr_find_refuses_a_run_without_fold_0_weights(trained, project):
    (trained / "fold-0" / "last.pt").unlink()
    refused(
        project,
        "lr-find",
        "digits",
        "--run",
        trained.name,
        *sets(QUICK),
        contains=("last.pt not found", "finished run"),
    )


# Configuration and command line


def test_malformed_toml_names_file_and_line(project):
    folder = project / "competitions" / "broken"
    folder.mkdir()
    (folder / "competition.toml").write_text('[competition]\nmetric = "accuracy"\n[train]\nlr = = 3\n')
    refused(project, "train", "broken", contains=("broken/competition.toml", "malformed TOML", "line 4"))


def test_unknown_key_in_toml_lists_the_allowed_keys(project):
    folder = project / "competitions" / "typo"
    folder.mkdir()
    (folder / "competition.toml").write_text("[train]\nepoch = 3\n")
    refused(
        project, "train", "typo", contains=("typo/competition.toml", "unknown key 'train.epoch'", "epochs")
    )


@pytest.mark.parametrize(
    ("setting", "phrase"),
    [
        ("train.epochs=two", "'train.epochs' = 'two' should be int"),
        ("train.epoch=2", "unknown key 'train.epoch'"),
        ("train.epochs", "write key=value"),
    ],
)
def test_bad_overrides(project, setting, phrase):
    refused(project, "train", "digits", "--set", setting, contains=(phrase,))


def test_unknown_competition_lists_the_known_ones(project):
    refused(
        project,
        "predict",
        "no-such-competition",
        contains=("unknown competition 'no-such-competition'", "digits"),
    )


def test_data_not_downloaded_says_how_to_get_it(project):
    refused(project, "train", "digits", *sets(QUICK), contains=("no data in", "make download COMP=digits"))


@pytest.mark.parametrize("fold", ["9", "x", "-1"])
def test_a_fold_that_does_not_exist(digits, project, fold):
    refused(
        project, "train", "digits", "--fold", fold, *sets(QUICK), contains=(f"--fold {fold}", "0..4", "'all'")
    )
    assert not (project / "runs").exists()


def test_lr_find_stage_out_of_range(digits, project):
    refused(project, "lr-find", "digits", "--stage", "7", contains=("--stage 7", "stages 0..3"))


def test_predict_with_an_unknown_run(trained, project):
    refused(project, "predict", "digits", "nope", contains=("run 'nope' of digits not found", trained.name))


def test_resume_without_an_interrupted_run(trained, project):
    refused(project, "train", "digits", "--resume", contains=("no interrupted run of digits", "make train"))


# Kaggle: credentials and hostile downloads


def test_missing_kaggle_credentials(project, tmp_path, monkeypatch):
    kaggle_env(monkeypatch, tmp_path, credentials=False)
    refused(
        project,
        "download",
        "dog-breeds",
        contains=("no Kaggle credentials", "kaggle.json", "KAGGLE_USERNAME"),
    )
    refused(project, "submit", "dog-breeds", contains=("no Kaggle credentials",))
    assert not raw(project, "dog-breeds").exists()


@pytest.mark.parametrize("member", ["../escaped.txt", "train/../../escaped.txt", "/tmp/escaped.txt"])
def test_a_zip_with_members_outside_its_folder_is_refused(project, tmp_path, monkeypatch, member):
    kaggle_env(monkeypatch, tmp_path)
    bundle = make_zip({"labels.csv": b"id,breed\na,pug\n", member: b"should never be written"})
    with KaggleStandIn(competitions={"dog-breed-identification": bundle}):
        refused(project, "download", "dog-breeds", contains=("refusing to extract", repr(member)))
    assert not raw(project, "dog-breeds").exists()
    assert not list(tmp_path.rglob("escaped.txt")) and not Path("/tmp/escaped.txt").exists()


# Submissions edited by hand


def submission_file(project: Path, run_dir: Path) -> Path:
    return project / "submissions" / json.loads((run_dir / "submission.json").read_text())["file"]


def test_submit_refuses_wrong_columns(trained, project):
    path = submission_file(project, trained)
    path.write_text(path.read_text().replace("id,label", "id,digit", 1))
    refused(
        project,
        "submit",
        "digits",
        "--dry-run",
        contains=(path.name, "columns differ from sample_submission.csv"),
    )
    assert not (project / "submissions" / "ledger.csv").exists()


def test_submit_refuses_an_empty_label(trained, project):
    path = submission_file(project, trained)
    lines = path.read_text().splitlines()
    lines[4] = lines[4].split(",")[0] + ","
    path.write_text("\n".join(lines) + "\n")
    refused(project, "submit", "digits", "--dry-run", contains=(path.name, "row 5", "label"))


def test_submit_refuses_an_unparseable_file(trained, project):
    path = submission_file(project, trained)
    path.write_text(path.read_text() + 'digit-9999,"3\n')
    refused(project, "submit", "digits", "--dry-run", contains=(path.name, "not a readable CSV"))


def test_submit_refuses_nan_probabilities(trained, project):
    """A probabilities competition (digits, submitted as one column per class) whose file has a NaN."""
    folder = project / "competitions" / "digits-probabilities"
    folder.mkdir()
    text = (project / "competitions" / "digits" / "competition.toml").read_text()
    text = text.replace('format = "label"', 'format = "probabilities"').replace(
        'metric = "accuracy"', 'metric = "log_loss"'
    )
    (folder / "competition.toml").write_text(text)
    classes = [str(digit) for digit in range(10)]
    ids = list(pd.read_csv(raw(project) / "sample_submission.csv", dtype=str)["id"])
    raw(project, "digits-probabilities").mkdir(parents=True)
    write_rows(
        raw(project, "digits-probabilities") / "sample_submission.csv",
        pd.DataFrame({"id": ids, **{c: 0.1 for c in classes}}),
    )
    run_dir = project / "runs" / "digits-probabilities" / trained.name
    shutil.copytree(trained, run_dir)
    probabilities = pd.DataFrame({"id": ids, **{c: 0.1 for c in classes}})
    probabilities.loc[7, "3"] = np.nan
    path = project / "submissions" / "digits-probabilities-hand-made.csv"
    write_rows(path, probabilities)
    (run_dir / "submission.json").write_text(json.dumps({"file": path.name, "weights": []}))
    refused(project, "submit", "digits-probabilities", "--dry-run", contains=(path.name, "row 9", "NaN"))


# The real process, as a user's terminal sees it


def test_a_real_process_prints_one_line_and_no_traceback(project):
    import subprocess
    import sys

    folder = project / "competitions" / "broken"
    folder.mkdir()
    (folder / "competition.toml").write_text("[train]\nlr = = 3\n")
    environment = {**os.environ, "KIT_PROJECT_ROOT": str(project)}
    process = subprocess.run(
        [sys.executable, "-m", "kit", "train", "broken"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert process.returncode == 1 and process.stdout == ""
    assert (
        process.stderr.count("\n") == 1
        and process.stderr.startswith("Error: ")
        and "malformed TOML" in process.stderr
    )


# Round two (issue 17): folds, classes


def test_a_class_with_fewer_images_than_folds_is_named_and_folded(digits, project):
    table = train_rows(project)
    few = table[table["label"] == "3"].index[2:]
    for identifier in table.loc[few, "id"]:
        (raw(project) / "train" / f"{identifier}.png").unlink()
    write_rows(raw(project) / "train.csv", table.drop(index=few))
    # The test edits data/raw above; from here on nothing under it may change.
    result = succeeds(project, "folds", "digits")
    notices = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(notices) == 1 and "'3' (2)" in notices[0] and "train.folds = 5" in notices[0], notices
    folds = pd.read_csv(project / "data" / "interim" / "digits" / "folds.csv", dtype=str)
    assert folds.loc[folds["label"] == "3", "fold"].nunique() == 2


def test_folds_no_split_can_make_are_refused(digits, project):
    refused(
        project, "folds", "digits", "--set", "train.folds=16", contains=("train.folds = 16", "at most 15")
    )


def test_a_competition_with_one_class_is_refused(digits, project):
    table = train_rows(project)
    write_rows(raw(project) / "train.csv", table.assign(label="7"))
    refused(project, "train", "digits", *sets(QUICK), contains=("train.csv", "'7'", "two or more classes"))
    assert not (project / "runs").exists()


def test_another_seed_rebuilds_the_folds(digits, project):
    from kit.data.folds import assign_folds
    from kit.data.labels import load_labels

    succeeds(project, "folds", "digits")
    succeeds(project, "folds", "digits", "--set", "train.seed=7")
    labels = load_labels(digits())
    saved = pd.read_csv(project / "data" / "interim" / "digits" / "folds.csv")
    assert saved["fold"].tolist() == assign_folds(labels.targets, 5, 7).tolist()
    assert saved["fold"].tolist() != assign_folds(labels.targets, 5, 42).tolist()


# Round two: labels and ids that look the same


def test_labels_with_spaces_are_one_class(digits, project):
    table = train_rows(project)
    table.loc[::3, "label"] = table.loc[::3, "label"] + " "
    write_rows(raw(project) / "train.csv", table)
    succeeds(project, "folds", "digits")
    folds = pd.read_csv(project / "data" / "interim" / "digits" / "folds.csv", dtype=str)
    assert sorted(folds["label"].unique()) == [str(digit) for digit in range(10)]


@pytest.mark.parametrize(
    "spelling", ["{}.png", "{}.PNG", "{upper}"], ids=["extension", "extension-case", "case"]
)
def test_one_image_under_two_ids_is_refused(digits, project, spelling):
    table = train_rows(project)
    identifier = table.loc[2, "id"]
    table.loc[9, "id"] = spelling.format(identifier, upper=identifier.upper())
    write_rows(raw(project) / "train.csv", table)
    refused(project, "train", "digits", *sets(QUICK), contains=("train.csv", "row 4", "row 11", "same image"))
    assert not (project / "runs").exists()


def test_labels_differing_only_in_case_are_refused(digits, project):
    folder = project / "competitions" / "letters"
    folder.mkdir()
    (folder / "competition.toml").write_text(
        (project / "competitions" / "digits" / "competition.toml").read_text()
    )
    shutil.copytree(raw(project), raw(project, "letters"))
    table = train_rows(project).assign(label=lambda frame: "x" + frame["label"])
    table.loc[5, "label"] = table.loc[5, "label"].upper()
    write_rows(raw(project, "letters") / "train.csv", table)
    refused(project, "folds", "letters", contains=("train.csv", "row 7", "differ only in case"))


def test_an_extension_in_another_case_is_not_a_bad_image(digits, project):
    table = train_rows(project)
    for identifier in table["id"][:4]:
        path = raw(project) / "train" / f"{identifier}.png"
        path.rename(path.with_suffix(".PNG"))
    result = succeeds(project, "train", "digits", *sets(QUICK))
    assert "unreadable" not in result.output and "skipping" not in result.output
    (run_dir,) = (project / "runs" / "digits").iterdir()
    assert not (run_dir / "bad-images.json").exists()


# Round two: settings that break the pipeline's contract or were never checked


@pytest.mark.parametrize(
    ("setting", "phrase"),
    [
        ("augment.transforms=[{name='Normalize'}]", "Normalize is not allowed"),
        ("augment.transforms=[{name='ToTensorV2'}]", "ToTensorV2 is not allowed"),
        (
            "augment.transforms=[{name='Resize', height=16, width=16}]",
            "Resize turns a 32x32x3 uint8 image into 16x16x3",
        ),
        ("stages=[{lr=-1e-3}]", "lr = -0.001 must be a positive number"),
        ("stages=[{lr=nan}]", "lr = nan must be a positive number"),
        ("train.lr=nan", "'train.lr' = nan"),
        ("stages=[{image_size=-32}]", "image_size = -32"),
        ("stages=[{batch_size=0}]", "batch_size = 0"),
        ("train.weight_decay=-0.1", "'train.weight_decay' = -0.1"),
        ("train.seed=-5", "'train.seed' = -5"),
    ],
)
def test_settings_that_cannot_work_are_refused_before_a_run_folder(digits, project, setting, phrase):
    line = refused(project, "train", "digits", *sets([*QUICK, setting]), contains=(phrase,))
    assert "too high" not in line
    assert not (project / "runs").exists()


# Round two: a full disk


def no_space(*arguments, **keywords):
    import errno

    raise OSError(errno.ENOSPC, "No space left on device")


def test_too_little_space_for_the_image_cache(digits, project, monkeypatch):
    import shutil as shell_utilities
    from collections import namedtuple

    from kit.data.images import cache_side

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shell_utilities, "disk_usage", lambda folder: usage(10**9, 10**9 - 5000, 5000))
    side = cache_side(32)  # the cache keeps whole photos a little larger than the training size
    needed = (150 * side * side * 3 + 4096) / 1000  # the pixels and the .npy header, in KB
    refused(
        project,
        "train",
        "digits",
        *sets(QUICK),
        contains=("data/interim/digits", f"train images at {side}px needs {needed:.1f} KB", "5.0 KB is free"),
    )
    assert not list((project / "runs" / "digits").iterdir())


def test_the_disk_filling_while_caching(digits, project, monkeypatch):
    """The space check passed, then another program filled the disk: the reservation fails (no bus error)."""
    monkeypatch.setattr(os, "posix_fallocate", no_space)
    refused(project, "train", "digits", *sets(QUICK), contains=("data/interim/digits", "caching", "needs"))
    assert not list((project / "data" / "interim").rglob("*.npy"))  # no cache, and no temporary file


def test_the_disk_filling_under_runs(digits, project, monkeypatch):
    real_write_bytes = Path.write_bytes

    def full_under_runs(path, data):
        if "runs" in path.parts:
            no_space()
        return real_write_bytes(path, data)

    monkeypatch.setattr(Path, "write_bytes", full_under_runs)
    refused(
        project,
        "train",
        "digits",
        *sets(QUICK),
        contains=("runs/digits/", "fold-0", "writing best.pt", "free space"),
    )
    assert not list((project / "runs" / "digits").iterdir())  # no epoch was saved: no run left behind


def test_the_disk_full_when_a_run_starts(digits, project, monkeypatch):
    real_write_text = Path.write_text

    def full_under_runs(path, data, *arguments, **keywords):
        if "runs" in path.parts:
            no_space()
        return real_write_text(path, data, *arguments, **keywords)

    monkeypatch.setattr(Path, "write_text", full_under_runs)
    refused(project, "train", "digits", *sets(QUICK), contains=("runs/digits/", "writing config.json"))
    assert not list((project / "runs" / "digits").iterdir())


# Round two: runs that did not finish, resume points that are not


class Tampered:
    """Pickles as a call to os.system: what a hostile resume.pt would hold."""

    def __reduce__(self):
        return (os.system, ("echo tampered > tampered.txt",))


def interrupted(run_dir: Path) -> None:
    """Make a finished run look interrupted in fold 0 (metrics and the fold's result gone)."""
    for name in ("metrics.json", "fold-0/result.json"):
        (run_dir / name).unlink()


@pytest.mark.parametrize("damage", ["truncated", "tampered", "not-a-resume-point", "garbage"])
def test_resume_refuses_a_damaged_or_tampered_resume_point(trained, project, damage):
    import torch

    interrupted(trained)
    point = trained / "fold-0" / "resume.pt"
    weights = (trained / "fold-0" / "last.pt").read_bytes()
    if damage == "truncated":
        point.write_bytes(weights[: len(weights) // 3])
    elif damage == "tampered":
        torch.save({"model": Tampered(), "epoch": 1}, point)
    elif damage == "not-a-resume-point":
        point.write_bytes(weights)
    else:
        point.write_bytes(os.urandom(5000))
    line = refused(project, "train", "digits", "--resume", contains=(str(point), "delete it", "fold 0"))
    assert "weights_only" not in line and "False" not in line
    assert not list(project.rglob("tampered.txt"))


@pytest.mark.parametrize(
    "command",
    [
        ["predict", "digits", "{run}"],
        ["report", "digits", "{run}"],
        ["submit", "digits", "--run", "{run}", "--dry-run"],
        ["ensemble", "digits", "{run}-finished", "{run}"],
    ],
    ids=["predict", "report", "submit", "ensemble"],
)
def test_commands_on_an_unfinished_run_say_how_to_finish_it(trained, project, command):
    shutil.copytree(trained, trained.with_name(f"{trained.name}-finished"))
    interrupted(trained)
    arguments = [part.format(run=trained.name) for part in command]
    refused(project, *arguments, contains=(trained.name, "has not finished training", "make resume"))


# Round two: CSVs in other encodings


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16"])
def test_csvs_with_a_byte_order_mark_are_read(digits, project, encoding):
    table = train_rows(project)
    table.to_csv(raw(project) / "train.csv", index=False, encoding=encoding)
    succeeds(project, "folds", "digits")
    folds = pd.read_csv(project / "data" / "interim" / "digits" / "folds.csv", dtype=str)
    assert folds["id"].tolist() == table["id"].tolist()


def test_a_csv_in_another_encoding_is_refused_with_the_fix(digits, project):
    table = train_rows(project)
    table.loc[3, "label"] = "caf\u00e9"
    table.to_csv(raw(project) / "train.csv", index=False, encoding="latin-1")
    refused(project, "folds", "digits", contains=("train.csv", "not UTF-8", "byte 0xe9", "save it as UTF-8"))


def test_kit_new_reads_utf16_csvs_and_refuses_other_encodings(digits, project):
    target = raw(project, "digits-copy")
    shutil.copytree(raw(project), target)
    (target / "solution.csv").unlink()  # another labelled CSV would make the label table ambiguous
    for name in ("train.csv", "sample_submission.csv"):
        frame = pd.read_csv(target / name, dtype=str)
        frame.to_csv(target / name, index=False, encoding="utf-16")
    result = invoke("new", "digits-copy", "--from-raw")
    assert result.exit_code == 0, result.output
    written = (project / "competitions" / "digits-copy" / "competition.toml").read_text()
    assert 'labels_csv = "train.csv"' in written

    other = raw(project, "digits-latin")
    shutil.copytree(target, other)
    sample = pd.read_csv(other / "sample_submission.csv", dtype=str, encoding="utf-16")
    sample.loc[0, "id"] = "caf\u00e9"
    sample.to_csv(other / "sample_submission.csv", index=False, encoding="latin-1")
    refused(project, "new", "digits-latin", "--from-raw", contains=("sample_submission.csv", "not UTF-8"))


# Round two: file-system oddities


def test_a_named_pipe_among_the_training_images_is_skipped_not_waited_on(digits, project):
    name = f"{train_rows(project)['id'][1]}.png"
    (raw(project) / "train" / name).unlink()
    os.mkfifo(raw(project) / "train" / name)
    result = succeeds(project, "train", "digits", *sets(QUICK))
    assert "skipping 1 unreadable training images" in result.output and "not a regular file" in result.output


@pytest.mark.parametrize("blocked", ["data/interim", "runs"])
def test_a_file_where_a_folder_belongs(digits, project, blocked):
    (project / blocked).parent.mkdir(parents=True, exist_ok=True)
    (project / blocked).write_text("not a folder")
    refused(project, "train", "digits", *sets(QUICK), contains=(blocked, "is in the way", "move it away"))


def test_a_damaged_run_record_is_one_line(trained, project):
    (trained / "config.json").write_text('{"name": "digits", "path": ')
    refused(project, "predict", "digits", contains=("config.json", "damaged", "not valid JSON"))


# Round two: images too large to open


@pytest.fixture
def bomb(module_cache) -> Path:
    """A 20000x10000 PNG of 24 KB: over Pillow's decompression-bomb limit (made once per module)."""
    from PIL import Image

    path = module_cache / "bomb.png"
    if not path.exists():
        Image.new("1", (20000, 10000)).save(path)
    return path


def test_an_oversized_training_image_is_skipped_with_the_reason(digits, project, bomb):
    name = f"{train_rows(project)['id'][4]}.png"
    shutil.copyfile(bomb, raw(project) / "train" / name)
    result = succeeds(project, "train", "digits", *sets(QUICK))
    assert "skipping 1 unreadable training images" in result.output and "too large" in result.output


def test_an_oversized_image_reaching_the_report(trained, project, bomb):
    for identifier in train_rows(project)["id"]:  # every one: the size chart and the image grids meet it
        shutil.copyfile(bomb, raw(project) / "train" / f"{identifier}.png")
    result = succeeds(project, "report", "digits")
    report = trained / "report.html"
    assert result.output.splitlines()[-1] == f"report {report}"  # written, and said where
    page = report.read_text()
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    assert "Raw image sizes" in page  # the size chart was drawn without the photos that cannot be decoded


# Round two: a value the run saved, fixed in competition.toml since


def test_predict_says_which_file_a_stale_value_came_from_and_how_to_apply_the_fix(trained, project):
    toml = project / "competitions" / "digits" / "competition.toml"
    text = toml.read_text()
    assert "\n[submission]\n" in text
    toml.write_text(text.replace("\n[submission]\n", '\n[submission]\nid_column = "image"\n'))
    sample = pd.read_csv(raw(project) / "sample_submission.csv", dtype=str)
    write_rows(raw(project) / "sample_submission.csv", sample.rename(columns={"id": "image"}))
    line = refused(
        project,
        "predict",
        "digits",
        contains=(
            "no column 'id'",
            f"{trained / 'config.json'}: submission.id_column = 'id' (competition.toml now: 'image')",
            "retrain (`make train COMP=digits`)",
            f"kit predict digits {trained.name} --set submission.id_column=image",
        ),
    )
    assert line.count("Error") == 1
    result = succeeds(project, "predict", "digits", trained.name, "--set", "submission.id_column=image")
    written = pd.read_csv(
        project / "submissions" / json.loads((trained / "submission.json").read_text())["file"]
    )
    assert list(written.columns)[0] == "image" and "submission" in result.output
