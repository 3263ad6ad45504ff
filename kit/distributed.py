"""Many GPUs: the process group torchrun starts, and the few collective operations training needs.

`torchrun --nproc_per_node=N -m kit train COMP` starts N copies of the kit; each finds RANK, LOCAL_RANK
and WORLD_SIZE in its environment (several machines: torchrun's --nnodes, --node_rank and
--rdzv_endpoint flags, nothing else). Every copy trains the same model on its own shard of the training
rows and DistributedDataParallel averages the gradients. Rank 0 alone writes the run folder; the others
get what they need from it by broadcast. Caches under data/interim are built by rank 0 first, then read
by the others. With one process every helper here does nothing, so one code path serves CPU, one GPU
and many.

`kit train --fold all --parallel folds` uses the group differently: each process trains its own folds
from start to end inside `alone()`, where these helpers act as in a single process (no DDP, no sharding,
no learning-rate scaling, every process writes its own fold folders), then the processes meet again
(`gather_objects`) for rank 0 to settle the run.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import numpy as np
import torch
from torch import distributed as dist
from torch import nn
from torch.utils.data import Sampler

# Rank 0 may build an image or feature cache (minutes on a large set) while the others wait at a barrier.
TIMEOUT = timedelta(hours=1)

# A process that finished its folds (--parallel folds) waits for the slowest at the final gather: as long
# as a fold may take (hours on a GPU, days on a large set), far past TIMEOUT.
PATIENT_TIMEOUT = timedelta(days=7)

# True inside `alone()`: this process trains its own folds as if it were the only one.
_alone = False


def _grouped() -> bool:
    """True when the helpers below act across processes: a process group, and not inside `alone()`."""
    return dist.is_initialized() and not _alone


def world_size() -> int:
    return dist.get_world_size() if _grouped() else 1


def rank() -> int:
    return dist.get_rank() if _grouped() else 0


@contextmanager
def alone() -> Iterator[None]:
    """Inside the block every helper here acts as in a single process (rank 0 of 1), the process group
    kept for later: a process training its own folds (--parallel folds) trains each one as a lone
    process would, bit for bit, and writes its own fold folders."""
    global _alone
    before, _alone = _alone, True
    try:
        yield
    finally:
        _alone = before


def patient_group() -> Any:
    """A group of every process on gloo, with PATIENT_TIMEOUT, for `gather_objects` after the folds:
    gloo waits on the CPU (an NCCL collective would spin on the GPU and its watchdog end the wait after
    TIMEOUT). Every process must call it, at the same point; None with one process."""
    return dist.new_group(backend="gloo", timeout=PATIENT_TIMEOUT) if _grouped() else None


def gather_objects(value: Any, group: Any = None) -> list:
    """Every rank's `value` (any picklable object), in rank order, on every rank; [value] alone.
    `group`: e.g. `patient_group()` (default: the process group torchrun started)."""
    if not _grouped():
        return [value]
    gathered: list = [None] * world_size()
    dist.all_gather_object(gathered, value, group=group)
    return gathered


def is_main() -> bool:
    """True in the process that writes files and prints (rank 0, or the only process)."""
    return rank() == 0


def setup() -> None:
    """Join the process group torchrun describes (WORLD_SIZE > 1); nothing for a single process."""
    if dist.is_initialized() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))  # "cuda" now means this rank's GPU
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo", timeout=TIMEOUT)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if _grouped():
        dist.barrier()


@contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (building a cache), then the others run it (reading that cache)."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


def broadcast_object(value: Any) -> Any:
    """Rank 0's `value` (any picklable object), on every rank."""
    if not _grouped():
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def _collective_device() -> torch.device:
    # NCCL moves only CUDA tensors; gloo only CPU ones.
    return torch.device("cuda") if dist.get_backend() == "nccl" else torch.device("cpu")


def smallest(value: int) -> int:
    """The smallest of every rank's `value` (e.g. the batch size that fits on every GPU)."""
    if not _grouped():
        return value
    tensor = torch.tensor(value, device=_collective_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return int(tensor.item())


def sync_buffers(module: nn.Module) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank.

    DDP broadcasts them before each forward pass, so after an epoch's last step each rank holds
    statistics updated with its own last batch; this makes validation and checkpoints agree.
    """
    if _grouped():
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def wrap(module: nn.Module) -> nn.Module:
    """`module` in DistributedDataParallel when there are several processes; as it is otherwise.

    Only parameters that require gradients at wrapping time are synchronised, so a stage that
    changes which layer groups are frozen wraps the model again.
    """
    if not _grouped():
        return module
    device_ids = [torch.cuda.current_device()] if torch.cuda.is_available() else None
    return nn.parallel.DistributedDataParallel(module, device_ids=device_ids, gradient_as_bucket_view=True)


class ShardSampler(Sampler[int]):
    """This rank's share of a (shuffled) order of `count` items, as DistributedSampler deals it.

    Every rank draws the same permutation from `generator`, which the training loop reseeds every
    epoch, so a resumed run draws what the original did. The order is padded by repeating its start
    until it divides evenly, so every rank runs the same number of steps (DDP needs that), and rank r
    takes items r, r + world_size, ... With one process this is RandomSampler(generator=generator).
    """

    def __init__(self, count: int, generator: torch.Generator, shuffle: bool = True):
        self.count, self.generator, self.shuffle = count, generator, shuffle
        self.rank, self.world_size = rank(), world_size()

    def __len__(self) -> int:
        return math.ceil(self.count / self.world_size)

    def __iter__(self) -> Iterator[int]:
        order = (
            torch.randperm(self.count, generator=self.generator).tolist()
            if self.shuffle
            else list(range(self.count))
        )
        padding = len(self) * self.world_size - self.count
        order += (order * math.ceil(padding / max(self.count, 1)))[:padding]
        return iter(order[self.rank :: self.world_size])


def shard(items):
    """This rank's share of a sequence (array, tensor): items rank, rank + world_size, ... (no padding)."""
    return items[rank() :: world_size()]


def gather_shards(part: np.ndarray | torch.Tensor, count: int) -> np.ndarray | torch.Tensor:
    """Every rank's `part` (made from `shard` of `count` items) in the original order, on every rank."""
    if not _grouped():
        return part
    is_tensor = isinstance(part, torch.Tensor)
    parts: list = [None] * world_size()
    dist.all_gather_object(parts, part.cpu().numpy() if is_tensor else part)
    whole = np.empty((count, *parts[0].shape[1:]), dtype=parts[0].dtype)
    for index, piece in enumerate(parts):
        whole[index :: world_size()] = piece
    return torch.from_numpy(whole).to(part.device) if is_tensor else whole


def average(value: torch.Tensor) -> torch.Tensor:
    """The mean over ranks of a scalar tensor on the training device (the same on every rank)."""
    if not _grouped():
        return value
    total = value.detach().clone()
    dist.all_reduce(total)
    return total / world_size()
