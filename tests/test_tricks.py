"""Recipe tricks on timm's implementations: Mixup/CutMix, label smoothing, EMA, layer-wise LR decay,
pseudo-labels and any timm backbone (offline: one clear error)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import timm
import torch
from conftest import TINY, fold_state
from torch.nn import functional

from kit import commands, models
from kit.data.labels import load_labels, load_test
from kit.device import to_input
from kit.errors import ConfigError
from kit.predict import calibrate
from kit.report import runs_table
from kit.run_folder import new_run_dir
from kit.tasks import SINGLE_LABEL
from kit.train import loop, pseudo_labels, stage, tricks, views

MIXING = ["stages.0.mixup=0.4", "stages.0.cutmix=1.0"]


def first_batch(prepared):
    inputs, targets = next(iter(prepared.train_batches))
    mean, std = prepared.module.pretrained_cfg["mean"], prepared.module.pretrained_cfg["std"]
    return to_input(inputs, mean, std, torch.device("cpu"), prepared.image_size), targets  # as train_step


def test_mixed_batches_have_soft_targets_that_sum_to_one(digits, tmp_path):
    config = digits(*MIXING, "train.label_smoothing=0.1")
    prepared = stage.prepare_stage(config, 0, fold_state(config, tmp_path))
    inputs, targets = first_batch(prepared)
    np.random.seed(0)
    mixed, soft = stage.mix(prepared, inputs.clone(), targets)
    assert mixed.shape == inputs.shape and soft.shape == (len(targets), 10)
    torch.testing.assert_close(soft.sum(1), torch.ones(len(targets)))
    assert not torch.equal(mixed, inputs)  # images were blended or boxes pasted
    assert soft.min() >= 0.1 / 10 - 1e-7  # label smoothing spreads 0.1 over the 10 classes
    assert (soft.max(1).values < 0.95).any()  # two classes share some rows: mixed, not only smoothed
    # The loop's switch (mix_off_epochs): unmixed images, the same smoothed one-hot targets.
    prepared.mixup.mixup_enabled = False
    plain, soft = stage.mix(prepared, inputs.clone(), targets)
    assert torch.equal(plain, inputs)
    torch.testing.assert_close(soft.argmax(1), targets)
    torch.testing.assert_close(soft.max(1).values, torch.full((len(targets),), 0.9 + 0.01))
    # An odd batch (a shard's last) cannot be mixed in pairs: it passes unmixed, targets still soft.
    prepared.mixup.mixup_enabled = True
    odd, soft = stage.mix(prepared, inputs[:5].clone(), targets[:5])
    assert torch.equal(odd, inputs[:5]) and soft.shape == (5, 10)


def test_smoothed_targets_give_torchs_label_smoothing_loss(digits, tmp_path):
    config = digits("train.label_smoothing=0.1")
    prepared = stage.prepare_stage(config, 0, fold_state(config, tmp_path))
    assert prepared.mixup is None and prepared.task.name == "single_label"
    _, targets = first_batch(prepared)  # soft rows: 0.9 + 0.01 on the class, 0.01 on each other class
    assert targets.shape[1] == 10 and targets.dtype == torch.float32
    torch.testing.assert_close(targets.sum(1), torch.ones(len(targets)))
    torch.testing.assert_close(targets.max(1).values, torch.full((len(targets),), 0.91))
    torch.testing.assert_close(targets.min(1).values, torch.full((len(targets),), 0.01))
    logits, classes = torch.randn(len(targets), 10), targets.argmax(1)
    torch.testing.assert_close(
        prepared.task.loss(logits, targets), functional.cross_entropy(logits, classes, label_smoothing=0.1)
    )
    assert prepared.task.loss(logits, targets) != prepared.task.loss(logits, classes)  # indices: unsmoothed
    plain = stage.prepare_stage(digits(), 0, fold_state(digits(), tmp_path / "plain"))
    assert not first_batch(plain)[1].is_floating_point()  # off by default: class indices, as before


@pytest.mark.parametrize(
    "override, message",
    [
        ("stages=[{freeze_to=-1, precompute=true, augment=false, mixup=0.2}]", "precompute stage"),
        ("stages=[{cutmix=1.0, freeze_to=-1, precompute=true, augment=false}]", "precompute stage"),
        ("stages=[{mix_prob=1.5, mixup=0.2}]", "mix_prob in [0, 1]"),
        ("train.label_smoothing=1.0", "'train.label_smoothing' = 1.0 must be in [0, 1)"),
        ("predict.weights='ema'", "needs train.ema_decay"),
        ("stages=[{}, {pseudo_label={threshold=0.9}, mixup=0.2}]", "put mixup/cutmix in another stage"),
        ("stages=[{pseudo_label={threshold=0.9}}]", "needs an earlier stage"),
        (
            "stages=[{}, {pseudo_label={threshold=0.9, wieght=0.5}}]",
            "unknown key 'stages[1].pseudo_label.wieght'",
        ),
        ("stages=[{lr=[1e-3, 2e-3, 3e-3]}]", "give one lr"),
        ("stages=[{mixup=nan}]", "mixup, cutmix, mix_off_epochs must be >= 0"),
        ("train.label_smoothing=0.1", "train.label_smoothing spreads"),
        ("stages=[{cutmix=1.0}]", "(single_label only)"),
        ("stages=[{}, {pseudo_label={threshold=0.9}}]", "(single_label only)"),
    ],
)
def test_impossible_trick_settings_are_one_clear_error(digits, override, message):
    tags = ["competition.task='multi_label'", "competition.metric='f2_samples'", "submission.format='label'"]
    extra = {
        "give one lr": ["train.layer_decay=0.7"],
        "train.label_smoothing spreads": tags,
        "(single_label only)": tags,
    }.get(message, [])
    with pytest.raises(ConfigError) as error:
        commands.load_for_training("digits", (*TINY, *extra, override))
    assert message in error.value.message and "\n" not in error.value.message


@pytest.mark.slow
def test_mixing_stops_for_the_last_epochs(digits, tmp_path, monkeypatch):
    config = digits(*MIXING, "stages.0.cycle_len=2", "stages.0.mix_off_epochs=1")
    state = fold_state(config, tmp_path)
    seen = []

    def recording_step(prepared, model, inputs, targets):
        seen.append(prepared.mixup.mixup_enabled)
        return stage.train_step(prepared, model, inputs, targets)

    monkeypatch.setattr(loop, "train_step", recording_step)
    loop.run_stage(config, 0, state, tricks=tricks.for_fold(config, state.model), progress=False)
    steps_per_epoch = len(seen) // 2
    assert seen[:steps_per_epoch] == [True] * steps_per_epoch
    assert seen[steps_per_epoch:] == [False] * (len(seen) - steps_per_epoch)


def test_ema_follows_timm_with_a_warmed_up_decay():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    average = models.weights_average(model, decay=0.9)
    before = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    average.update(model, step=1)  # the first update copies the weights
    torch.testing.assert_close(average.module.weight, before + 1)
    with torch.no_grad():
        model.weight.add_(1.0)
    average.update(model, step=2)  # decay 1 - 2^(-2/3) = 0.37 while warming up, at most 0.9
    decay = 1 - 2 ** (-2 / 3)
    torch.testing.assert_close(average.module.weight, decay * (before + 1) + (1 - decay) * (before + 2))
    for step in range(3, 2000):
        average.update(model, step=step)
    assert average.get_decay(1999) == 0.9


@pytest.mark.slow
def test_ema_weights_are_validated_saved_and_predict(digits, project):
    config = digits(
        "train.ema_decay=0.99",
        "predict.weights='ema'",
        "stages=[{n_cycles=2, cycle_len=0.5, snapshots=true}]",
        "predict.snapshot_ensemble=1",
    )
    run_dir = commands.train(config, "0")
    fold_dir = run_dir / "fold-0"
    history = json.loads((run_dir / "metrics.json").read_text())["folds"]["0"]["history"]
    assert all("ema_valid_loss" in record and "ema_accuracy" in record for record in history)
    assert {p.name for p in fold_dir.glob("ema*.pt")} == {"ema.pt", "ema-snapshot-1.pt", "ema-snapshot-2.pt"}
    assert views.prediction_weights(config, fold_dir) == [fold_dir / "ema-snapshot-2.pt"]
    assert (fold_dir / "oof-ema-snapshot-2.npy").exists()  # OOF came from the average
    averaged = torch.load(fold_dir / "ema-snapshot-2.pt", weights_only=True)["state_dict"]
    last = torch.load(fold_dir / "snapshot-2.pt", weights_only=True)["state_dict"]
    assert any(not torch.equal(averaged[k], last[k]) for k in last if last[k].is_floating_point())


def test_ema_predicts_by_the_last_stage_rule(digits, tmp_path):
    # predict.weights = "ema" keeps issue 13's rule: snapshots of the last stage only, else its final average.
    for name in ("snapshot-1.pt", "snapshot-2.pt", "ema-snapshot-1.pt", "ema-snapshot-2.pt", "ema.pt"):
        (tmp_path / name).write_bytes(b"")
    ema = ["train.ema_decay=0.99", "predict.weights='ema'", "predict.snapshot_ensemble=3"]
    plain_last = digits(*ema, "stages=[{n_cycles=2, cycle_len=0.5, snapshots=true}, {cycle_len=0.5}]")
    assert views.prediction_weights(plain_last, tmp_path) == [tmp_path / "ema.pt"]
    rule = views.weights_rule(plain_last)
    assert "ema.pt" in rule and "no snapshots" in rule
    snapshots_last = digits(*ema, "stages=[{cycle_len=0.5}, {n_cycles=1, cycle_len=0.5, snapshots=true}]")
    assert views.prediction_weights(snapshots_last, tmp_path) == [tmp_path / "ema-snapshot-2.pt"]
    assert "moving average's last 1 snapshots" in views.weights_rule(snapshots_last)


FAMILIES = ["test_efficientnet", "test_resnet", "test_convnext"]


@pytest.mark.parametrize("name", FAMILIES)
def test_layer_wise_decay_rates_fall_layer_by_layer(name):
    model = timm.create_model(name, num_classes=3)
    rates = models.layer_rates(model, 1e-3, 0.7)
    numbers = models.layer_numbers(model)
    assert len(rates) > 3  # finer than the three groups
    assert rates[-1] == 1e-3 and rates[0] == pytest.approx(1e-3 * 0.7 ** (len(rates) - 1))
    assert all(low < high for low, high in zip(rates, rates[1:], strict=False))
    groups = models.layer_decay_groups(model, 1e-3, 0.7, weight_decay=0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    grouped = [names[id(p)] for group in groups for p in group["params"]]
    assert sorted(grouped) == sorted(names.values())  # every parameter once
    for group in groups:
        for parameter in group["params"]:  # timm's group rate is the rate recorded for that layer
            assert group["lr"] == pytest.approx(rates[numbers[names[id(parameter)]]])
            assert group["weight_decay"] == (0.0 if parameter.ndim <= 1 else 0.01)
    head = {id(p) for p in model.get_classifier().parameters()}
    assert all(
        group["lr"] == pytest.approx(1e-3) for group in groups if any(id(p) in head for p in group["params"])
    )
    models.freeze_to(model, -1)  # a frozen body: only the head's groups remain
    frozen = models.layer_decay_groups(model, 1e-3, 0.7, weight_decay=0.01)
    assert {id(p) for group in frozen for p in group["params"]} == head


@pytest.mark.slow
def test_layer_wise_rates_are_recorded_and_runs_show_the_tricks(digits, project):
    plain = commands.train(digits(), "0")
    tricks = commands.train(
        digits("train.layer_decay=0.7", "train.label_smoothing=0.1", "stages.0.mixup=0.2"), "0"
    )
    history = json.loads((tricks / "metrics.json").read_text())["folds"]["0"]["history"]
    model = timm.create_model("test_efficientnet", num_classes=10)
    assert history[0]["base_rates"] == pytest.approx(models.layer_rates(model, 3e-3, 0.7))
    table = runs_table.runs_table(digits())
    row = table.set_index("run").loc[tricks.name]
    assert row["train.layer_decay"] == 0.7 and row["train.label_smoothing"] == 0.1
    assert row["stages.0.mixup"] == 0.2 and table.set_index("run").loc[plain.name]["stages.0.mixup"] == 0.0
    report = commands.report(digits(), tricks.name).read_text()
    assert "Recipe options" in report and "train.layer_decay" in report and "stages.0.mixup" in report


def test_runs_table_shows_pseudo_label_settings_that_differ(digits, project):
    new_run_dir(digits("stages=[{}, {}]"), "test_efficientnet")
    new_run_dir(digits("stages=[{}, {pseudo_label={threshold=0.9, weight=0.3}}]"), "test_efficientnet")
    table = runs_table.runs_table(digits())
    assert list(table["stages.1.pseudo_label.threshold"].fillna("")) in (["", 0.9], [None, 0.9])
    assert "stages.1.pseudo_label.weight" in table and "train.lr" not in table


@pytest.mark.slow
def test_fold_pseudo_labels_come_from_that_folds_own_model(digits, project):
    config = digits(
        "train.folds=2",
        "predict.tta=0",  # the labels are made as test predictions are: here, the plain view
        "stages=[{snapshots=true}, {pseudo_label={threshold=0.2, weight=0.5}, cycle_len=0.3}]",
    )
    run_dir = commands.train(config, "all")
    test = load_test(config)
    images, _ = pseudo_labels.cached_test_images(config, 32)  # as the labelling model saw them
    model = models.create_model("test_efficientnet", 10, pretrained=False)
    meta = models.weights_meta(config, load_labels(config).classes)
    predicted = {}
    for fold in (0, 1):  # the model that labelled: the fold's weights at the end of stage 0 (its snapshot)
        models.load_weights(model, run_dir / f"fold-{fold}" / "snapshot-1.pt", meta)
        per_view = views.view_probabilities(model, images, 128, task=SINGLE_LABEL, image_size=32)
        predicted[fold] = per_view.mean(0)
    for fold in (0, 1):
        record = json.loads((run_dir / f"fold-{fold}" / "pseudo-labels-stage-1.json").read_text())
        assert record["fold"] == fold and record["weight"] == 0.5 and 0 < len(record["ids"]) <= len(test.ids)
        own = calibrate.apply_temperature(predicted[fold], record["temperature"])
        chosen = np.flatnonzero(own.max(1) >= 0.2)
        assert record["ids"] == [test.ids[row] for row in chosen]
        assert record["labels"] == [str(own[row].argmax()) for row in chosen]
        np.testing.assert_allclose(record["probabilities"], own[chosen].max(1), atol=1e-5)
        other = calibrate.apply_temperature(predicted[1 - fold], record["temperature"])
        assert not np.allclose(record["probabilities"], other[chosen].max(1), atol=1e-3)  # tells folds apart
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert all(
        summary["folds"][str(fold)]["pseudo_labels"]
        == {
            "pseudo-labels-stage-1.json": len(
                json.loads((run_dir / f"fold-{fold}" / "pseudo-labels-stage-1.json").read_text())["ids"]
            )
        }
        for fold in (0, 1)
    )


def test_offline_backbone_is_one_line_naming_the_model_and_the_cache(tmp_path):
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    code = "from kit import models; models.create_model('convnext_atto.d2_in1k', 2, True)"
    result = subprocess.run(
        [sys.executable, "-c", code], env=environment, capture_output=True, text=True, timeout=120
    )
    message = result.stderr.strip().splitlines()[-1]
    assert result.returncode != 0
    assert "convnext_atto.d2_in1k" in message and "HF_HUB_OFFLINE=1" in message
    assert str(tmp_path / "hf" / "hub") in message
