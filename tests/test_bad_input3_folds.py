"""Bad input, round three, class 2 (issue 32): a folds.csv made or edited by hand is the user's.

The kit never replaces it: it is checked and used as it is (another fold count is refused naming
train.folds; rows of fold -1 train in every fold and never validate), or refused in one line naming the
file, the row or id and the fix, and the file is left byte for byte as the user wrote it.
"""

from __future__ import annotations

import re

import pandas as pd
import pytest
from conftest import copy_download, invoke


@pytest.fixture
def folds_path(digits_download, project):
    copy_download(digits_download, project)
    return project / "data" / "interim" / "digits" / "folds.csv"


def train_ids(project) -> list[str]:
    return pd.read_csv(project / "data" / "raw" / "digits" / "train.csv", dtype=str)["id"].tolist()


def hand_made(path, ids: list[str], folds: list, columns=("id", "fold")) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"id": ids, "fold": folds})[list(columns)].to_csv(path, index=False)
    return path.read_bytes()


def one_error_line(result) -> str:
    assert result.exit_code == 1 and "Traceback" not in result.output, (result.output, result.exc_info)
    said = [line for line in re.split(r"[\r\n]", result.stderr) if line.strip()]
    assert len(said) == 1 and said[0].startswith("Error:"), result.stderr
    return said[0]


def used_folds(project) -> list[int]:
    from kit.competitions import load_competition
    from kit.data.folds import load_folds
    from kit.data.labels import load_labels

    config = load_competition("digits", ["train.folds=3"])
    return load_folds(config, load_labels(config)).tolist()


def test_another_fold_count_made_by_hand_is_refused_not_replaced(folds_path, project):
    ids = train_ids(project)
    written = hand_made(folds_path, ids, [index % 3 for index in range(len(ids))])
    line = one_error_line(invoke("folds", "digits"))  # train.folds = 5 by default
    assert str(folds_path) in line and "set train.folds = 3" in line and "move the file away" in line
    assert folds_path.read_bytes() == written


def test_another_fold_count_made_by_hand_is_used_with_that_count(folds_path, project):
    ids = train_ids(project)
    mine = [(index * 7) % 3 for index in range(len(ids))]
    written = hand_made(folds_path, ids, mine)
    result = invoke("folds", "digits", "--set", "train.folds=3")
    assert result.exit_code == 0, result.output
    assert "made or edited by hand" in result.stderr
    assert folds_path.read_bytes() == written
    assert used_folds(project) == mine


def test_rows_held_out_as_fold_minus_one_are_kept(folds_path, project):
    ids = train_ids(project)
    mine = [-1 if index % 10 == 0 else index % 3 for index in range(len(ids))]
    written = hand_made(folds_path, ids, mine)
    result = invoke("folds", "digits", "--set", "train.folds=3")
    assert result.exit_code == 0, result.output
    held = sum(fold == -1 for fold in mine)
    assert f"{held} rows of fold -1 train in every fold and never validate" in result.stderr
    assert f"{held} rows of fold -1" in result.stdout  # the balance line says it too
    assert folds_path.read_bytes() == written
    assert used_folds(project) == mine


def test_a_hand_made_split_in_another_row_order_is_read_by_id(folds_path, project):
    ids = train_ids(project)
    mine = {identifier: index % 3 for index, identifier in enumerate(ids)}
    shuffled = sorted(ids, key=lambda identifier: (mine[identifier], identifier[::-1]))
    written = hand_made(folds_path, shuffled, [mine[identifier] for identifier in shuffled])
    assert used_folds(project) == [mine[identifier] for identifier in ids]
    assert folds_path.read_bytes() == written


@pytest.mark.parametrize(
    ("spoil", "phrases"),
    [
        ("word", ("row 6", "'two'", "not a fold number", "-1")),
        ("below", ("row 6", "'-2'", "not a fold number")),
        ("missing", ("training ids missing", "list every training id once")),
        ("unknown", ("1 unknown", "list every training id once")),
        ("twice", ("is listed twice",)),
        ("gap", ("validates folds [0, 2]", "renumber them")),
        ("header", ("no 'id' and 'fold' columns", "fix the header")),
    ],
)
def test_a_broken_hand_made_split_is_one_line_and_left_alone(folds_path, project, spoil, phrases):
    ids = train_ids(project)
    folds: list = [index % 3 for index in range(len(ids))]
    columns = ("id", "fold")
    if spoil == "word":
        folds[4] = "two"
    elif spoil == "below":
        folds[4] = -2
    elif spoil == "missing":
        ids, folds = ids[1:], folds[1:]
    elif spoil == "unknown":
        ids = [*ids[:-1], "not-a-digit"]
    elif spoil == "twice":
        ids = [*ids[:-1], ids[0]]
    elif spoil == "gap":
        folds = [0 if fold == 1 else fold for fold in folds]
    else:
        columns = ("fold",)
    written = hand_made(folds_path, ids, folds, columns)
    line = one_error_line(invoke("folds", "digits", "--set", "train.folds=3"))
    assert str(folds_path) in line, line
    for phrase in phrases:
        assert phrase in line, line
    assert folds_path.read_bytes() == written


def test_an_edited_kit_split_is_not_replaced_when_the_fold_count_changes(folds_path, project):
    assert invoke("folds", "digits").exit_code == 0  # the kit's 5 folds, recorded in folds.json
    saved = pd.read_csv(folds_path, dtype=str)
    saved.loc[0, "fold"] = str((int(saved.loc[0, "fold"]) + 1) % 5)  # the user moves one row
    saved.to_csv(folds_path, index=False)
    edited = folds_path.read_bytes()
    line = one_error_line(invoke("folds", "digits", "--set", "train.folds=3"))
    assert "set train.folds = 5" in line
    assert folds_path.read_bytes() == edited
