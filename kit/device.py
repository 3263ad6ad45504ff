"""Where tensors live and how batches reach it: the compute device, uint8 images normalised on it, and
the one batched inference loop (validation, test prediction with TTA, precomputed features all use it).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import torch
from tqdm import tqdm


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def device_name() -> str:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def autocast(compute: torch.device):
    """bf16 autocast on CUDA (tensor cores; no loss scaling needed with bf16), full precision elsewhere."""
    return torch.autocast(compute.type, dtype=torch.bfloat16, enabled=compute.type == "cuda")


@functools.lru_cache(maxsize=16)
def _normaliser(mean: tuple, std: tuple, compute: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std as (1, 3, 1, 1) tensors on `compute`, made once: a host-to-device copy from Python
    values would otherwise wait for the GPU on every batch."""
    return torch.tensor(mean, device=compute).view(1, 3, 1, 1), torch.tensor(std, device=compute).view(
        1, 3, 1, 1
    )


def to_input(batch: torch.Tensor, mean: tuple, std: tuple, compute: torch.device) -> torch.Tensor:
    """uint8 NHWC (as cached) -> normalised float NCHW on `compute`, channels_last on CUDA.

    The copy crosses the bus as uint8 (4x fewer bytes than float) and is converted on the device.
    """
    batch = batch.to(compute, non_blocking=True).permute(0, 3, 1, 2).float().div_(255)
    mean_tensor, std_tensor = _normaliser(tuple(mean), tuple(std), compute)
    batch = (batch - mean_tensor) / std_tensor
    return batch.contiguous(memory_format=torch.channels_last) if compute.type == "cuda" else batch


@torch.inference_mode()
def batched_inference(
    function: Callable[[torch.Tensor], torch.Tensor],
    inputs: np.ndarray | torch.Tensor,
    batch_size: int,
    mean: tuple,
    std: tuple,
    join_dim: int = 0,
    progress: str | None = None,
) -> torch.Tensor:
    """`function` over `inputs` in batches, outputs as float32 joined along `join_dim`, left on the device
    (one host sync at the end, by the caller).

    `inputs` are cached uint8 images (a numpy array or memmap: normalised on the device) or float rows
    already made (features: moved as they are). `progress` names a tqdm bar over the batches.
    """
    compute = device()
    outputs = []
    starts = range(0, len(inputs), batch_size)
    for start in tqdm(starts, desc=progress, leave=False, disable=progress is None):
        chunk = inputs[start : start + batch_size]
        if isinstance(chunk, np.ndarray):  # cached images, not features
            chunk = to_input(torch.from_numpy(np.array(chunk)), mean, std, compute)
        with autocast(compute):
            outputs.append(function(chunk.to(compute)).float())
    return torch.cat(outputs, dim=join_dim)
