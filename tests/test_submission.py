"""Submissions: built in each format, checked against the sample by a pure validator, never invalid."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kit import ledger as ledger_file
from kit.competitions import load_competition
from kit.errors import KitError
from kit.predict import submission
from kit.tasks import SINGLE_LABEL

CLASSES = ["akita", "beagle", "pug"]  # sorted, as load_labels gives them
IDS = ["t1", "t2", "t3"]


def make_config(project: Path, name: str = "breeds", section: str = "", metric: str = "log_loss"):
    folder = project / "competitions" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "competition.toml").write_text(
        f'[competition]\nmetric = "{metric}"\n\n[submission]\n{section}\n'
    )
    return load_competition(name)


@pytest.fixture
def probabilities_config(project):
    return make_config(project)


@pytest.fixture
def binary_config(project):
    return make_config(project, "cats", 'format = "binary"\nlabel_column = "is_dog"\npositive_class = "dog"')


@pytest.fixture
def label_config(project):
    return make_config(project, "digits-like", 'format = "label"\nlabel_column = "label"', metric="accuracy")


def probability_sample() -> pd.DataFrame:
    """Kaggle's order of the class columns need not be ours."""
    return pd.DataFrame({"id": IDS, "pug": "0.33", "akita": "0.33", "beagle": "0.33"})


def valid_probability_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {"id": IDS, "pug": [0.2, 0.0, 0.5], "akita": [0.7, 1.0, 0.25], "beagle": [0.1, 0.0, 0.25]}
    )


# problems(): a pure function of frame and sample ------------------------------------------------------------


def test_valid_frames_have_no_problems(probabilities_config, binary_config, label_config):
    frame, sample = valid_probability_frame(), probability_sample()
    frame_before, sample_before = frame.copy(), sample.copy()
    assert submission.problems(probabilities_config, frame, sample, CLASSES, task=SINGLE_LABEL) == []
    pd.testing.assert_frame_equal(frame, frame_before)  # nothing modified in place
    pd.testing.assert_frame_equal(sample, sample_before)
    shuffled = frame.iloc[[2, 0, 1]].reset_index(drop=True)  # row order is free; the id set is what counts
    assert submission.problems(probabilities_config, shuffled, sample, CLASSES, task=SINGLE_LABEL) == []

    binary_sample = pd.DataFrame({"id": IDS, "is_dog": "0.5"})
    binary = pd.DataFrame({"id": IDS, "is_dog": [0.0, 0.3, 1.0]})  # one probability: no sum to check
    assert submission.problems(binary_config, binary, binary_sample, ["cat", "dog"], task=SINGLE_LABEL) == []

    label_sample = pd.DataFrame({"id": IDS, "label": "0"})
    labels = pd.DataFrame({"id": IDS, "label": ["3", "0", "9"]})
    assert (
        submission.problems(
            label_config, labels, label_sample, [str(d) for d in range(10)], task=SINGLE_LABEL
        )
        == []
    )


def with_value(frame: pd.DataFrame, row: int, column: str, value) -> pd.DataFrame:
    frame = frame.copy()
    frame[column] = frame[column].astype(object)
    frame.loc[row, column] = value
    return frame


PROBABILITY_PROBLEMS = {
    "wrong column order": (lambda f: f[["id", "akita", "pug", "beagle"]], "order must match"),
    "extra column": (lambda f: f.assign(corgi=0.0), "extra: ['corgi']"),
    "missing column": (lambda f: f.drop(columns=["beagle"]), "missing: ['beagle']"),
    "missing id": (lambda f: f.iloc[:2], "1 ids of sample_submission.csv are missing, e.g. 't3'"),
    "duplicate id": (lambda f: with_value(f, 2, "id", "t1"), "id 't1' appears more than once"),
    "extra id": (
        lambda f: pd.concat([f, f.iloc[:1].assign(id="t9")]),
        "not in sample_submission.csv, e.g. 't9'",
    ),
    "NaN probability": (lambda f: with_value(f, 1, "pug", np.nan), "row 3 has a missing, NaN or infinite"),
    "text probability": (lambda f: with_value(f, 0, "pug", "high"), "row 2 has a missing, NaN or infinite"),
    "infinite probability": (
        lambda f: with_value(f, 0, "pug", np.inf),
        "row 2 has a missing, NaN or infinite",
    ),
    "probability above 1": (lambda f: with_value(f, 0, "pug", 1.2), "[0, 1]"),
    "negative probability": (lambda f: with_value(f, 0, "pug", -0.1), "[0, 1]"),
    "row not summing to 1": (
        lambda f: with_value(f, 2, "beagle", 0.5),
        "row 4: probabilities sum to 1.2500, not 1",
    ),
}


@pytest.mark.parametrize("case", PROBABILITY_PROBLEMS)
def test_each_problem_is_reported(probabilities_config, case):
    change, expected = PROBABILITY_PROBLEMS[case]
    found = submission.problems(
        probabilities_config,
        change(valid_probability_frame()),
        probability_sample(),
        CLASSES,
        task=SINGLE_LABEL,
    )
    assert found and any(expected in problem for problem in found), found


def test_an_empty_frame_is_reported_not_a_crash(probabilities_config):
    empty = valid_probability_frame().iloc[:0]
    found = submission.problems(probabilities_config, empty, probability_sample(), CLASSES, task=SINGLE_LABEL)
    assert any("3 ids of sample_submission.csv are missing" in problem for problem in found)


def test_binary_probability_out_of_range(binary_config):
    sample = pd.DataFrame({"id": IDS, "is_dog": "0.5"})
    frame = pd.DataFrame({"id": IDS, "is_dog": [0.0, 1.5, 1.0]})
    assert any(
        "[0, 1]" in problem
        for problem in submission.problems(binary_config, frame, sample, ["cat", "dog"], task=SINGLE_LABEL)
    )


def test_unknown_label(label_config):
    sample = pd.DataFrame({"id": IDS, "label": "0"})
    frame = pd.DataFrame({"id": IDS, "label": ["3", "ten", "9"]})
    found = submission.problems(label_config, frame, sample, [str(d) for d in range(10)], task=SINGLE_LABEL)
    assert any("unknown labels, e.g. 'ten'" in problem for problem in found), found


def test_check_is_one_line_naming_the_source(probabilities_config):
    frame = with_value(valid_probability_frame(), 1, "pug", np.nan).iloc[:2]
    with pytest.raises(KitError) as raised:
        submission.check(
            probabilities_config, frame, probability_sample(), "my.csv", CLASSES, task=SINGLE_LABEL
        )
    message = raised.value.message
    assert (
        message.startswith("my.csv: invalid submission:") and "(+1 more)" in message and "\n" not in message
    )


# build() ----------------------------------------------------------------------------------------------------


def test_build_probabilities_in_the_sample_column_order(probabilities_config):
    probabilities = np.array([[0.7, 0.1, 0.2], [1.0, 0.0, 0.0], [0.25, 0.25, 0.5]])  # columns: CLASSES
    frame = submission.build(
        probabilities_config, IDS, probabilities, CLASSES, probability_sample(), task=SINGLE_LABEL
    )
    assert list(frame.columns) == ["id", "pug", "akita", "beagle"]
    assert list(frame["id"]) == IDS
    assert frame["pug"].tolist() == [0.2, 0.0, 0.5] and frame["akita"].tolist() == [0.7, 1.0, 0.25]
    assert (
        submission.problems(probabilities_config, frame, probability_sample(), CLASSES, task=SINGLE_LABEL)
        == []
    )


def test_build_refuses_a_sample_class_the_labels_lack(probabilities_config):
    with pytest.raises(KitError, match="pug"):
        submission.build(
            probabilities_config,
            IDS,
            np.full((3, 2), 0.5),
            ["akita", "beagle"],
            probability_sample(),
            task=SINGLE_LABEL,
        )


def test_build_refuses_a_sample_lacking_a_class_column_naming_it(probabilities_config):
    """Not 'probabilities sum to 0.89' later: the column the sample lacks, and where to fix it."""
    sample = probability_sample().drop(columns=["beagle"])
    with pytest.raises(KitError) as raised:
        submission.build(
            probabilities_config, IDS, np.full((3, 3), 1 / 3), CLASSES, sample, task=SINGLE_LABEL
        )
    message = raised.value.message
    assert "sample_submission.csv has no column for the training class(es) 'beagle'" in message
    assert "sum" not in message and "download it again" in message


def test_build_binary_takes_the_positive_class(binary_config):
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]])  # columns: cat, dog
    sample = pd.DataFrame({"id": IDS, "is_dog": "0.5"})
    frame = submission.build(binary_config, IDS, probabilities, ["cat", "dog"], sample, task=SINGLE_LABEL)
    assert list(frame.columns) == ["id", "is_dog"] and frame["is_dog"].tolist() == [0.1, 0.8, 0.5]
    with pytest.raises(KitError, match="positive_class 'dog' is not a class"):
        submission.build(binary_config, IDS, probabilities, ["cat", "wolf"], sample, task=SINGLE_LABEL)


def test_build_label_is_the_most_probable_class(label_config):
    probabilities = np.array([[0.1, 0.2, 0.7], [0.6, 0.3, 0.1], [0.2, 0.5, 0.3]])
    sample = pd.DataFrame({"id": IDS, "label": "x"})
    frame = submission.build(label_config, IDS, probabilities, CLASSES, sample, task=SINGLE_LABEL)
    assert list(frame.columns) == ["id", "label"] and frame["label"].tolist() == ["pug", "akita", "beagle"]


# clip() -----------------------------------------------------------------------------------------------------


def test_clip_only_for_log_loss(project, probabilities_config):
    frame = valid_probability_frame()
    clipped = submission.clip(probabilities_config, frame)
    epsilon = probabilities_config.submission.clip_epsilon
    assert clipped["akita"].tolist() == pytest.approx([0.7, 1 - epsilon, 0.25], abs=1e-12)
    assert clipped["beagle"].tolist()[1] == pytest.approx(epsilon, rel=1e-6)
    assert clipped["id"].tolist() == IDS and frame["akita"].tolist()[1] == 1.0  # the input is untouched

    accuracy = make_config(project, "scored", metric="accuracy")
    pd.testing.assert_frame_equal(submission.clip(accuracy, frame), frame)

    big_epsilon = make_config(project, "eps", "clip_epsilon = 0.01")
    clipped = submission.clip(big_epsilon, frame)
    # Clipped to [0.01, 0.99], then renormalised as Kaggle scores it: each row still sums to one.
    row = clipped.drop(columns="id").iloc[1].to_numpy()
    assert row.sum() == pytest.approx(1) and row.min() == pytest.approx(0.01 / (0.99 + 0.01 * (len(row) - 1)))


# write() and the ledger -------------------------------------------------------------------------------------


def test_an_invalid_submission_is_never_written(project, probabilities_config):
    invalid = with_value(valid_probability_frame(), 0, "pug", 1.5)
    with pytest.raises(KitError, match="invalid submission"):
        submission.write(
            probabilities_config, invalid, probability_sample(), "log_loss", 0.25, CLASSES, task=SINGLE_LABEL
        )
    folder = project / "submissions"
    assert not folder.exists() or not any(folder.iterdir())


def test_a_valid_submission_is_named_by_competition_time_and_score(project, probabilities_config):
    frame = valid_probability_frame()
    path = submission.write(
        probabilities_config, frame, probability_sample(), "log_loss", 0.123456, CLASSES, task=SINGLE_LABEL
    )
    assert path.parent == project / "submissions"
    assert re.fullmatch(r"breeds-\d{8}-\d{6}-log_loss0\.1235\.csv", path.name), path.name
    # No temporary file left behind; beside it only its checksum record (and that record's lock).
    assert {p.name for p in path.parent.iterdir()} == {path.name, "CHECKSUMS", ".CHECKSUMS.lock"}
    written = pd.read_csv(path, dtype={"id": str})
    pd.testing.assert_frame_equal(written, frame)
    # The calibrated CV (what the file holds) first, the uncalibrated one beside it when they differ.
    again = submission.write(
        probabilities_config,
        frame,
        probability_sample(),
        "log_loss",
        0.112,
        CLASSES,
        cv_uncalibrated=0.1447,
        task=SINGLE_LABEL,
    )
    assert re.fullmatch(r"breeds-\d{8}-\d{6}-log_loss0\.1120-uncalibrated0\.1447\.csv", again.name), (
        again.name
    )


def test_read_sample(project, probabilities_config):
    raw = project / "data" / "raw" / "breeds"
    raw.mkdir(parents=True)
    (raw / "sample_submission.csv").write_text("id,pug,akita,beagle\n007,0.3,0.3,0.4\n")
    sample = submission.read_sample(probabilities_config)
    assert list(sample.columns) == ["id", "pug", "akita", "beagle"] and sample["id"].tolist() == ["007"]
    (raw / "sample_submission.csv").unlink()
    with pytest.raises(KitError, match="make download COMP=breeds"):
        submission.read_sample(probabilities_config)


def test_ledger_appends_rows(project):
    first = {
        "time_utc": "2024-01-01T00:00:00",
        "competition": "breeds",
        "file": "a.csv",
        "cv": 0.5,
        "message": "one",
    }
    path = ledger_file.append_ledger(first)
    assert path == project / "submissions" / "ledger.csv"
    ledger_file.append_ledger(
        {"competition": "breeds", "file": "b.csv", "message": "two, with a comma", "bogus": 1}
    )
    ledger = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert list(ledger.columns) == ledger_file.LEDGER_COLUMNS
    assert ledger["file"].tolist() == ["a.csv", "b.csv"] and ledger["cv"].tolist() == ["0.5", ""]
    assert ledger["message"].tolist() == ["one", "two, with a comma"]
    assert sorted(p.name for p in path.parent.iterdir()) == [".ledger.csv.lock", "ledger.csv"]  # no temporary
