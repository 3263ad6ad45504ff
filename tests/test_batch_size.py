"""Batch size by memory: a simulated CUDA out-of-memory error halves the batch and scales the rates."""

from __future__ import annotations

import click
import numpy as np
import pytest
import torch
from conftest import fold_state

from kit.train import batch_size as memory
from kit.train import loop, schedule, stage


def out_of_memory_above(limit: int, tried: list[int]):
    """A try_step that fails, as CUDA does, for batches larger than `limit`; records what was tried."""

    def try_step(batch_size: int) -> None:
        tried.append(batch_size)
        if batch_size > limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory (simulated): {batch_size} images")

    return try_step


def test_out_of_memory_halves_the_batch_until_it_fits():
    tried = []
    assert memory.fit_batch_size(out_of_memory_above(40, tried), 256) == 32
    assert tried == [256, 128, 64, 32]
    tried = []
    assert memory.fit_batch_size(out_of_memory_above(64, tried), 64) == 64 and tried == [64]


def test_a_step_that_never_fits_is_one_clear_error():
    tried = []
    with pytest.raises(click.ClickException, match="training step of 2 images runs out of GPU memory"):
        memory.fit_batch_size(out_of_memory_above(0, tried), 16, minimum=2)
    assert tried == [16, 8, 4, 2]


def test_other_errors_are_not_taken_for_out_of_memory():
    def broken(batch_size):
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        memory.fit_batch_size(broken, 64)


@pytest.fixture
def fake_gpu(monkeypatch):
    """Probing on the CPU, with train_step failing like a GPU would for batches over 16 images."""
    monkeypatch.setattr(memory, "MEMORY_PROBE_DEVICES", {"cpu", "cuda"})
    step = stage.train_step

    def step_with_memory(data, model, inputs, targets):
        if len(targets) > 16:
            raise torch.OutOfMemoryError(f"CUDA out of memory (simulated): {len(targets)} images")
        return step(data, model, inputs, targets)

    monkeypatch.setattr(loop, "train_step", step_with_memory)


def test_probing_changes_no_weight_statistic_or_optimizer_state(digits, tmp_path, fake_gpu):
    config = digits()
    state = fold_state(config, tmp_path)
    data = stage.prepare_stage(config, 0, state)
    before = {name: tensor.clone() for name, tensor in state.model.state_dict().items()}
    assert memory.probe_batch_size(data, state.model, loop.train_step) == 16
    assert all(torch.equal(before[name], tensor) for name, tensor in state.model.state_dict().items())
    assert len(data.optimizer.state) == 0


def test_a_stage_that_does_not_fit_trains_at_half_batches_with_scaled_rates(
    digits, tmp_path, fake_gpu, capsys
):
    config = digits("stages.0.cycle_len=0.25")  # batch 64 at 3e-3: 64 -> 32 -> 16 fits, so rates x 1/4
    state = fold_state(config, tmp_path)
    loop.run_stage(config, 0, state, progress=False)
    (record,) = state.history
    steps_per_epoch = int(np.ceil(len(state.train_rows) / 16))
    steps = round(0.25 * steps_per_epoch)
    assert record["batch_size"] == 16 and record["step"] == steps
    factor = schedule.sgdr_lr(
        (steps - 1) / steps_per_epoch, 1.0, 0.25, 1.0
    )  # the last step's point on the cosine
    assert record["lr"] == pytest.approx(3e-3 / 4 * factor)
    assert (
        "64 images per step do not fit in GPU memory; using 16, learning rates x0.25"
        in capsys.readouterr().out
    )
    assert np.isfinite(record["train_loss"])
