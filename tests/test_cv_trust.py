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
