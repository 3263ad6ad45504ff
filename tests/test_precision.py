"""train.precision and predict.precision: "auto" is a pure function of the GPU's compute capability (bf16 on
8.0 and later, fp16 on 7.x such as Kaggle's T4, fp32 below and on a CPU); fp16 training scales the loss with
torch.amp.GradScaler, whose step runs on a CPU here, an overflowing one skipped."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kit import device, models
from kit.train import stage

CLASSES = 10


@pytest.mark.parametrize(
    ("capability", "expected"),
    [
        ((9, 0), "bf16"),  # H100
        ((8, 6), "bf16"),  # RTX 30xx, A10
        ((8, 0), "bf16"),  # A100: the first with bf16 tensor cores
        ((7, 5), "fp16"),  # T4 (Kaggle's default GPU), RTX 20xx
        ((7, 0), "fp16"),  # V100
        ((6, 0), "fp32"),  # P100 (retired on Kaggle): no tensor cores
        ((3, 7), "fp32"),  # K80
        (None, "fp32"),  # a CPU: autocast there is emulated, not faster
    ],
)
def test_auto_precision_follows_the_compute_capability(capability, expected):
    assert device.choose_precision("auto", capability) == expected


@pytest.mark.parametrize("setting", ["bf16", "fp16", "fp32"])
def test_a_stated_precision_is_kept_on_any_device(setting):
    for capability in [(9, 0), (7, 5), (6, 0), None]:
        assert device.choose_precision(setting, capability) == setting


def test_compile_is_skipped_where_triton_cannot_run_and_says_why():
    assert device.compile_skipped((7, 5)) == "" and device.compile_skipped((9, 0)) == ""
    assert "6.0" in device.compile_skipped((6, 0)) and "7.0" in device.compile_skipped((6, 0))
    assert "CPU" in device.compile_skipped(None)


def test_cpu_resolves_auto_to_fp32_and_the_gpu_paths_twin_to_bf16(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.delenv(device.GPU_PATHS_ON_CPU, raising=False)
    assert device.resolve_precision("auto", cpu) == "fp32" and device.grad_scaler("fp32", cpu) is None
    monkeypatch.setenv(device.GPU_PATHS_ON_CPU, "1")
    assert device.resolve_precision("auto", cpu) == "bf16" and device.grad_scaler("bf16", cpu) is None
    with device.autocast(cpu, "fp16"):
        assert torch.ones(2, 2).mm(torch.ones(2, 2)).dtype == torch.float16
    with device.autocast(cpu, "fp32"):
        assert torch.ones(2, 2).mm(torch.ones(2, 2)).dtype == torch.float32


def test_fp16_step_with_a_grad_scaler_trains_and_skips_an_overflow(monkeypatch):
    """fp16 autocast and GradScaler on a CPU (torch runs both there): a finite step moves the weights; a
    step whose gradients overflow is skipped (weights unchanged) and the scale is halved."""
    monkeypatch.delenv(device.GPU_PATHS_ON_CPU, raising=False)
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    model = models.create_model("test_efficientnet", CLASSES, pretrained=False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = device.grad_scaler("fp16", cpu)
    assert isinstance(scaler, torch.amp.GradScaler) and scaler.is_enabled()
    images = torch.randn(4, 3, 32, 32)
    targets = torch.randint(0, CLASSES, (4,))

    def step(factor: float) -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        with device.autocast(cpu, "fp16"):
            logits = model(images)
            loss = torch.nn.functional.cross_entropy(logits, targets) * factor
        assert logits.dtype == torch.float16
        device.backward_and_step(loss, optimizer, scaler)
        return loss

    before = [parameter.detach().clone() for parameter in model.parameters()]
    scale = scaler.get_scale()
    step(float("inf"))  # every gradient inf or NaN: the scaler skips the step
    assert all(torch.equal(old, new) for old, new in zip(before, model.parameters(), strict=True))
    assert scaler.get_scale() == scale * 0.5
    # A fresh model's fp16 activation gradients overflow at the first scales too: each such step is skipped
    # and halves the scale, until one fits and the weights move.
    for _ in range(12):
        scale = scaler.get_scale()
        assert torch.isfinite(step(1.0))
        if scaler.get_scale() == scale:  # not lowered: the step was taken
            break
        assert all(torch.equal(old, new) for old, new in zip(before, model.parameters(), strict=True))
    assert any(not torch.equal(old, new) for old, new in zip(before, model.parameters(), strict=True))
    assert all(torch.isfinite(parameter).all() for parameter in model.parameters())


def test_the_training_step_scales_an_fp16_loss_with_the_folds_scaler(monkeypatch):
    """kit.train.stage.train_step at train.precision = fp16 on a CPU: the fold's LossScaling trick hands its
    scaler to the stage; a step whose scaled gradients overflow (a scale of 2**60, as a resume point could
    hold) leaves the weights as they were and halves the scale; the scale carries into the next stage."""
    from types import SimpleNamespace

    from test_gpu_paths import tiny_config, uint8_batch

    from kit import tasks
    from kit.config_build import config_from_dict
    from kit.train import tricks

    def tiny_stage() -> tuple[torch.nn.Module, stage.PreparedStage]:
        torch.manual_seed(0)
        model = device.place(models.create_model("test_efficientnet", CLASSES, pretrained=False))
        rates = [1e-3] * 3
        optimizer = stage.make_optimizer(tiny_config(), models.parameter_groups(model, rates))
        prepared = stage.PreparedStage(
            model, optimizer, rates, None, None, None, 32, 8, True, torch.Generator(), task=tasks.SINGLE_LABEL
        )
        models.train_mode(model)
        return model, prepared

    monkeypatch.delenv(device.GPU_PATHS_ON_CPU, raising=False)
    cpu = torch.device("cpu")
    config = config_from_dict({"train": {"precision": "fp16"}}, Path("precision/competition.toml"))
    fold_tricks = tricks.for_fold(config, None)
    (scaling,) = [trick for trick in fold_tricks if isinstance(trick, tricks.LossScaling)]
    default = config_from_dict({}, Path("precision/competition.toml"))
    assert not any(isinstance(trick, tricks.LossScaling) for trick in tricks.for_fold(default, None))
    scaling.load_state_dict({**scaling.state_dict(), "scale": 2.0**60})

    model, prepared = tiny_stage()
    prepared.precision = device.resolve_precision(config.train.precision, cpu)
    assert prepared.precision == "fp16" and prepared.scaler is None
    scaling.on_stage_start(SimpleNamespace(prepared=prepared))
    assert prepared.scaler is scaling.scaler
    images, labels = uint8_batch()
    before = [parameter.detach().clone() for parameter in model.parameters()]
    stage.train_step(prepared, model, images, labels)
    assert all(torch.equal(old, new) for old, new in zip(before, model.parameters(), strict=True))
    assert scaling.scaler.get_scale() == 2.0**59
    for _ in range(60):  # the scale comes down to one that fits, then a step is taken
        scale = scaling.scaler.get_scale()
        assert torch.isfinite(stage.train_step(prepared, model, images, labels))
        if scaling.scaler.get_scale() == scale:
            break
    assert any(not torch.equal(old, new) for old, new in zip(before, model.parameters(), strict=True))
    _, next_stage = tiny_stage()
    scaling.on_stage_start(SimpleNamespace(prepared=next_stage))
    assert next_stage.scaler.get_scale() == scaling.scaler.get_scale() < 2.0**59  # carried, not reset


def test_the_run_records_its_precision(monkeypatch):
    monkeypatch.delenv(device.GPU_PATHS_ON_CPU, raising=False)
    assert device.precision_record("auto", "fp16", True) == {
        "train": "fp32",
        "predict": "fp16",
        "capability": None,
        "compile": "skipped: " + device.compile_skipped(None),
    }
    monkeypatch.setenv(device.GPU_PATHS_ON_CPU, "1")
    assert device.precision_record("auto", "auto", False)["train"] == "bf16"


def test_prediction_runs_at_predict_precision(monkeypatch):
    """predict.precision reaches the forward passes: bf16 rounds the probabilities, fp32 and a CPU's auto
    do not."""
    import numpy as np

    from kit import tasks
    from kit.train.views import view_probabilities

    monkeypatch.delenv(device.GPU_PATHS_ON_CPU, raising=False)
    torch.manual_seed(0)
    model = models.create_model("test_efficientnet", CLASSES, pretrained=False).eval()
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    task = tasks.SINGLE_LABEL

    def predicted(precision: str) -> np.ndarray:
        return view_probabilities(model, images, 4, task=task, precision=precision)

    exact, rounded = predicted("fp32"), predicted("bf16")
    np.testing.assert_array_equal(predicted("auto"), exact)
    assert not np.array_equal(rounded, exact) and np.allclose(rounded, exact, atol=0.05)
