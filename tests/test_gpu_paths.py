"""The GPU paths, run on a CPU: every branch of kit/ that only a GPU takes has a twin here that torch can
run without one, so those paths cannot rot while no GPU is around. `KIT_GPU_PATHS_ON_CPU=1` (the
`gpu_paths_on_cpu` fixture; read only by kit.device.gpu_paths) sends the CPU down them.

| CUDA-only branch in kit/                         | its CPU twin                                            |
|--------------------------------------------------|---------------------------------------------------------|
| device.autocast: bf16                            | test_bf16_autocast_trains_and_predicts_on_a_cpu         |
| device.to_input, device.place: channels_last     | test_channels_last_inputs_and_weights_give_same_values  |
| stage.make_optimizer: fused AdamW                | test_fused_adamw_takes_the_same_step_as_the_default     |
| loop.run_stage: train.compile                    | test_compiled_stage_trains (slow)                       |
| batch_size.set_batch_size: memory probe, halving | test_batch_size.py: ..._trains_under_a_byte_limit       |
|                                                  | (simulated allocator), ..._trains_at_half_batches_...   |
| batch_size.fit_batch_size: cuda.empty_cache      | none (the allocator's cache); the halving around it:    |
|                                                  | test_batch_size.py                                      |
| loader.make_loader: pin_memory;                  | test_a_gpu_gets_pinned_memory_and_loader_workers (the   |
| loader.worker_count: workers                     | choice; page-locking itself needs the driver)           |
| device.to_input, stage.train_step: non_blocking  | every training test (on a CPU the copy is a no-op)      |
| distributed: NCCL, set_device, device_ids        | test_distributed.py (gloo, two CPU processes)           |

What no CPU can run (page-locked copies, NCCL, the real allocator, compiled CUDA kernels, speed) runs in
scripts/gpu_check.sh on a GPU machine.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import fold_state

from kit import device, models, tasks
from kit.config_build import config_from_dict
from kit.data import loader
from kit.train import loop, stage

CLASSES = 10


def tiny_config(optimizer: str = "adamw"):
    return config_from_dict(
        {
            "train": {
                "model": "test_efficientnet",
                "pretrained": False,
                "image_size": 32,
                "optimizer": optimizer,
            }
        },
        Path("gpu-paths/competition.toml"),
    )


def tiny_stage(seed: int = 0, optimizer: str = "adamw") -> tuple[torch.nn.Module, stage.PreparedStage]:
    """A fresh (seeded) tiny model placed as the kit places it, and what kit.train.stage.train_step needs."""
    torch.manual_seed(seed)
    model = device.place(models.create_model("test_efficientnet", CLASSES, pretrained=False))
    config = tiny_config(optimizer)
    rates = [1e-3] * 3
    prepared = stage.PreparedStage(
        model,
        stage.make_optimizer(config, models.parameter_groups(model, rates)),
        rates,
        None,
        None,
        None,
        32,
        8,
        True,
        torch.Generator(),
        task=tasks.SINGLE_LABEL,
    )
    models.train_mode(model)
    return model, prepared


def uint8_batch(count: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Cached-image-like inputs: uint8 NHWC, and their labels."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (count, 32, 32, 3), dtype=torch.uint8, generator=generator)
    return images, torch.randint(0, CLASSES, (count,), generator=generator)


def test_normal_cpu_runs_stay_off_the_gpu_paths(monkeypatch):
    monkeypatch.delenv(device.GPU_PATHS_ON_CPU, raising=False)
    compute = torch.device("cpu")
    assert not device.gpu_paths(compute)
    with device.autocast(compute):
        assert torch.ones(2, 2).mm(torch.ones(2, 2)).dtype == torch.float32
    assert device.memory_format(compute) == torch.contiguous_format
    _, prepared = tiny_stage()
    assert not prepared.optimizer.defaults["fused"]


def test_bf16_autocast_trains_and_predicts_on_a_cpu(gpu_paths_on_cpu):
    model, prepared = tiny_stage()
    head_outputs = []
    model.get_classifier().register_forward_hook(lambda module, args, output: head_outputs.append(output))
    before = [parameter.detach().clone() for parameter in model.parameters()]
    images, labels = uint8_batch()
    loss = stage.train_step(prepared, model, images, labels)
    assert head_outputs[0].dtype == torch.bfloat16  # the matrix products ran in bf16
    assert loss.dtype == torch.float32 and torch.isfinite(loss)  # cross-entropy autocasts to float32
    assert all(parameter.dtype == torch.float32 for parameter in model.parameters())  # master weights
    assert any(not torch.equal(old, new) for old, new in zip(before, model.parameters(), strict=True))

    model.eval()
    mean, std = model.pretrained_cfg["mean"], model.pretrained_cfg["std"]
    predicted = device.batched_inference(model, images.numpy(), 3, mean, std)
    assert predicted.dtype == torch.float32 and predicted.shape == (8, CLASSES)
    with torch.inference_mode():  # the same weights in float32: bf16 keeps about 3 significant digits
        exact = model(device.to_input(images, mean, std, torch.device("cpu")).float())
    assert torch.allclose(predicted, exact, atol=0.1, rtol=0.05)


def test_channels_last_inputs_and_weights_give_same_values(gpu_paths_on_cpu, monkeypatch):
    compute = torch.device("cpu")
    images, labels = uint8_batch()
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    inputs = device.to_input(images, mean, std, compute)
    assert inputs.is_contiguous(memory_format=torch.channels_last)
    monkeypatch.delenv(device.GPU_PATHS_ON_CPU)
    plain = device.to_input(images, mean, std, compute)
    assert torch.equal(inputs, plain)  # the same numbers, another layout
    monkeypatch.setenv(device.GPU_PATHS_ON_CPU, "1")

    model, prepared = tiny_stage()
    convolutions = [module.weight for module in model.modules() if isinstance(module, torch.nn.Conv2d)]
    assert convolutions and all(
        weight.is_contiguous(memory_format=torch.channels_last) for weight in convolutions
    )
    stage.train_step(prepared, model, images, labels)  # the fused optimizer writes the weights in place
    assert all(weight.is_contiguous(memory_format=torch.channels_last) for weight in convolutions)


def test_fused_adamw_takes_the_same_step_as_the_default(gpu_paths_on_cpu, monkeypatch):
    config = tiny_config()
    fused_model, fused = tiny_stage(seed=1)
    assert fused.optimizer.defaults["fused"] is True
    _, sgd = tiny_stage(optimizer="sgd")
    assert not sgd.optimizer.defaults.get("fused")  # SGD keeps torch's default
    plain_model = copy.deepcopy(fused_model)
    monkeypatch.delenv(device.GPU_PATHS_ON_CPU)
    plain = stage.make_optimizer(config, models.parameter_groups(plain_model, [1e-2, 2e-2, 3e-2]))
    assert not plain.defaults["fused"]
    monkeypatch.setenv(device.GPU_PATHS_ON_CPU, "1")
    fused_optimizer = stage.make_optimizer(config, models.parameter_groups(fused_model, [1e-2, 2e-2, 3e-2]))
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):  # later steps read the moments the first one wrote
        for fused_weight, plain_weight in zip(
            fused_model.parameters(), plain_model.parameters(), strict=True
        ):
            # in the weight's layout (channels_last), as autograd and DDP's bucket views make gradients:
            # torch's fused kernel walks memory flat, and a gradient in another layout gives a wrong step
            fused_weight.grad = torch.empty_like(fused_weight).copy_(
                torch.randn(fused_weight.shape, generator=generator)
            )
            plain_weight.grad = fused_weight.grad.clone()
        fused_optimizer.step()
        plain.step()
    for (name, fused_weight), plain_weight in zip(
        fused_model.named_parameters(), plain_model.parameters(), strict=True
    ):
        assert torch.allclose(fused_weight, plain_weight, atol=1e-6), name
    assert not torch.equal(fused_weight, tiny_stage(seed=1)[0].get_classifier().bias)  # the steps moved it


def test_a_gpu_gets_pinned_memory_and_loader_workers(monkeypatch):
    dataset = loader.BatchDataset(np.zeros((4, 8, 8, 3), np.uint8), np.zeros(4, np.int64), np.arange(4), None)
    assert loader.worker_count(-1) == 0  # a CPU box: the model needs every core
    assert not loader.make_loader(dataset, 2, False, torch.Generator(), 0).pin_memory
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert loader.worker_count(-1) >= 1 and loader.worker_count(3) == 3
    assert loader.make_loader(dataset, 2, False, torch.Generator(), 0).pin_memory


@pytest.mark.slow
def test_compiled_stage_trains(digits, tmp_path, gpu_paths_on_cpu, monkeypatch):
    """train.compile=true through kit.train.loop (2 steps): dynamo traces the step (bf16, channels_last)
    into one graph without breaks, and it learns. The backend is aot_eager: the same tracing and autograd
    graphs as on a GPU, without inductor's C++ code generation (minutes on a CPU, and not the GPU's code)."""
    from torch._dynamo.utils import counters

    compile_model = torch.compile
    monkeypatch.setattr(torch, "compile", lambda module: compile_model(module, backend="aot_eager"))
    torch._dynamo.reset()
    counters.clear()
    config = digits("train.compile=true", "stages.0.cycle_len=0.1")
    state = fold_state(config, tmp_path)
    loop.run_stage(config, 0, state, progress=False)
    assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"]  # traced once, whole
    (record,) = state.history
    assert record["step"] == 2 and np.isfinite(record["train_loss"]) and np.isfinite(record["valid_loss"])
