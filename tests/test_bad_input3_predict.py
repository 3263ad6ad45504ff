"""Bad input, round three (issue 32), class 3: `kit predict --set predict.…` once training recorded its
choice of weights and views (metrics.json "prediction"). The README promises that `--set` changes the
settings for that prediction: a setting the choice was made under makes the config's rule predict, one
only training can apply is refused in one line naming it, and submission.json records the rule used.

One tiny digits run is trained for the module (two 0.5-epoch cycles with snapshots, two TTA views, the
choice made on OOF); each case predicts it again.
"""

from __future__ import annotations

import json

import pytest
from conftest import TINY, copy_download, invoke

from kit.errors import KitError

TRAINED = [
    *TINY,
    "stages=[{n_cycles=2, cycle_len=0.5, snapshots=true}]",
    "predict.tta=2",
    "predict.snapshot_ensemble=2",
    "predict.select=true",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits_download):
    """(project root, run id) of one tiny digits run with a recorded choice."""
    from conftest import _copy_competitions

    root = tmp_path_factory.mktemp("predict-set") / "project"
    _copy_competitions(root)
    copy_download(digits_download, root)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KIT_PROJECT_ROOT", str(root))
        settings = [item for setting in TRAINED for item in ("--set", setting)]
        result = invoke("train", "digits", "--fold", "0", *settings)
        assert result.exit_code == 0, result.output
    (run_dir,) = (root / "runs" / "digits").iterdir()
    return root, run_dir


@pytest.fixture
def run_dir(trained, monkeypatch):
    root, folder = trained
    monkeypatch.setenv("KIT_PROJECT_ROOT", str(root))
    return folder


def predict(run_dir, *settings):
    arguments = ["predict", "digits", run_dir.name]
    for setting in settings:
        arguments += ["--set", setting]
    return invoke(*arguments)


def record(run_dir) -> dict:
    return json.loads((run_dir / "submission.json").read_text())


def chosen(run_dir) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())["prediction"]


def test_without_set_the_recorded_choice_predicts_and_is_recorded_as_the_rule(run_dir):
    result = predict(run_dir)
    assert result.exit_code == 0, result.output
    choice, made = chosen(run_dir), record(run_dir)
    assert made["weights"] == [f"fold-0/{name}.pt" for name in choice["weights"]]
    assert made["views"] == choice["view_names"]
    # the rule recorded is the one used: the choice's files and views, not the config's snapshot rule
    assert made["weights_rule"].startswith("chosen on OOF")
    assert all(name in made["weights_rule"] for name in choice["weights"])


def test_set_predict_select_false_predicts_with_the_configs_rule(run_dir):
    result = predict(run_dir, "predict.select=false")
    assert result.exit_code == 0, result.output
    made = record(run_dir)
    assert made["weights"] == ["fold-0/snapshot-1.pt", "fold-0/snapshot-2.pt"]
    assert made["views"] == ["plain", "shift-dr", "shift-ul"]  # every view of predict.tta = 2 (preset none)
    assert "predict.select" in made["weights_rule"] and "snapshots" in made["weights_rule"]


def test_set_predict_tta_changes_the_views(run_dir):
    result = predict(run_dir, "predict.tta=0")
    assert result.exit_code == 0, result.output
    made = record(run_dir)
    assert made["views"] == ["plain"]
    assert made["forward_passes"] == 360 * len(made["weights"])
    assert "predict.tta" in made["weights_rule"]


def test_set_predict_weights_changes_the_weight_files(run_dir):
    result = predict(run_dir, "predict.weights='last'")
    assert result.exit_code == 0, result.output
    made = record(run_dir)
    assert made["weights"] == ["fold-0/last.pt"] and len(made["views"]) == 3
    assert made["weights_rule"].startswith("last.pt") and "predict.weights" in made["weights_rule"]


def test_set_predict_snapshot_ensemble_changes_how_many_snapshots(run_dir):
    result = predict(run_dir, "predict.snapshot_ensemble=1")
    assert result.exit_code == 0, result.output
    made = record(run_dir)
    assert made["weights"] == ["fold-0/snapshot-2.pt"]
    assert "predict.snapshot_ensemble" in made["weights_rule"]


def test_set_predict_min_gain_is_refused_in_one_line_and_nothing_is_lost(run_dir):
    assert predict(run_dir).exit_code == 0
    before = (run_dir / "submission.json").read_text()
    result = predict(run_dir, "predict.min_gain=0.5")
    assert result.exit_code == 1 and "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "predict.min_gain" in errors[0] and "predict.select=false" in errors[0]
    assert "config.json" in errors[0]
    assert (run_dir / "submission.json").read_text() == before


def test_select_at_prediction_needs_a_choice_made_in_training():

    from kit.config import PredictSection
    from kit.predict import prediction_rule

    with pytest.raises(KitError, match="predict.select = false"):
        prediction_rule.applied_rule(
            PredictSection(select=False), PredictSection(select=True), None, "x.json"
        )
    made = {"weights": ["snapshot-2"], "views": [0], "view_names": ["plain"]}
    same = prediction_rule.applied_rule(PredictSection(tta=2), PredictSection(tta=2), made, "x.json")
    assert same.chosen == made and same.describe("last.pt").startswith("chosen on OOF")
    other = prediction_rule.applied_rule(PredictSection(tta=2), PredictSection(tta=1), made, "x.json")
    assert other.chosen is None and other.changed == ("tta",) and "predict.tta" in other.describe("last.pt")
    # predict.mean and predict.image_scale apply to the chosen files and views: the choice stays
    kept = prediction_rule.applied_rule(PredictSection(), PredictSection(mean="logits"), made, "x.json")
    assert kept.chosen == made
