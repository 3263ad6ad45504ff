"""Traps a newcomer falls into (issue 24), each closed: `kit train --resume` with settings or a fold it
would ignore, the base layer depending on the command-line library, the same name meaning two things."""

from __future__ import annotations

import ast
import errno
from pathlib import Path

import pytest
from conftest import invoke

from kit import files

KIT = Path(__file__).resolve().parent.parent / "kit"


def one_error_line(result) -> str:
    assert result.exit_code == 1, (result.output, result.exc_info)
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        (["--set", "train.epochs=2"], "--set train.epochs=2"),
        (["--fold", "all"], "--fold all"),
        (["--fold", "0"], "--fold 0"),  # the default, written out: still not what a resume does
        (["--set", "lr=1e-2", "--fold", "1"], "--set lr=1e-2, --fold 1"),
    ],
)
def test_resume_refuses_settings_and_folds_it_would_not_apply(project, arguments, named):
    """The run's own config.json and folds decide a resumed run; a --set or --fold given with --resume is
    refused in one line naming it, before any run is looked for (it used to be dropped without a word)."""
    line = one_error_line(invoke("train", "digits", "--resume", *arguments))
    assert f"drop {named}" in line and "without --resume" in line


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize(
    "module",
    ["errors", "config", "config_build", "config_checks", "config_overrides", "config_sources"]
    + ["competitions", "paths", "models", "files"],
)
def test_the_base_layer_does_without_click(module):
    """The kit's base raises kit.errors.KitError (plain exceptions); only the CLI knows click."""
    assert "click" not in _imports(KIT / f"{module}.py")


def test_a_config_error_is_one_line_through_the_cli_and_a_plain_exception_below_it(project):
    from kit.competitions import load_competition
    from kit.errors import ConfigError, KitError

    with pytest.raises(ConfigError) as raised:
        load_competition("digits", ["train.lr=-1"])
    assert type(raised.value).__mro__[1:] == (KitError, Exception, BaseException, object)
    line = one_error_line(invoke("config", "digits", "--set", "train.lr=-1"))
    assert line == f"Error: {raised.value.message}"


def test_one_human_size_and_one_disk_full_test_in_the_kit():
    """`human_size` and the full-disk test used to exist twice with different meanings (download's
    disk_full a predicate that missed a full quota, files' an error maker)."""
    definitions = [
        (path.relative_to(KIT).as_posix(), node.name)
        for path in KIT.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef) and node.name in {"human_size", "disk_full", "is_disk_full"}
    ]
    assert sorted(definitions) == [("files.py", "human_size"), ("files.py", "is_disk_full")]
    assert [files.human_size(size) for size in (512, 1.6e9, 2.1e12)] == ["512 bytes", "1.6 GB", "2.1 TB"]
    assert files.is_disk_full(OSError(errno.EDQUOT, "quota"))
    assert files.is_disk_full(OSError(errno.ENOSPC, "full"))
    assert not files.is_disk_full(OSError(errno.EACCES, "Permission denied"))


def test_a_saved_settings_note_follows_the_errors_keys_not_its_words(digits, project):
    """Which settings an error is about is said by the error (KitError.settings), not searched for in its
    text: the sample submission without the configured id column names submission.id_column as data."""
    from kit.competitions import load_competition
    from kit.data.labels import load_test
    from kit.errors import KitError
    from kit.run_folder import new_run_dir, saved_settings_note

    with pytest.raises(KitError) as raised:
        load_test(digits("submission.id_column=image"))
    assert raised.value.settings == ("submission.id_column",) and "no column 'image'" in raised.value.message
    saved = load_competition("digits", ["submission.id_column=image"])
    run_dir = new_run_dir(saved, "test_efficientnet", "cpu")
    config = load_competition("digits")  # competition.toml now: id_column "id"
    assert saved_settings_note(config, run_dir, ()) == ""
    assert saved_settings_note(config, run_dir, ["predict.tta"]) == ""  # the same value in both
    note = saved_settings_note(config, run_dir, ["submission.id_column"])
    assert "submission.id_column = 'image' (competition.toml now: 'id')" in note
    assert f"kit predict digits {run_dir.name} --set submission.id_column=id" in note
