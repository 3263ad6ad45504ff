"""train.precision and predict.precision: "auto" is a pure function of the GPU's compute capability (bf16 on
8.0 and later, fp16 on 7.x such as Kaggle's T4, fp32 below and on a CPU); fp16 training scales the loss with
torch.amp.GradScaler, whose step runs on a CPU here, an overflowing one skipped."""

from __future__ import annotations

import pytest
import torch

from kit import device, models

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
