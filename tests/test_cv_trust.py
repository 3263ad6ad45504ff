"""CV you can trust (issue 26): `kit submit` takes the best run, not the newest; CV figures are scored on
rows that chose nothing (cross-fitting); an ensemble worse than its best member is never written silently."""

from __future__ import annotations

import json

import pytest

from kit.competitions import load_competition
from kit.run_folder import best_run


def fake_run(project, name: str, metric: str, cv: float, folds=(0,)) -> None:
    folder = project / "runs" / "digits" / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "metrics.json").write_text(
        json.dumps({"metric": metric, "cv": cv, "folds_trained": list(folds)})
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
