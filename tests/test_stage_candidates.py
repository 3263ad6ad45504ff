"""Every stage's final weights are selection candidates, each predicted at the size its stage trained at:
an earlier stage's weights on views at the last stage's size would see them out of scale (digits: a 48 px
head on 64 px views scored accuracy 0.27 where it validated at 0.78)."""

import json
from pathlib import Path

import numpy as np
import pytest

from kit.config_build import config_from_dict
from kit.train import views
from kit.train.views import candidate_weights, weight_image_size, weight_stage


def stages_config(joins: bool = False, scale: float = 1.0):
    stages = [
        {"name": "head", "cycle_len": 1, "image_size": 48, "joins_prediction": joins},
        {"name": "unfrozen", "n_cycles": 2, "cycle_len": 1, "image_size": 64, "snapshots": True},
        {"name": "larger", "n_cycles": 3, "cycle_len": 1, "image_size": 80, "snapshots": True},
    ]
    return config_from_dict(
        {"train": {"image_size": 48}, "predict": {"image_scale": scale}, "stages": stages},
        Path("x/competition.toml"),
    )


def fold_with_every_file(tmp_path: Path) -> Path:
    for name in ("stage-0.pt", "stage-1.pt", "last.pt"):
        (tmp_path / name).write_bytes(b"")
    return tmp_path


def test_every_stage_is_a_candidate_whatever_its_size(tmp_path):
    names = [path.name for path in candidate_weights(stages_config(), fold_with_every_file(tmp_path))]
    assert "stage-0.pt" in names and "stage-1.pt" in names and names[-1] == "last.pt"


def test_a_weight_file_predicts_at_the_size_its_stage_trained_at():
    config = stages_config()
    assert [weight_stage(config, stem) for stem in ("stage-0", "stage-1", "last", "best")] == [0, 1, 2, 2]
    # snapshots are numbered over the fold: 1-2 are stage 1's, 3-5 stage 2's
    assert [weight_stage(config, f"snapshot-{number}") for number in (1, 2, 3, 5)] == [1, 1, 2, 2]
    assert weight_stage(config, "ema-snapshot-2") == 1
    assert [weight_image_size(config, stem) for stem in ("stage-0", "snapshot-2", "last")] == [48, 64, 80]
    # predict.image_scale scales every stage's size alike (FixRes)
    scaled = stages_config(scale=1.25)
    assert [weight_image_size(scaled, stem) for stem in ("stage-0", "stage-1", "last")] == [60, 80, 100]
    assert weight_image_size(scaled, "last") == scaled.predict_image_size()


def test_the_prediction_cache_holds_the_largest_size_a_file_predicts_at():
    config = config_from_dict(
        {"train": {"image_size": 64}, "stages": [{"image_size": 96}, {"image_size": 64}]},
        Path("x/competition.toml"),
    )
    assert views.prediction_cache_side(config) >= 96


@pytest.mark.slow
def test_an_earlier_stage_at_another_size_predicts_at_its_own_size(digits, project):
    # Stage 0 trains 3 epochs at 24 px and learns (1 epoch learnt too little: stage 1's first cycle could
    # still beat it); stage 1, at 32 px and a learning rate 1000x too high, wrecks the weights: the stop
    # makes stage 0's final weights predict, OOF and test, at 24 px.
    from kit import commands, models
    from kit.data.images import image_cache
    from kit.data.labels import load_labels, load_test
    from kit.paths import interim_dir
    from kit.tasks import SINGLE_LABEL

    config = digits(
        "stages=[{cycle_len=3, image_size=24}, {n_cycles=2, cycle_len=1, lr=3.0, image_size=32}]",
        "train.stop_when_worse=true",
        "predict.select=false",
        "predict.tta=0",
    )
    run_dir = commands.train(config, "0")
    commands.predict(config, run_dir.name)
    record = json.loads((run_dir / "submission.json").read_text())
    assert record["weights"] == ["fold-0/stage-0.pt"] and record["image_sizes"] == {"stage-0": 24}
    fold_dir = run_dir / "fold-0"
    labels = load_labels(config)
    model = models.create_model(config.train.model, len(labels.classes), pretrained=False)
    models.load_weights(model, fold_dir / "stage-0.pt", models.weights_meta(config, labels.classes))
    valid_rows = json.loads((fold_dir / "result.json").read_text())["valid_rows"]
    side = views.prediction_cache_side(config)
    for label, paths, kept in [
        ("train", [labels.paths[row] for row in valid_rows], fold_dir / "oof-stage-0.npy"),
        ("test", load_test(config).paths, fold_dir / "test-stage-0.npy"),
    ]:
        images, _ = image_cache(paths, side, interim_dir(config.name), f"{label}-check")
        at_24 = views.view_probabilities(model, images, 64, task=SINGLE_LABEL, image_size=24)
        at_32 = views.view_probabilities(model, images, 64, task=SINGLE_LABEL, image_size=32)
        np.testing.assert_allclose(np.load(kept), at_24, atol=1e-5)
        assert not np.allclose(at_24, at_32, atol=1e-3)
