"""The training recipe on a tiny model.

Freezing, per-group LRs, precompute, snapshots, TTA, resizing, LR finder.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import TINY, fold_state

from kit import commands, device
from kit.data.images import image_cache
from kit.data.labels import load_labels
from kit.errors import ConfigError
from kit.paths import interim_dir
from kit.run_folder import new_run_dir
from kit.tasks import SINGLE_LABEL
from kit.train import loop, lr_find, stage, views
from kit.train.features import body_features_cached


def snapshot(model):
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


FROZEN = ["stages.0.freeze_to=-1"]


@pytest.mark.slow
def test_frozen_groups_keep_their_weights_bit_for_bit(digits, tmp_path):
    config = digits(*FROZEN, "stages.0.cycle_len=0.3")
    state = fold_state(config, tmp_path)
    before = snapshot(state.model)
    head = {name for name, _ in state.model.get_classifier().named_parameters()}
    loop.run_stage(config, 0, state, progress=False)
    after = snapshot(state.model)
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed == {f"classifier.{name}" for name in head}  # BatchNorm running stats included: unchanged


def test_per_group_learning_rates_reach_the_optimizer(digits, tmp_path):
    config = digits("stages.0.lr=[0.001, 0.003, 0.009]")
    data = stage.prepare_stage(config, 0, fold_state(config, tmp_path))
    assert [group["lr"] for group in data.optimizer.param_groups] == [0.001, 0.003, 0.009]
    config = digits("stages.0.lr=[0.001, 0.003, 0.009]", "stages.0.freeze_to=1")
    data = stage.prepare_stage(config, 0, fold_state(config, tmp_path))
    assert [group["lr"] for group in data.optimizer.param_groups] == [0.003, 0.009]


def test_precomputed_features_give_the_full_models_logits(digits, tmp_path):
    config = digits(*FROZEN)
    model = fold_state(config, tmp_path).model.eval()
    images, _ = image_cache(load_labels(config).paths[:40], 32, interim_dir(config.name), "train-subset")
    features = body_features_cached(model, images, "test", interim_dir(config.name), 16, 32)
    with torch.no_grad():
        from_features = model.get_classifier()(torch.from_numpy(features))
        full = model(
            device.to_input(
                torch.from_numpy(np.array(images)),
                model.pretrained_cfg["mean"],
                model.pretrained_cfg["std"],
                torch.device("cpu"),
            )
        )
    torch.testing.assert_close(from_features, full, rtol=1e-4, atol=1e-5)
    # A second call reads the cache; other weights make a new key.
    assert len(list(interim_dir(config.name).glob("features-test-*.npy"))) == 1
    with torch.no_grad():
        model.conv_stem.weight.mul_(2)
    body_features_cached(model, images, "test", interim_dir(config.name), 16, 32)
    assert len(list(interim_dir(config.name).glob("features-test-*.npy"))) == 2


@pytest.mark.slow
def test_snapshot_count_equals_number_of_cycles(digits, tmp_path):
    config = digits(
        "stages.0.n_cycles=3", "stages.0.cycle_len=0.25", "stages.0.cycle_mult=2", "stages.0.snapshots=true"
    )
    state = fold_state(config, tmp_path)
    loop.run_stage(config, 0, state, progress=False)
    assert sorted(p.name for p in tmp_path.glob("snapshot-*.pt")) == [
        "snapshot-1.pt",
        "snapshot-2.pt",
        "snapshot-3.pt",
    ]
    assert views.prediction_weights(digits("predict.snapshot_ensemble=2", *SNAPSHOT_STAGE), tmp_path) == [
        tmp_path / "snapshot-2.pt",
        tmp_path / "snapshot-3.pt",
    ]


SNAPSHOT_STAGE = ["stages.0.n_cycles=3", "stages.0.snapshots=true"]


@pytest.mark.slow
def test_a_last_stage_without_snapshots_predicts_with_its_own_final_weights(digits, project):
    # Issue 13, defect 3: with predict.weights = "snapshots", a last stage that takes none (the lesson's
    # step to a larger size) was silently skipped: the earlier stage's snapshots predicted at the new size.
    config = digits(
        "stages=[{n_cycles=2, cycle_len=0.5, snapshots=true}, {image_size=40, cycle_len=0.5}]",
        "predict.snapshot_ensemble=2",
    )
    run_dir = commands.train(config, "0")
    fold_dir = run_dir / "fold-0"
    assert sorted(p.name for p in fold_dir.glob("snapshot-*.pt")) == ["snapshot-1.pt", "snapshot-2.pt"]
    assert views.prediction_weights(config, fold_dir) == [fold_dir / "last.pt"]
    assert (fold_dir / "oof-last.npy").exists() and not list(fold_dir.glob("oof-snapshot-*.npy"))
    rule = json.loads((run_dir / "metrics.json").read_text())["weights_rule"]
    assert "last.pt" in rule and "takes no snapshots" in rule  # the run's record says which
    # Snapshots of the last stage only: an earlier stage's never join them.
    config = digits(
        "stages=[{n_cycles=2, cycle_len=0.5, snapshots=true}, {n_cycles=1, cycle_len=0.5, snapshots=true}]",
        "predict.snapshot_ensemble=3",
    )
    (fold_dir / "snapshot-3.pt").write_bytes(b"")  # the last stage's one snapshot
    assert views.prediction_weights(config, fold_dir) == [fold_dir / "snapshot-3.pt"]


def test_tta_with_zero_views_equals_the_plain_prediction(digits, tmp_path):
    config = digits()
    model = fold_state(config, tmp_path).model.eval()
    images, _ = image_cache(load_labels(config).paths[:20], 32, interim_dir(config.name), "train-subset")
    mean, std = model.pretrained_cfg["mean"], model.pretrained_cfg["std"]
    plain = views.view_probabilities(model, images, 8, "none", tta=0, task=SINGLE_LABEL).mean(0)
    with torch.no_grad():
        direct = model(
            device.to_input(torch.from_numpy(np.array(images)), mean, std, torch.device("cpu"))
        ).softmax(1)
    np.testing.assert_allclose(plain, direct.double().numpy(), rtol=1e-5, atol=1e-6)
    augmented = views.view_probabilities(model, images, 8, "none", tta=3, task=SINGLE_LABEL).mean(0)
    assert augmented.shape == plain.shape and not np.allclose(augmented, plain)
    np.testing.assert_allclose(augmented.sum(1), 1, rtol=1e-6)


@pytest.mark.slow
def test_progressive_resizing_changes_the_input_size(digits, tmp_path, monkeypatch):
    config = digits("stages.0.cycle_len=0.2")
    bigger = digits("stages.0.cycle_len=0.2", "stages.0.image_size=48")
    state = fold_state(config, tmp_path)
    seen = []
    hook = state.model.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].shape[-1]))
    loop.run_stage(config, 0, state, progress=False)
    loop.run_stage(bigger, 0, state, progress=False)
    hook.remove()
    assert 32 in seen and 48 in seen and seen.index(48) > seen.index(32)
    assert bigger.stage_batch_size(bigger.stages[0]) < config.stage_batch_size(config.stages[0])


@pytest.mark.slow
def test_lr_finder_restores_weights_and_suggests_a_rate_that_trains(digits, project):
    config = digits(*FROZEN, "stages.0.precompute=true", "stages.0.augment=false")
    run_dir = new_run_dir(config, config.train.model)
    state = fold_state(config, run_dir)
    data = stage.prepare_stage(config, 0, state)
    before = snapshot(state.model)
    optimizer_before = json.dumps(data.optimizer.state_dict()["param_groups"], default=str)
    rates, losses = lr_find.range_test(data, state.model, steps=60)
    assert all(torch.equal(before[k], v) for k, v in state.model.state_dict().items())
    assert json.dumps(data.optimizer.state_dict()["param_groups"], default=str) == optimizer_before
    assert len(rates) == len(losses) >= 10

    result = lr_find.lr_find(config, load_labels(config), 0, run_dir)
    assert min(result["rates"]) <= result["suggestion"] <= max(result["rates"])
    assert (run_dir / "lr-find-stage0.json").exists()

    # Training the head at the suggested rate lowers the loss.
    config = digits(
        *FROZEN,
        "stages.0.precompute=true",
        "stages.0.augment=false",
        f"stages.0.lr={result['suggestion']}",
        "stages.0.cycle_len=3",
    )
    state = fold_state(config, run_dir)
    loop.run_stage(config, 0, state, progress=False)
    assert state.history[-1]["train_loss"] < state.history[0]["train_loss"]
    assert state.history[-1]["valid_loss"] < np.log(10)  # better than a uniform guess


@pytest.mark.parametrize(
    "override, message",
    [
        ("stages.0.precompute=true", "precompute needs a frozen body"),
        ("stages.0.cycle_mult=0.5", "cycle_mult = 0.5 must be >= 1"),
        ("stages.0.lr=[0.1, 0.2]", "lr has 2 values"),
        ("augment.preset='sideways'", "augment.preset"),
        ("augment.transforms=[{name='NoSuchTransform'}]", "unknown albumentations transform"),
        ("predict.image_scale=0", "'predict.image_scale' = 0.0 must be between 0.25 and 4"),
    ],
)
def test_bad_recipes_are_refused_with_one_clear_error(digits, override, message):
    with pytest.raises(ConfigError) as error:
        commands.load_for_training("digits", (*TINY, override))
    assert message in error.value.message and "\n" not in error.value.message


@pytest.mark.slow
def test_every_snapshot_and_view_is_kept_for_later_ensembles(digits, project):
    from kit import commands

    config = digits(
        "stages=[{n_cycles=2, cycle_len=0.5, snapshots=true}]",
        "predict.tta=2",
        "predict.snapshot_ensemble=2",
        "predict.select=false",  # every weight file and view predicts the test set too
    )
    run_dir = commands.train(config, "0")
    commands.predict(config, run_dir.name)
    fold_dir = run_dir / "fold-0"
    oof = np.load(run_dir / "oof.npy")
    valid = ~np.isnan(oof[:, 0])
    kept = [np.load(fold_dir / f"oof-snapshot-{k}.npy") for k in (1, 2)]
    assert all(k.shape == (3, valid.sum(), 10) for k in kept)  # plain view + 2 TTA views
    # The run's OOF is exactly the mean over snapshots and views of what was kept.
    np.testing.assert_allclose(np.mean([k.mean(0) for k in kept], axis=0), oof[valid], atol=1e-5)
    test_kept = [np.load(fold_dir / f"test-snapshot-{k}.npy") for k in (1, 2)]
    np.testing.assert_allclose(
        np.mean([k.mean(0) for k in test_kept], axis=0),
        np.load(run_dir / "test-probabilities.npy"),
        atol=1e-5,
    )


@pytest.mark.slow
def test_prediction_views_are_resized_by_predict_image_scale(digits, project):
    # FixRes: a model trained on random crops predicts at a larger size than it trained at. OOF and test
    # views both take the last stage's size times predict.image_scale, so what selection and calibration
    # fit is what the test side gets.
    from kit import models
    from kit.data.labels import load_test

    config = digits(
        "stages.0.cycle_len=0.5", "predict.weights='last'", "predict.tta=0", "predict.image_scale=1.25"
    )
    assert config.stage_image_size(config.stages[-1]) == 32 and config.predict_image_size() == 40
    assert views.prediction_cache_side(config) == 40  # larger than the 37 px training cache
    run_dir = commands.train(config, "0")
    commands.predict(config, run_dir.name)
    fold_dir = run_dir / "fold-0"
    assert json.loads((run_dir / "submission.json").read_text())["image_size"] == 40
    labels = load_labels(config)
    model = models.create_model(config.train.model, len(labels.classes), pretrained=False)
    models.load_weights(model, fold_dir / "last.pt", models.weights_meta(config, labels.classes))
    valid_rows = json.loads((fold_dir / "result.json").read_text())["valid_rows"]
    for label, paths, kept in [
        ("train", [labels.paths[row] for row in valid_rows], fold_dir / "oof-last.npy"),
        ("test", load_test(config).paths, fold_dir / "test-last.npy"),
    ]:
        images, _ = image_cache(paths, 40, interim_dir(config.name), f"{label}-check")
        at_40 = views.view_probabilities(model, images, 64, task=SINGLE_LABEL, image_size=40)
        at_32 = views.view_probabilities(model, images, 64, task=SINGLE_LABEL, image_size=32)
        np.testing.assert_allclose(np.load(kept), at_40, atol=1e-5)
        assert not np.allclose(at_40, at_32, atol=1e-3)
