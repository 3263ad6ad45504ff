"""Issue 32, class 6: a run folder's records of a wrong shape are one line, not a traceback or a silent
refit. Valid JSON with a key missing, a list instead of an object, a record of another layout, and a
calibration temperature that is negative, zero or text: each is refused naming the file and the fix.

Each fails on the code before kit/run.py: there a calibration.json of any shape was either indexed
(KeyError, TypeError tracebacks) or silently fitted again and overwritten by `kit predict`.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from kit.run import LAYOUT, Calibration, FoldResult, Run, RunError

GOOD_CALIBRATION = {
    "layout": LAYOUT,
    "temperatures": {"0": 1.5},
    "epsilon": 0.001,
    "before": 0.3,
    "after": 0.2,
}
GOOD_RESULT = {"layout": LAYOUT, "score": 0.9, "history": [], "valid_rows": [0, 2, 5], "pseudo_labels": {}}


def one_line(error: pytest.ExceptionInfo, *phrases: str) -> str:
    message = error.value.message
    assert "\n" not in message, message
    for phrase in phrases:
        assert phrase in message, message
    return message


@pytest.mark.parametrize(
    ("record", "phrases"),
    [
        ([1.5], ("expected a JSON object, found list",)),
        ("1.5", ("expected a JSON object, found str",)),
        ({**GOOD_CALIBRATION, "temperatures": None}, ("temperatures must be an object",)),
        ({k: v for k, v in GOOD_CALIBRATION.items() if k != "temperatures"}, ("no 'temperatures'",)),
        ({k: v for k, v in GOOD_CALIBRATION.items() if k != "epsilon"}, ("no 'epsilon'",)),
        ({**GOOD_CALIBRATION, "temperatures": {"0": -1.0}}, ("temperatures.0 = -1.0 must be > 0",)),
        ({**GOOD_CALIBRATION, "temperatures": {"0": 0}}, ("temperatures.0 = 0 must be > 0",)),
        (
            {**GOOD_CALIBRATION, "temperatures": {"0": "1.2"}},
            ("temperatures.0 = '1.2' is not a finite number",),
        ),
        (
            {**GOOD_CALIBRATION, "temperatures": {"0": True}},
            ("temperatures.0 = True is not a finite number",),
        ),
        ({**GOOD_CALIBRATION, "epsilon": 0.7}, ("epsilon = 0.7 must be in [0, 0.5)",)),
        ({**GOOD_CALIBRATION, "epsilon": "small"}, ("epsilon = 'small' is not a finite number",)),
    ],
    ids=[
        "list",
        "string",
        "temperatures-null",
        "no-temperatures",
        "no-epsilon",
        "negative-temperature",
        "zero-temperature",
        "text-temperature",
        "boolean-temperature",
        "epsilon-too-large",
        "text-epsilon",
    ],
)
def test_a_calibration_of_a_wrong_shape_is_one_line(tmp_path, record, phrases):
    run = Run(tmp_path)
    run.calibration_file.write_text(json.dumps(record))
    with pytest.raises(RunError) as error:
        run.read_calibration()
    one_line(error, str(run.calibration_file), *phrases)


@pytest.mark.parametrize(
    "record",
    [
        # as the kit before typed records wrote it: a run's (no layout) and an ensemble's (one temperature)
        {"temperatures": {"0": 1.2}, "epsilon": 0.001, "before": 0.3, "after": 0.2, "oof_sha256": "ab"},
        {"temperature": 1.2, "epsilon": 0.001, "applied": True},
        {**GOOD_CALIBRATION, "layout": LAYOUT + 1},
        {**GOOD_CALIBRATION, "layout": "2"},
    ],
    ids=["older-run", "older-ensemble", "newer-layout", "layout-as-text"],
)
def test_a_record_of_another_layout_says_which_and_what_to_do(tmp_path, record):
    run = Run(tmp_path)
    run.calibration_file.write_text(json.dumps(record))
    with pytest.raises(RunError) as error:
        run.read_calibration()
    one_line(
        error, str(run.calibration_file), "made by another kit", f"this kit reads layout {LAYOUT}", "retrain"
    )


def test_a_missing_record_names_the_file(tmp_path):
    with pytest.raises(RunError) as error:
        Run(tmp_path).read_calibration()
    one_line(error, "calibration.json is missing", "retrain")
    with pytest.raises(RunError) as error:
        Run(tmp_path).fold(0).read_result()
    one_line(error, "result.json is missing")


@pytest.mark.parametrize(
    ("record", "phrase"),
    [
        ([GOOD_RESULT], "expected a JSON object, found list"),
        ({k: v for k, v in GOOD_RESULT.items() if k != "valid_rows"}, "no 'valid_rows'"),
        ({k: v for k, v in GOOD_RESULT.items() if k != "history"}, "no 'history'"),
        ({**GOOD_RESULT, "valid_rows": ["0", "2"]}, "valid_rows must be a list of row numbers"),
        ({**GOOD_RESULT, "valid_rows": [-1]}, "valid_rows must be a list of row numbers"),
        ({**GOOD_RESULT, "history": {}}, "history must be a list of epochs"),
        ({**GOOD_RESULT, "score": "0.9"}, "score = '0.9' is not a number"),
        ({k: v for k, v in GOOD_RESULT.items() if k != "layout"}, "made by another kit"),
    ],
    ids=[
        "list",
        "no-rows",
        "no-history",
        "text-rows",
        "negative-row",
        "history-object",
        "text-score",
        "older",
    ],
)
def test_a_fold_result_of_a_wrong_shape_is_one_line(tmp_path, record, phrase):
    fold = Run(tmp_path).fold(0)
    fold.folder.mkdir()
    fold.result_file.write_text(json.dumps(record))
    with pytest.raises(RunError) as error:
        fold.read_result()
    one_line(error, str(fold.result_file), phrase)


def test_records_read_back_as_written(tmp_path):
    """The good shapes round-trip: what the kit writes, it reads (a diverged fold's NaN score included)."""
    run = Run(tmp_path)
    calibration = Calibration({"0": 1.5, "1": 0.8}, 0.001, 0.3, 0.2)
    run.write_calibration(calibration)
    assert run.read_calibration() == calibration
    assert json.loads(run.calibration_file.read_text())["layout"] == LAYOUT
    identity = Calibration({}, None)
    run.write_calibration(identity)
    assert run.read_calibration() == identity
    fold = run.fold(1)
    fold.folder.mkdir()
    result = FoldResult(math.nan, [{"epoch": 1}], [3, 4], {"pseudo-labels-stage-1.json": 7})
    fold.write_result(result)
    read = fold.read_result()
    assert math.isnan(read.score) and read.valid_rows == [3, 4] and read.pseudo_labels == result.pseudo_labels
    assert np.array_equal(read.rows, np.array([3, 4]))


@pytest.mark.slow
@pytest.mark.parametrize("temperature", [-1.0, 0, "1.2"], ids=["negative", "zero", "text"])
def test_kit_predict_refuses_a_damaged_calibration_in_one_line(digits, project, temperature):
    """`kit predict` reads the calibration the step after training wrote; it never fits it again (the kit
    before refitted and overwrote a calibration.json it did not like, silently)."""
    from click.testing import CliRunner

    from kit import cli, commands

    run_dir = commands.train(digits("competition.metric=log_loss"), "0")
    path = Run(run_dir).calibration_file
    record = json.loads(path.read_text())
    record["temperatures"] = dict.fromkeys(record["temperatures"] or {"0": 1.0}, temperature)
    path.write_text(json.dumps(record))
    result = CliRunner().invoke(cli.main, ["predict", "digits", run_dir.name])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and str(path) in lines[0] and "temperatures.0" in lines[0], result.output
    assert json.loads(path.read_text()) == record  # not refitted over
