"""Training batches from the decode-once cache: whole batches per call, this rank's shard of the rows.

The cache is a uint8 memmap, so a batch is one fancy-indexed read; albumentations (when the stage
augments) runs image by image in the DataLoader's worker processes. Batches cross to the GPU as uint8
from pinned memory with non-blocking copies, and are normalised there (kit.device.to_input).
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset

from kit import distributed


class BatchDataset(Dataset):
    """Whole batches from a cached uint8 array: one call per batch, augmented image by image."""

    def __init__(self, images: np.ndarray, targets: np.ndarray, rows: np.ndarray, transform=None):
        self.images, self.targets, self.rows, self.transform = images, targets, rows, transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, positions: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self.rows[positions]
        if self.transform is None:
            batch = np.ascontiguousarray(self.images[rows])
        else:
            batch = np.stack([self.transform(image=self.images[row])["image"] for row in rows])
        return torch.from_numpy(batch), torch.from_numpy(self.targets[rows])


class JoinedImages:
    """Two image arrays indexed as one, without copying the first (a memmap): training images, then the
    test images a pseudo-labelling stage adds after them."""

    def __init__(self, first: np.ndarray, second: np.ndarray):
        self.first, self.second = first, second
        self.shape = (len(first) + len(second), *first.shape[1:])

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index):
        if np.ndim(index) == 0:
            return self.first[index] if index < len(self.first) else self.second[index - len(self.first)]
        index = np.asarray(index)
        batch = np.empty((len(index), *self.shape[1:]), dtype=self.first.dtype)
        in_first = index < len(self.first)
        batch[in_first] = self.first[index[in_first]]
        batch[~in_first] = self.second[index[~in_first] - len(self.first)]
        return batch


def worker_count(setting: int) -> int:
    """DataLoader worker processes per rank: `setting`, or (-1) the machine's cores shared by its ranks."""
    if setting >= 0:
        return setting
    if not torch.cuda.is_available():
        return 0  # on a CPU box the model needs every core
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    ranks_here = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))  # torchrun: processes on this machine
    return max(1, min(16, cores // ranks_here))


class BatchesWithoutLoneRow(BatchSampler):
    """BatchSampler that never ends an epoch on a batch of one row: BatchNorm cannot normalise a single
    image in training mode (with batch 64, a fold of 65, 129, ... training rows crashed), so a lone last
    row joins the batch before it (one batch of batch_size + 1) and every row is still seen each epoch."""

    def __init__(self, sampler, batch_size: int):
        super().__init__(sampler, batch_size, drop_last=False)

    def __iter__(self):
        batches = super().__iter__()
        held = next(batches, None)
        for batch in batches:
            if len(batch) == 1 and self.batch_size > 1:
                held = held + batch
            else:
                yield held
                held = batch
        if held is not None:
            yield held

    def __len__(self) -> int:
        count = super().__len__()
        lone = self.batch_size > 1 and len(self.sampler) % self.batch_size == 1
        return count - 1 if lone and count > 1 else count


def make_loader(
    dataset: Dataset, batch_size: int, shuffle: bool, generator: torch.Generator, workers: int
) -> DataLoader:
    """Batches of `batch_size` rows of this rank's shard, shuffled by `generator` (reseeded per epoch); a
    lone last row joins the batch before it (BatchesWithoutLoneRow)."""
    return DataLoader(
        dataset,
        sampler=BatchesWithoutLoneRow(distributed.ShardSampler(len(dataset), generator, shuffle), batch_size),
        batch_size=None,  # the dataset returns whole batches
        num_workers=workers,
        # Page-locked host memory: the copy to the GPU can be asynchronous.
        pin_memory=torch.cuda.is_available(),
        persistent_workers=workers > 0,  # no worker start-up cost every epoch
    )
