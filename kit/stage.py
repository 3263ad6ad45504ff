"""A recipe stage made ready to train: its image size, batch size, learning rates, frozen layer groups,
optimizer and inputs (augmented cached images, or precomputed body features), and one training step.

kit.train runs the loop over these; the LR finder and the batch-size probe use them too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional
from torch.utils.data import DataLoader, TensorDataset

from kit import augment, cache, distributed, models, predict
from kit.config import LAYER_GROUPS, Config, Stage
from kit.data import LabelTable
from kit.loader import BatchDataset, make_loader, worker_count
from kit.runs import interim_dir, require_download


def stage_image_size(config: Config, stage: Stage) -> int:
    return stage.image_size or config.train.image_size


def stage_batch_size(config: Config, stage: Stage) -> int:
    """Batch size for the stage: as given, or scaled with the pixel count so memory stays about the same."""
    if stage.batch_size:
        return stage.batch_size
    scale = (config.train.image_size / stage_image_size(config, stage)) ** 2
    return max(8, min(4 * config.train.batch_size, int(config.train.batch_size * scale) // 8 * 8))


def stage_learning_rates(config: Config, stage: Stage) -> list[float]:
    """One learning rate per layer group (early body, late body, head)."""
    if isinstance(stage.lr, tuple):
        return list(stage.lr)
    return [stage.lr or config.train.lr] * LAYER_GROUPS


def make_optimizer(config: Config, groups: list[dict]) -> torch.optim.Optimizer:
    fused = torch.cuda.is_available()  # one kernel for all parameters instead of one per tensor
    if config.train.optimizer == "sgd":
        return torch.optim.SGD(groups, momentum=0.9, nesterov=True, weight_decay=config.train.weight_decay)
    return torch.optim.AdamW(groups, weight_decay=config.train.weight_decay, fused=fused or None)


@dataclass
class FoldState:
    """What one fold's stages share: the model, its data, and where to write."""

    model: nn.Module
    labels: LabelTable
    train_rows: np.ndarray
    valid_rows: np.ndarray
    fold_dir: Path
    meta: dict
    history: list
    best_score: float | None = None
    snapshots_taken: int = 0
    fold: int = 0
    resume: dict | None = None  # resume.pt's contents when continuing an interrupted fold


@dataclass
class StageData:
    """Everything one stage's loop needs: what to call, on which batches, at which learning rates."""

    forward: nn.Module  # the whole model, or only its head when training on precomputed features
    optimizer: torch.optim.Optimizer
    base_rates: list[float]
    train_batches: DataLoader
    valid_inputs: torch.Tensor | np.ndarray  # features, or cached uint8 images
    valid_targets: np.ndarray
    image_size: int
    batch_size: int
    images_are_raw: bool  # uint8 images to normalise on the device, not features
    generator: torch.Generator  # the shuffling order's source, reseeded every epoch
    transform: object | None = None  # the albumentations Compose, reseeded every epoch
    train_forward: nn.Module | None = None  # `forward` as training steps call it (DDP, compiled); None: forward

    def __post_init__(self):
        if self.train_forward is None:
            self.train_forward = self.forward


def prepare_stage(config: Config, stage_index: int, state: FoldState) -> StageData:
    """Freeze the right layer groups, build the optimizer, and the stage's inputs."""
    stage = config.stages[stage_index]
    model, labels = state.model, state.labels
    image_size, batch_size = stage_image_size(config, stage), stage_batch_size(config, stage)
    images, _ = training_images(config, labels, image_size)
    models.freeze_to(model, stage.freeze_to)
    base_rates = stage_learning_rates(config, stage)
    optimizer = make_optimizer(config, models.parameter_groups(model, base_rates))
    generator = torch.Generator()
    if stage.precompute:  # the body is frozen and sees no augmentation: its output never changes
        with distributed.main_first():
            features = cache.body_features_cached(model, images, f"{config.train.model}-{image_size}px-{len(images)}", interim_dir(config), batch_size)
        train_set = TensorDataset(torch.from_numpy(features[state.train_rows]), torch.from_numpy(labels.targets[state.train_rows]))
        return StageData(
            model.get_classifier(), optimizer, base_rates, make_loader(train_set, batch_size, True, generator, 0),
            torch.from_numpy(features[state.valid_rows]), labels.targets[state.valid_rows], image_size, batch_size, False,
            generator,
        )
    transform = augment.train_transform(config, image_size) if stage.augment else None
    train_set = BatchDataset(images, labels.targets, state.train_rows, transform)
    loader = make_loader(train_set, batch_size, True, generator, worker_count(config.train.num_workers))
    return StageData(
        model, optimizer, base_rates, loader, images[state.valid_rows], labels.targets[state.valid_rows],
        image_size, batch_size, True, generator, transform,
    )


def train_step(data: StageData, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """One optimizer step; returns the loss as a device tensor (no host sync)."""
    target = predict.device()
    targets = targets.to(target, non_blocking=True)
    if data.images_are_raw:
        inputs = predict.to_input(inputs, model.pretrained_cfg["mean"], model.pretrained_cfg["std"], target)
    with torch.autocast(target.type, dtype=torch.bfloat16, enabled=target.type == "cuda"):
        loss = functional.cross_entropy(data.train_forward(inputs.to(target)), targets)
    data.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    data.optimizer.step()
    return loss.detach()


def training_images(config: Config, labels: LabelTable, image_size: int) -> tuple[np.ndarray, dict]:
    require_download(config)
    with distributed.main_first():  # rank 0 builds the cache, the other ranks then read it
        return cache.image_cache(labels.paths, image_size, interim_dir(config), "train")
