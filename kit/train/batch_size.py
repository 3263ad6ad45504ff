"""Batch size by memory: for each stage, the largest batch that fits, so progressive resizing never crashes.

On a GPU a stage's configured batch (train.batch_size, scaled with the image size) is first tried with a
whole training step on a blank batch, and halved while the GPU runs out of memory; every rank then takes
the smallest size any rank could fit. Learning rates are per configured batch: when a step sees other
numbers of images (a halved batch, several GPUs) they are scaled linearly (Goyal et al., 2017).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from kit import distributed
from kit.config import Config
from kit.data.loader import make_loader
from kit.device import device, gpu_paths
from kit.errors import KitError
from kit.train.stage import FoldState, PreparedStage

Step = Callable[
    [PreparedStage, nn.Module, torch.Tensor, torch.Tensor], torch.Tensor
]  # kit.train.stage.train_step


def fit_batch_size(try_step: Callable[[int], None], batch_size: int, minimum: int = 1) -> int:
    """The first of batch_size, batch_size // 2, ... (not below `minimum`) whose `try_step(batch)` fits.

    The kit's one use of an exception to change course: whether a batch fits can only be tried.
    """
    tried = batch_size
    while batch_size >= minimum:
        try:
            try_step(batch_size)
            return batch_size
        except torch.OutOfMemoryError:
            tried = batch_size  # the failed step's tensors are released when this handler ends
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        batch_size //= 2
    raise KitError(
        f"a training step of {tried} images runs out of GPU memory: "
        "lower the image size or choose a smaller train.model"
    )


def probe_batch_size(prepared: PreparedStage, model: nn.Module, step: Step) -> int:
    """The stage's batch size, halved until a training step fits in memory on every rank.

    Each try is two whole steps (forward, backward, optimizer) on a blank batch at learning rate 0: the
    second holds the optimizer state the first made, as every training step does, so a batch that fits
    here fits in training. The weights, BatchNorm statistics and optimizer state are put back afterwards,
    and no gradient is left held.
    """
    model.zero_grad(set_to_none=True)  # the previous stage's gradients would count against this one
    saved = {name: tensor.detach().to("cpu", copy=True) for name, tensor in model.state_dict().items()}
    example = prepared.valid_inputs[:1]  # one cached image or feature row: the shape and type of an input
    example = torch.from_numpy(np.array(example)) if isinstance(example, np.ndarray) else example

    def try_step(batch_size: int) -> None:
        # A try that ran out of memory in optimizer.step may leave its state half made, and one that ran
        # out in the backward pass, some gradients.
        prepared.optimizer.state.clear()
        model.zero_grad(set_to_none=True)
        for group in prepared.optimizer.param_groups:
            group["lr"] = 0.0
        blank = torch.zeros((batch_size, *example.shape[1:]), dtype=example.dtype)
        for _ in range(2):
            step(prepared, model, blank, torch.zeros(batch_size, dtype=torch.int64))

    fitted = distributed.smallest(fit_batch_size(try_step, prepared.batch_size, minimum=2))
    model.load_state_dict(saved)
    model.zero_grad(set_to_none=True)  # the last try's gradients would be held into the first step
    prepared.optimizer.state.clear()  # a new stage's optimizer starts empty
    return fitted


def set_batch_size(
    config: Config, stage_index: int, state: FoldState, prepared: PreparedStage, step: Step
) -> None:
    """This rank's batch size and the learning rates for it.

    The batch size is the one an interrupted run chose, or else the largest that fits.
    """
    configured = prepared.batch_size
    resumed = state.resume is not None and state.resume["stage_index"] == stage_index
    if resumed:
        batch_size = state.resume.get("batch_size", configured)
    elif gpu_paths(device()):  # a GPU raises when out of memory; a CPU's OS would kill the process
        batch_size = probe_batch_size(prepared, state.model, step)
    else:
        batch_size = configured
    scale = (
        batch_size * distributed.world_size() / configured
    )  # images per step now / images the rates are for
    if batch_size != configured:
        loader = prepared.train_batches
        prepared.train_batches = make_loader(
            loader.dataset, batch_size, True, prepared.generator, loader.num_workers
        )
        if distributed.is_main() and not resumed:
            tqdm.write(
                f"  {config.stages[stage_index].name}: {configured} images per step "
                "do not fit in GPU memory; "
                f"using {batch_size}, learning rates x{scale:g}"
            )
    for group in prepared.optimizer.param_groups:
        group["initial_lr"] *= scale
    prepared.base_rates, prepared.batch_size = [rate * scale for rate in prepared.base_rates], batch_size
