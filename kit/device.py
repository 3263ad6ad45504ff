"""Where tensors live and how batches reach it: the compute device, uint8 images normalised on it, and
the one batched inference loop (validation, test prediction with TTA, precomputed features all use it).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
import torch
from torch.nn import functional
from tqdm import tqdm


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


Item, Result = TypeVar("Item"), TypeVar("Result")


def visible_devices() -> list[torch.device]:
    """Every GPU torch sees (CUDA_VISIBLE_DEVICES: Kaggle's "GPU T4 x2" shows two), else the CPU alone."""
    if torch.cuda.is_available():
        return [torch.device("cuda", index) for index in range(torch.cuda.device_count())]
    return [torch.device("cpu")]


def share_out(count: int, devices: int) -> list[list[int]]:
    """Items 0..count-1 dealt to `devices` in turn: device d takes d, d + devices, ... (as even as whole
    items allow); no device is handed nothing while another has two."""
    return [list(range(first, count, devices)) for first in range(max(1, min(devices, count)))]


def split_parts(items: int, parts: int, devices: int) -> list[tuple[int, list[int]]]:
    """Work units (item, its parts) for `devices`: each item whole (all its `parts`) where there are as
    many items as devices or more; else each item's parts cut into devices // items runs of consecutive
    parts, as even as whole parts allow (at most one run per part), so that one fold's TTA views (or a
    single weight file's) keep a T4 x2 busy. Items in order, each item's runs in order: joining a unit's
    results in this order gives the whole item's."""
    every = list(range(parts))
    if items <= 0 or items >= devices or parts <= 1:
        return [(item, every) for item in range(items)]
    runs = min(parts, devices // items)
    cuts = [round(index * parts / runs) for index in range(runs + 1)]
    return [(item, every[cuts[run] : cuts[run + 1]]) for item in range(items) for run in range(runs)]


def on_devices(
    items: Sequence[Item],
    make_work: Callable[[torch.device], Callable[[Item], Result]],
    devices: list[torch.device],
) -> list[Result]:
    """Every item worked on, the items shared out across `devices` (share_out): `make_work(device)` is called
    once per device (its model placed there) and the function it returns takes that device's items, in a
    thread of its own per device (a GPU's kernels run while Python waits, so threads keep several busy);
    the results in the items' order, whatever device made each."""
    if len(devices) == 1:
        work = make_work(devices[0])
        return [work(item) for item in items]
    shares = share_out(len(items), len(devices))
    results: list = [None] * len(items)

    def run(device_index: int) -> None:
        work = make_work(devices[device_index])
        for index in shares[device_index]:
            results[index] = work(items[index])

    with ThreadPoolExecutor(len(shares)) as pool:
        list(pool.map(run, range(len(shares))))  # list(): a thread's error is raised here
    return results


def device_name() -> str:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


# Set to 1, the CPU takes the paths written for GPUs wherever torch can run them there: bf16 autocast,
# channels_last, the fused optimizer, train.compile and the batch-size memory probe. For tests, which keep
# those paths alive on machines without a GPU; it makes a CPU slower (bf16 is emulated on most CPUs).
GPU_PATHS_ON_CPU = "KIT_GPU_PATHS_ON_CPU"


def gpu_paths(compute: torch.device) -> bool:
    """Whether `compute` takes the GPU paths: always on CUDA; on a CPU only when KIT_GPU_PATHS_ON_CPU=1.

    The one place that reads the variable (at call time, so a test can set it).
    """
    return compute.type == "cuda" or (compute.type == "cpu" and os.environ.get(GPU_PATHS_ON_CPU) == "1")


def memory_format(compute: torch.device) -> torch.memory_format:
    """channels_last (NHWC) on the GPU paths: what tensor-core convolutions read without a transpose."""
    return torch.channels_last if gpu_paths(compute) else torch.contiguous_format


# glibc's mallopt parameters (malloc.h): the most blocks served by mmap, and the free memory at the heap's
# top above which it is handed back to the OS (bytes).
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
KEEP_FREED_BYTES = 2**31 - 1  # mallopt takes a C int: 2 GiB of free memory kept at the top of the heap


@functools.cache
def keep_freed_memory() -> bool:
    """Tell glibc's allocator to keep freed memory for the process's next allocation; whether it could.

    By default glibc serves each block over 32 MiB (a batch's activations on the CPU: 51 MiB for the first
    layer of efficientnet_lite0 at 224 px, batch 64) with mmap and unmaps it when freed, so every training
    step maps it again and the kernel zeroes each page on first touch: 3.3 million page faults a step.
    Keeping it, a CPU training step of that model took 2.7 s instead of 4.4 s on 2 cores (`kit train`;
    scripts/bench_allocator.py compares the two); the price is a process that does not shrink while it
    lives. Once per process; not on other C libraries (macOS, musl).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    except (OSError, AttributeError):  # not glibc
        return False
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP_FREED_BYTES))


def place(model: torch.nn.Module, compute: torch.device | None = None) -> torch.nn.Module:
    """`model` moved to `compute` (default: the compute device), in the memory format its inputs will have
    there; on a CPU, the allocator first told to keep freed memory (keep_freed_memory: the tensors a CPU
    step frees are large)."""
    compute = compute or device()
    if compute.type == "cpu":
        keep_freed_memory()
    return model.to(compute, memory_format=memory_format(compute))


# train.precision and predict.precision: "auto" chooses by the GPU's compute capability (choose_precision).
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
BF16_TENSOR_CORES = (8, 0)  # Ampere and later: bf16 tensor cores (no loss scaling needed)
FP16_TENSOR_CORES = (7, 0)  # Volta, Turing (Kaggle's T4 is 7.5): fp16 tensor cores, bf16 emulated or refused
TRITON_CAPABILITY = (7, 0)  # torch.compile's GPU code generator (Triton) needs at least this
# What the CPU's twin of the GPU paths (KIT_GPU_PATHS_ON_CPU=1) stands for: a GPU with bf16 tensor cores.
GPU_PATHS_CAPABILITY = (8, 0)


def choose_precision(setting: str, capability: tuple[int, int] | None) -> str:
    """The precision a setting ("auto", "bf16", "fp16", "fp32") means on a device of compute `capability`
    (None: a CPU). "auto": bf16 where the GPU has bf16 tensor cores (8.0 and later), fp16 on 7.x (its fast
    path; training then scales the loss, `grad_scaler`), fp32 on older GPUs and on a CPU (autocast there is
    emulated: slower, not faster). Any other setting is taken as it is."""
    if setting != "auto":
        return setting
    if capability is None:
        return "fp32"
    if tuple(capability) >= BF16_TENSOR_CORES:
        return "bf16"
    if tuple(capability) >= FP16_TENSOR_CORES:
        return "fp16"
    return "fp32"


def compile_skipped(capability: tuple[int, int] | None) -> str:
    """Why train.compile is skipped on a device of compute `capability` (None: a CPU); "" where it runs."""
    if capability is None:
        return "on a CPU compiling takes longer than the steps it speeds up"
    if tuple(capability) < TRITON_CAPABILITY:
        major, minor = capability
        return f"Triton needs compute capability 7.0 or more, this GPU has {major}.{minor}"
    return ""


def capability(compute: torch.device) -> tuple[int, int] | None:
    """The compute capability of `compute` (major, minor); None for a CPU, except on the GPU paths' CPU twin
    (KIT_GPU_PATHS_ON_CPU=1), which stands for a GPU with bf16 tensor cores."""
    if compute.type == "cuda":
        return tuple(torch.cuda.get_device_capability(compute))
    return GPU_PATHS_CAPABILITY if gpu_paths(compute) else None


def resolve_precision(setting: str, compute: torch.device | None = None) -> str:
    """`setting` made concrete for `compute` (default: this process's device): "bf16", "fp16" or "fp32"."""
    return choose_precision(setting, capability(compute or device()))


def precision_record(train: str, predict: str, compile_asked: bool) -> dict:
    """What a run records of its precision on this process's device (provenance.json "precision"): the
    settings resolved, the compute capability, and whether train.compile runs (or why it is skipped)."""
    compute = device()
    found = capability(compute)
    skipped = compile_skipped(found) if compile_asked else ""
    return {
        "train": resolve_precision(train, compute),
        "predict": resolve_precision(predict, compute),
        "capability": ".".join(map(str, found)) if found else None,
        "compile": ("skipped: " + skipped) if skipped else ("on" if compile_asked else "off"),
    }


def autocast(compute: torch.device, precision: str = "auto"):
    """Autocast to the precision `precision` resolves to on `compute` (`choose_precision`); off for fp32."""
    chosen = choose_precision(precision, capability(compute))
    return torch.autocast(compute.type, dtype=DTYPES[chosen], enabled=chosen != "fp32")


def grad_scaler(precision: str, compute: torch.device) -> torch.amp.GradScaler | None:
    """fp16 training's loss scaler (fp16 gradients underflow unscaled), None for bf16 and fp32 (whose
    exponent range is float32's). `precision` is a resolved one."""
    return torch.amp.GradScaler(compute.type) if precision == "fp16" else None


def backward_and_step(
    loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None
) -> None:
    """The backward pass and the optimizer's step; with a scaler, the loss scaled first and the step skipped
    where a gradient overflowed (inf or NaN), the scale then lowered (torch.amp.GradScaler)."""
    if scaler is None:
        loss.backward()
        optimizer.step()
        return
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


@functools.lru_cache(maxsize=16)
def _normaliser(mean: tuple, std: tuple, compute: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std as (1, 3, 1, 1) tensors on `compute`, made once: a host-to-device copy from Python
    values would otherwise wait for the GPU on every batch."""
    return torch.tensor(mean, device=compute).view(1, 3, 1, 1), torch.tensor(std, device=compute).view(
        1, 3, 1, 1
    )


def resize(batch: torch.Tensor, image_size: int) -> torch.Tensor:
    """An NCHW batch resized to image_size x image_size (antialiased when shrinking); unchanged if it is."""
    if batch.shape[-2:] == (image_size, image_size):
        return batch
    return functional.interpolate(
        batch, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True
    )


def to_input(
    batch: torch.Tensor, mean: tuple, std: tuple, compute: torch.device, image_size: int | None = None
) -> torch.Tensor:
    """uint8 NHWC (as cached) -> normalised float NCHW on `compute`, channels_last on the GPU paths;
    resized to `image_size` when given (the cache holds whole photos a little larger than the model's input).

    The copy crosses the bus as uint8 (4x fewer bytes than float) and is converted on the device.
    """
    batch = batch.to(compute, non_blocking=True).permute(0, 3, 1, 2).float().div_(255)
    if image_size is not None:
        batch = resize(batch, image_size)
    mean_tensor, std_tensor = _normaliser(tuple(mean), tuple(std), compute)
    batch = (batch - mean_tensor) / std_tensor
    return batch.contiguous(memory_format=torch.channels_last) if gpu_paths(compute) else batch


@torch.inference_mode()
def batched_inference(
    function: Callable[[torch.Tensor], torch.Tensor],
    inputs: np.ndarray | torch.Tensor,
    batch_size: int,
    mean: tuple,
    std: tuple,
    join_dim: int = 0,
    progress: str | None = None,
    image_size: int | None = None,
    precision: str = "auto",
    compute: torch.device | None = None,
) -> torch.Tensor:
    """`function` over `inputs` in batches, outputs as float32 joined along `join_dim`, left on the device
    (one host sync at the end, by the caller).

    `inputs` are cached uint8 images (a numpy array or memmap: normalised on the device) or float rows
    already made (features: moved as they are), resized to `image_size` when given. `progress` names a
    tqdm bar over the batches; `precision` is predict.precision (or train.precision, for OOF). `compute`:
    the device it runs on (default: the compute device; `on_devices` hands each GPU its share).
    """
    compute = compute or device()
    outputs = []
    starts = range(0, len(inputs), batch_size)
    for start in tqdm(starts, desc=progress, leave=False, disable=progress is None):
        chunk = inputs[start : start + batch_size]
        if isinstance(chunk, np.ndarray):  # cached images, not features
            chunk = to_input(torch.from_numpy(np.array(chunk)), mean, std, compute, image_size)
        with autocast(compute, precision):
            outputs.append(function(chunk.to(compute)).float())
    return torch.cat(outputs, dim=join_dim)
