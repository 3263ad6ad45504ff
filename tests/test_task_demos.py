"""The three offline demos of the other competition kinds (multi-label, regression, ordinal), through
the CLI as `make demo COMP=...` runs them: download, train (a tiny model), predict, score locally."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import TINY, invoke

PLOTS = {
    "digits-tags": "tag-thresholds.png",
    "digits-value": "predicted-vs-true.png",
    "digits-grade": "confusion.png",
}
DEMOS = {
    # name: (label column, metric, the values a submitted label may take)
    "digits-tags": (
        "tags",
        "f2_samples",
        lambda v: set(v.split()) <= {"even", "big", "prime", "round", "straight"},
    ),
    "digits-value": ("value", "rmse", lambda v: np.isfinite(float(v))),
    "digits-grade": ("grade", "qwk", lambda v: v in {"0", "1", "2", "3", "4"}),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(DEMOS))
def test_demo_runs_end_to_end(project, name):
    column, metric, valid = DEMOS[name]
    sets = [item for value in [*TINY, "train.folds=3", "predict.tta=1"] for item in ("--set", value)]
    assert invoke("download", name).exit_code == 0
    raw = project / "data" / "raw" / name
    result = invoke("train", name, *sets)
    assert result.exit_code == 0, result.output
    (run_dir,) = (project / "runs" / name).iterdir()
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert (
        summary["metric"] == metric
        and summary["task"]["name"]
        == json.loads((run_dir / "config.json").read_text())["competition"]["task"]
    )
    oof = np.load(run_dir / "oof.npy")
    assert oof.shape[1] == (5 if name == "digits-tags" else 1)  # one output per tag, or one value
    if name == "digits-tags":
        assert len(summary["decisions"]["thresholds"]) == 5
    if name == "digits-grade":
        assert len(summary["decisions"]["cuts"]) == 4 and summary["decisions"]["cuts"] == sorted(
            summary["decisions"]["cuts"]
        )
    # In sample, the decisions fitted on OOF are never below the default ones (0.5, rounding); a
    # regression has none to fit. (The CV itself is cross-fitted: decisions fitted on other rows.)
    if metric == "rmse":
        assert summary["decisions"] == {} and summary["cv_in_sample"] == summary["cv_default_decisions"]
    else:
        assert summary["cv_in_sample"] >= summary["cv_default_decisions"]

    result = invoke("predict", name)
    assert result.exit_code == 0, result.output
    (csv,) = (project / "submissions").glob(f"{name}-*-{metric}*.csv")
    frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
    sample = pd.read_csv(raw / "sample_submission.csv", dtype=str)
    assert list(frame.columns) == ["id", column] and list(frame["id"]) == list(sample["id"])
    assert all(valid(value) for value in frame[column])

    result = invoke("submit", name, "-m", "demo")
    assert result.exit_code == 0, result.output
    assert f"local leaderboard: {metric}" in result.output and "baseline" in result.output
    ledger = pd.read_csv(project / "submissions" / "ledger.csv", dtype=str)
    assert ledger.loc[0, "file"] == csv.name and np.isfinite(float(ledger.loc[0, "public_score"]))

    # The report draws the kind's own plot: thresholds and F2 per tag, predicted against true, grades.
    result = invoke("report", name)
    assert result.exit_code == 0, result.output
    assert (run_dir / PLOTS[name]).exists() and "Traceback" not in result.output


@pytest.mark.parametrize("name", list(DEMOS))
def test_demo_leaderboards_score_the_answer_key_perfectly_and_the_baselines_poorly(project, name):
    from kit.competitions import load_competition
    from kit.hooks import load_hooks

    assert invoke("download", name).exit_code == 0
    raw = project / "data" / "raw" / name
    hooks = load_hooks(load_competition(name))
    answers = pd.read_csv(raw / "solution.csv", dtype=str, keep_default_na=False)
    scores = hooks["score"](answers, raw)
    metric, *baselines = scores
    assert scores[metric] == (0.0 if metric == "rmse" else pytest.approx(1.0))
    # A wrong answer for every image scores worse; the trivial baselines are far from perfect.
    column = DEMOS[name][0]
    wrong = answers.assign(**{column: {"tags": "", "value": "100", "grade": "4"}[column]})
    assert hooks["score"](wrong, raw)[metric] != scores[metric]
    for baseline in baselines:
        assert (scores[baseline] > 2.0) if metric == "rmse" else (scores[baseline] < 0.8)
