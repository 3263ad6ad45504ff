"""Bad input, round three (issue 32), the configuration's classes, through the real CLI:

- class 8: competition.toml files in other encodings (a UTF-8 byte-order mark is accepted; Latin-1 and
  UTF-16 are one line naming the file and the fix), a hooks.py that does not load (another encoding,
  a syntax error, a missing package), and one broken competition folder, another competition's,
  breaking no command but its own (`kit list` lists it as broken);
- class 9: values the checks used to accept that failed later, blaming the images: an extension without
  its dot, an infinite aspect, image sizes that ask for tens of GB of cache, NaN or infinity in any float
  key, two settings naming one column;
- class 11 (the configuration's part): KIT_PROJECT_ROOT naming a missing folder or a file, an empty
  competition name (it matched the empty Kaggle slug of every competition without one), a 300-character
  competition name that reaches a path.

Every case fails on the code before these checks (a traceback, a wrong result, or a message about the
wrong thing) and asserts the one `Error:` line (file, key, fix) or the right result.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import invoke

DIGITS_TOML = Path("competitions") / "digits" / "competition.toml"


def one_error_line(result, *fragments: str) -> str:
    """The command failed with one `Error:` line, no traceback, holding every fragment."""
    assert result.exit_code == 1, (result.output, result.exc_info)
    assert "Traceback" not in result.output, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def succeeded(result) -> str:
    assert result.exit_code == 0, (result.output, result.exc_info)
    return result.output


def broken_competition(project: Path, content: bytes | None, name: str = "broken") -> Path:
    """Another competition beside the shipped ones: its competition.toml holds `content` (None: the
    file's place is taken by a folder)."""
    path = project / "competitions" / name / "competition.toml"
    path.parent.mkdir(parents=True)
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    return path


# Class 8: encodings, and one broken competition among others.


@pytest.mark.parametrize("line_end", ["\n", "\r\n"])  # Notepad: a byte-order mark, and CRLF line ends
def test_a_utf8_byte_order_mark_is_accepted(project, line_end):
    toml = project / DIGITS_TOML
    toml.write_bytes(b"\xef\xbb\xbf" + toml.read_text().replace("\n", line_end).encode())
    output = succeeded(invoke("config", "digits"))
    assert "competition.metric                      'accuracy'                      toml" in output


def test_a_latin1_file_is_one_line_naming_the_file_the_line_and_utf8(project):
    toml = project / DIGITS_TOML
    text = toml.read_text().replace('description = "', 'description = "Caf\u00e9: ')
    toml.write_bytes(text.encode("latin-1"))
    line = text[: text.index("Caf\u00e9")].count("\n") + 1
    one_error_line(
        invoke("config", "digits"), str(toml), "not UTF-8", f"on line {line}", "save it as UTF-8"
    )


def test_a_utf16_file_is_one_line_naming_the_file_and_utf8(project):
    toml = project / DIGITS_TOML
    toml.write_bytes(toml.read_text().encode("utf-16"))  # with its byte-order mark, as Windows saves it
    one_error_line(invoke("train", "digits"), str(toml), "saved as UTF-16", "save it as UTF-8")


@pytest.mark.parametrize(
    ("content", "said"),
    [
        ('[competition]\ndescription = "Caf\u00e9"\n'.encode("latin-1"), "not UTF-8"),
        ("[competition]\n".encode("utf-16"), "saved as UTF-16"),
        (None, "is a folder, not a file"),  # competition.toml made as a folder
        (b"[competition]\nkaggle = 5\n", "should be str"),  # a slug that is not text
        (b'competition = "x"\n', "[competition] must be a table"),  # a section that is not a table
    ],
)
def test_another_competitions_broken_file_breaks_only_its_own_commands(project, content, said):
    path = broken_competition(project, content)
    # Commands on other competitions work, whether named in full or by a prefix (which reads every slug).
    assert "competition.metric" in succeeded(invoke("config", "digits"))
    assert "digits-tags" in succeeded(invoke("config", "digits-t"))
    # `kit list` lists the broken one as such, and the others as usual.
    listed = succeeded(invoke("list")).splitlines()
    broken = [line for line in listed if line.startswith("broken ")]
    assert len(broken) == 1 and "config error" in broken[0] and said in broken[0], listed
    assert any(line.startswith("digits ") and "not downloaded" in line for line in listed), listed
    # Its own commands say what is wrong with it, in one line.
    one_error_line(invoke("config", "broken"), str(path), said)


@pytest.mark.parametrize(
    ("prepend", "encoding", "said"),
    [
        ('_PLACE = "Caf\u00e9"\n', "latin-1", "not UTF-8 text (byte 0xe9 on line 1"),
        ("", "utf-16", "saved as UTF-16; save it as UTF-8"),
        ("def broken(:\n", "utf-8", "line 1: invalid syntax; fix the Python there"),
        ("import no_such_module_for_kit\n", "utf-8", "'no_such_module_for_kit', which is not installed"),
    ],
)
def test_a_hooks_file_that_does_not_load_is_one_line_naming_it(project, prepend, encoding, said):
    """competitions/<name>/hooks.py is configuration too: another encoding, a syntax error or a missing
    package used to end `kit download` in a traceback from importlib."""
    hooks = project / "competitions" / "digits" / "hooks.py"
    hooks.write_bytes((prepend + hooks.read_text()).encode(encoding))
    one_error_line(invoke("download", "digits"), str(hooks), said)
    assert not (project / "data" / "raw" / "digits").exists()


# Class 9: values the checks accepted that failed later.


@pytest.mark.parametrize(
    ("value", "example"),
    [("png", "'.png'"), ("*.png", "'.png'"), ("''", "'.jpg'"), ("'.'", "'.jpg'"), ("'dir/x.png'", "'.png'")],
)
def test_an_extension_without_its_dot_is_refused_with_the_dotted_form(project, value, example):
    one_error_line(
        invoke("config", "digits", "--set", f"data.extension={value}"),
        str(project / DIGITS_TOML),
        "'data.extension'",
        f"e.g. {example}",
    )


@pytest.mark.parametrize(
    ("setting", "key"),
    [
        ("data.max_aspect=inf", "'data.max_aspect' = inf must be 0 (no cap) or 1 or more"),
        ("predict.min_gain=nan", "'predict.min_gain' = nan must be a finite number"),
        ("train.min_stage_gain=inf", "'train.min_stage_gain' = inf must be a finite number"),
        ("notebook.poll_seconds=inf", "'notebook.poll_seconds' = inf must be a finite number"),
        ("notebook.timeout_minutes=inf", "'notebook.timeout_minutes' = inf must be a finite number"),
        ("notebook.max_package_mb=inf", "'notebook.max_package_mb' = inf must be a finite number"),
    ],
)
def test_nan_and_infinity_are_refused_in_every_float_key(project, setting, key):
    one_error_line(invoke("config", "digits", "--set", setting), str(project / DIGITS_TOML), key)


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        (["train.image_size=20000"], "'train.image_size' = 20000 px must be at most 2048"),
        (["stages=[{image_size=8192}]"], "'stages[0].image_size' = 8192 px must be at most 2048"),
        (
            ["stages=[{image_size=1024}]", "predict.image_scale=4"],
            "'predict.image_scale' = 4.0 predicts at 4096 px",
        ),
    ],
)
def test_an_image_size_that_asks_for_tens_of_gigabytes_is_refused_before_any_image(project, settings, key):
    """20,000 px is 1.2 GB of cache a photo: refused when the settings load, not after a decode runs out
    of memory and reports the photos as unreadable."""
    arguments = [item for setting in settings for item in ("--set", setting)]
    one_error_line(invoke("train", "digits", *arguments), str(project / DIGITS_TOML), key)


@pytest.mark.parametrize(("preset", "most"), [("side_on", 8), ("top_down", 5), ("none", 5)])
def test_more_tta_views_than_the_preset_has_are_refused(project, preset, most):
    """Beyond a preset's distinct views, predict.tta repeated them: the same prediction computed again
    (and again on every test image) for nothing."""
    chosen = ["--set", f"augment.preset={preset}", "--set"]
    refused = invoke("config", "digits", *chosen, f"predict.tta={most + 1}")
    one_error_line(refused, f"'predict.tta' = {most + 1}", f"give 0 to {most}")
    assert succeeded(invoke("config", "digits", *chosen, f"predict.tta={most}"))


def test_the_config_knows_each_presets_views():
    from kit.config import TTA_VIEW_COUNTS
    from kit.data.tta import TTA_VIEWS

    assert TTA_VIEW_COUNTS == {preset: len(views) for preset, views in TTA_VIEWS.items()}


def test_two_settings_naming_one_column_are_refused(project):
    one_error_line(
        invoke("config", "digits", "--set", "data.label_column=id"),
        "'data.id_column' and 'data.label_column' both name the column 'id'",
    )
    one_error_line(  # a regression submits id,value: the two columns cannot be one
        invoke("config", "digits-value", "--set", "submission.label_column=id"),
        "'submission.id_column' and 'submission.label_column' both name 'id'",
    )


# Class 11: the project root, and names that reach a path.


def test_kit_project_root_naming_a_missing_folder_is_one_line(project, monkeypatch):
    missing = project.parent / "no-such-project"
    monkeypatch.setenv("KIT_PROJECT_ROOT", str(missing))
    one_error_line(invoke("list"), f"KIT_PROJECT_ROOT = {missing}: no such folder", "unset it")
    assert not missing.exists()  # not made up either


def test_kit_project_root_naming_a_file_is_one_line(project, monkeypatch):
    a_file = project / "README.txt"
    a_file.write_text("not a project\n")
    monkeypatch.setenv("KIT_PROJECT_ROOT", str(a_file))
    one_error_line(invoke("config", "digits"), f"KIT_PROJECT_ROOT = {a_file}: a file, not a folder")


@pytest.mark.parametrize("name", ["", " "])
def test_an_empty_competition_name_trains_nothing(project, name):
    """"" used to match the empty Kaggle slug of every competition without one (digits trained)."""
    one_error_line(invoke("train", name), "the competition's name is empty", "digits")
    assert not (project / "runs").exists()


def test_a_300_character_competition_name_is_refused_before_it_reaches_a_path(project):
    name = "a" * 300
    one_error_line(invoke("new", name), "use 1 to 100 lowercase letters")
    assert not (project / "competitions" / name[:100]).exists()
