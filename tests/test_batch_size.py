"""Batch size by memory: a simulated CUDA out-of-memory error halves the batch and scales the rates.

Two simulations: a step that fails above a number of images, and a simulated allocator with a byte limit
(every tensor the step makes counts while it lives), under which the real probe must find the largest
batch that fits, however deep in the forward pass, backward pass or optimizer step memory runs out.
"""

from __future__ import annotations

import weakref

import numpy as np
import pytest
import torch
from conftest import fold_state
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from kit.errors import KitError
from kit.report.figure_data import lr_schedule
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
    with pytest.raises(KitError, match="training step of 2 images runs out of GPU memory"):
        memory.fit_batch_size(out_of_memory_above(0, tried), 16, minimum=2)
    assert tried == [16, 8, 4, 2]


def test_other_errors_are_not_taken_for_out_of_memory():
    def broken(batch_size):
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        memory.fit_batch_size(broken, 64)


@pytest.fixture
def fake_gpu(monkeypatch):
    """Probing on the CPU, with train_step failing like a GPU would for batches over 16 images (the other
    GPU paths stay off: bf16 is slow on a CPU, and test_gpu_paths.py runs them)."""
    monkeypatch.setattr(memory, "gpu_paths", lambda compute: True)
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


class SimulatedAllocator(TorchDispatchMode):
    """A GPU's memory of `limit` bytes, on the CPU: each new tensor an operation makes (forward, backward,
    optimizer) counts its storage's bytes until that storage is freed; going over the limit raises
    torch.OutOfMemoryError from inside the operation, as CUDA's allocator does. Tensors made before the
    mode started (the weights) do not count. `peak` is the most bytes held at once."""

    def __init__(self, limit: float = float("inf")):
        super().__init__()
        self.limit, self.held, self.peak, self.live = limit, 0, 0, {}

    def __torch_dispatch__(self, function, types, args=(), kwargs=None):
        output = function(*args, **(kwargs or {}))
        inputs = {
            leaf.untyped_storage().data_ptr()
            for leaf in tree_leaves((args, kwargs))
            if isinstance(leaf, torch.Tensor)
        }
        for tensor in tree_leaves(output):
            if not isinstance(tensor, torch.Tensor):
                continue
            storage = tensor.untyped_storage()
            address = storage.data_ptr()
            if (
                address in inputs or address in self.live or storage.nbytes() == 0
            ):  # a view, an in-place result
                continue
            self.live[address] = storage.nbytes()
            self.held += storage.nbytes()
            weakref.finalize(storage, self._free, address)
            self.peak = max(self.peak, self.held)
            if self.held > self.limit:
                raise torch.OutOfMemoryError(
                    f"CUDA out of memory (simulated): {self.held:,} > {self.limit:,} bytes"
                )
        return output

    def _free(self, address: int) -> None:
        self.held -= self.live.pop(address)


def steady_peak(data: stage.PreparedStage, model, batch_size: int) -> int:
    """The most bytes a training step of `batch_size` blank images holds once training is under way."""
    blank = torch.zeros((batch_size, 32, 32, 3), dtype=torch.uint8)
    model.zero_grad(set_to_none=True)
    data.optimizer.state.clear()
    with SimulatedAllocator() as allocator:
        stage.train_step(data, model, blank, torch.zeros(batch_size, dtype=torch.int64))
        allocator.peak = 0  # the first step makes the optimizer state, which later steps hold throughout
        stage.train_step(data, model, blank, torch.zeros(batch_size, dtype=torch.int64))
        model.zero_grad(set_to_none=True)
        data.optimizer.state.clear()
    return allocator.peak


def test_the_probed_batch_trains_under_a_byte_limit(digits, tmp_path):
    """The real probe, then training, under a memory limit just below what a step of 16 images holds: the
    probe settles on 8 and training at 8 never runs out; a failed try leaves nothing held (else the
    smaller tries would fail too)."""
    config = digits()  # batch 64
    state = fold_state(config, tmp_path)
    data = stage.prepare_stage(config, 0, state)
    peaks = {batch_size: steady_peak(data, state.model, batch_size) for batch_size in (8, 16)}
    assert peaks[8] < peaks[16]
    tried = []

    def step(data, model, inputs, targets):
        tried.append(len(targets))
        return stage.train_step(data, model, inputs, targets)

    with SimulatedAllocator(peaks[16] - 1) as allocator:
        assert memory.probe_batch_size(data, state.model, step) == 8
        assert allocator.held < peaks[8] / 10  # the tries' tensors, gradients and optimizer state are freed
        for group in data.optimizer.param_groups:
            group["lr"] = 1e-3
        inputs, targets = torch.from_numpy(data.valid_inputs[:8]), torch.from_numpy(data.valid_targets[:8])
        for _ in range(2):  # steady state: what the probe's try measured
            assert torch.isfinite(stage.train_step(data, state.model, inputs, targets))
    assert list(dict.fromkeys(tried)) == [64, 32, 16, 8] and tried[-2:] == [8, 8]  # two steps for a fit


def test_the_report_draws_the_rates_the_optimizer_saw_under_a_halved_batch(
    digits, tmp_path, fake_gpu, monkeypatch
):
    """Two stages, both named "train", each halved to 16 images per step (64 -> 16: rates x1/4; 32 -> 16:
    x1/2), with discriminative rates and SGDR restarts: every rate each parameter group had at each
    optimizer step is the report's LR curve (kit.report.figure_data.lr_schedule) at that step's position."""
    config = digits(
        "stages=[{cycle_len=0.125, lr=[1e-3, 2e-3, 4e-3]},"
        " {n_cycles=2, cycle_len=0.0625, cycle_mult=2.0, batch_size=32, lr=[4e-4, 1e-3, 3e-3]}]"
    )
    seen = []  # per stage: the optimizer's rates at each training step (the batch-size probe's left out)
    probing = [False]
    step_with_memory = loop.train_step  # fake_gpu's: fails above 16 images

    def recording_step(prepared, model, inputs, targets):
        loss = step_with_memory(prepared, model, inputs, targets)
        if not probing[0]:
            seen[-1].append([group["lr"] for group in prepared.optimizer.param_groups])
        return loss

    set_batch_size = memory.set_batch_size

    def set_then_record(*arguments):
        probing[0] = True
        set_batch_size(*arguments)
        probing[0] = False
        seen.append([])

    monkeypatch.setattr(memory, "set_batch_size", set_then_record)
    monkeypatch.setattr(loop, "train_step", recording_step)
    state = fold_state(config, tmp_path)
    for stage_index in range(len(config.stages)):
        loop.run_stage(config, stage_index, state, progress=False)

    steps_per_epoch = int(np.ceil(len(state.train_rows) / 16))
    epochs, rates, starts = lr_schedule(config, state.history, points_per_epoch=steps_per_epoch)
    assert [record["batch_size"] for record in state.history] == [16, 16]
    assert [len(steps) for steps in seen] == [
        round(config.stage_epochs(recipe) * steps_per_epoch) for recipe in config.stages
    ]
    for (offset, _), steps, factor, recipe in zip(starts, seen, (1 / 4, 1 / 2), config.stages, strict=True):
        # The peak each group reached (after any warm-up) is its configured rate times the batch factor.
        reached = np.max(np.array(steps) / np.array(recipe.lr), axis=0) / factor
        assert ((reached > 0.9) & (reached <= 1 + 1e-9)).all(), reached
        for index, optimizer_rates in enumerate(steps):
            (where,) = np.flatnonzero(np.isclose(epochs, offset + index / steps_per_epoch, atol=1e-9))
            assert rates[where] == pytest.approx(optimizer_rates, rel=1e-9)
    # The second stage restarts once: its rates fall over a cycle, then jump back to the (scaled) peak.
    head = [step_rates[-1] for step_rates in seen[1]]
    # (From step 2: step 1 rises out of the warm-up, which lasts less than a step here.)
    restarts = [index for index in range(2, len(head)) if head[index] > head[index - 1]]
    assert len(restarts) == 1 and head[restarts[0]] > 0.9 * 3e-3 / 2  # near the peak: steps are discrete
