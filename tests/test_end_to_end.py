"""The whole path on the embedded digits competition, through the CLI as a user runs it."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from conftest import TINY, invoke


@pytest.mark.slow
def test_download_train_predict_submit(project):
    sets = [item for value in TINY for item in ("--set", value)]
    assert invoke("download", "digits").exit_code == 0
    raw = project / "data" / "raw" / "digits"
    assert len(list((raw / "train").glob("*.png"))) + len(list((raw / "test").glob("*.png"))) == 1797
    # A second download is a no-op and leaves the files as they were.
    assert "already downloaded" in invoke("download", "digits").output

    result = invoke("train", "digits", *sets)
    assert result.exit_code == 0, result.output
    (run_dir,) = (project / "runs" / "digits").iterdir()
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["train"]["model"] == "test_efficientnet"
    assert json.loads((run_dir / "provenance.json").read_text())["commit"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0.0 <= metrics["cv"] <= 1.0 and metrics["folds_trained"] == [0]
    assert (run_dir / "fold-0" / "last.pt").exists() and (run_dir / "fold-0" / "best.pt").exists()

    result = invoke("predict", "digits")
    assert result.exit_code == 0, result.output
    (csv,) = (project / "submissions").glob("digits-*-accuracy*.csv")
    frame = pd.read_csv(csv, dtype=str)
    sample = pd.read_csv(raw / "sample_submission.csv", dtype=str)
    assert list(frame.columns) == ["id", "label"] and list(frame["id"]) == list(sample["id"])
    assert set(frame["label"]) <= {str(d) for d in range(10)}

    result = invoke("submit", "digits", "-m", "hello")
    assert result.exit_code == 0, result.output
    assert "local leaderboard: accuracy" in result.output
    ledger = pd.read_csv(project / "submissions" / "ledger.csv", dtype=str)
    assert ledger.loc[0, "file"] == csv.name and ledger.loc[0, "run"] == run_dir.name
    assert "hello" in ledger.loc[0, "message"] and float(ledger.loc[0, "public_score"]) > 0.1
    # Nothing was written outside the temporary project.
    assert not (project / "competitions" / "digits" / "solution.csv").exists()


def test_unknown_competition_lists_the_known_ones(project):
    result = invoke("train", "no-such-thing")
    assert result.exit_code == 1
    assert "unknown competition 'no-such-thing'" in result.output and "digits" in result.output
    assert "Traceback" not in result.output


def test_training_before_download_says_how_to_fix(project):
    result = invoke("train", "digits")
    assert result.exit_code == 1 and "make download COMP=digits" in result.output
