"""A recipe stage made ready to train: its image size, batch size, learning rates, frozen layer groups,
optimizer and inputs (augmented cached images, or precomputed body features), and one training step.

kit.train.loop runs the loop over these; the LR finder and the batch-size probe use them too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from timm.data import Mixup
from timm.data.mixup import mixup_target
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from kit import distributed, models
from kit.config import Config
from kit.data import augment
from kit.data.images import cache_side, photo_cache
from kit.data.labels import LabelTable
from kit.data.loader import BatchDataset, JoinedImages, make_loader, worker_count
from kit.device import autocast, backward_and_step, device, gpu_paths, resolve_precision, to_input
from kit.paths import interim_dir, require_download
from kit.run import FoldFolder
from kit.tasks import Task
from kit.train.features import body_features_cached


def make_optimizer(config: Config, groups: list[dict]) -> torch.optim.Optimizer:
    """AdamW fused on the GPU paths (one kernel for all parameters instead of several per tensor); elsewhere,
    and for SGD, torch's default (foreach on a GPU: a few kernels over lists of tensors)."""
    if config.train.optimizer == "sgd":
        return torch.optim.SGD(groups, momentum=0.9, nesterov=True, weight_decay=config.train.weight_decay)
    fused = gpu_paths(device()) or None  # None: torch chooses
    return torch.optim.AdamW(groups, weight_decay=config.train.weight_decay, fused=fused)


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
    resume: dict | None = None  # resume.pt's contents when continuing an interrupted fold (kit.train.resume)

    @property
    def folder(self) -> FoldFolder:
        """The fold's folder in the run, whose paths kit.run owns."""
        return FoldFolder(self.fold_dir, self.fold)


@dataclass(frozen=True)
class PseudoLabels:
    """Test images a fold's own model labelled confidently (kit.train.pseudo_labels), for one stage."""

    images: np.ndarray  # the chosen test images, cached uint8 at the stage's size
    targets: np.ndarray  # class index per image
    weight: float  # loss weight of each (a real training image counts 1)


@dataclass
class PreparedStage:
    """Everything one stage's loop needs: what to call, on which batches, at which learning rates."""

    module: nn.Module  # what the inputs go through: the whole model, or only its head on precomputed features
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
    train_module: nn.Module | None = None  # `module` as training steps call it (DDP, compiled); None: module
    task: Task = field(kw_only=True)  # the competition's kind (kit.tasks): its loss; no default
    mixup: Mixup | None = None  # timm's Mixup/CutMix when the stage mixes; the loop turns it off last
    precision: str = "auto"  # train.precision, resolved (kit.device.choose_precision)
    # fp16's loss scaler (kit.train.tricks.LossScaling hands in the fold's); None: no scaling (bf16, fp32)
    scaler: torch.amp.GradScaler | None = None

    def __post_init__(self):
        if self.train_module is None:
            self.train_module = self.module


def prepare_stage(
    config: Config, stage_index: int, state: FoldState, pseudo: PseudoLabels | None = None
) -> PreparedStage:
    """Freeze the right layer groups, build the optimizer, and the stage's inputs (with `pseudo`, the
    pseudo-labelled test images join the training rows)."""
    stage = config.stages[stage_index]
    model, labels = state.model, state.labels
    image_size, batch_size = config.stage_image_size(stage), config.stage_batch_size(stage)
    images, _ = training_images(config, labels, cache_side(image_size))
    models.freeze_to(model, stage.freeze_to)
    base_rates = config.stage_learning_rates(stage)
    if config.train.layer_decay:  # a rate per timm layer, falling from the head's
        head_rate, decay = base_rates[-1], config.train.layer_decay
        groups = models.layer_decay_groups(model, head_rate, decay, config.train.weight_decay)
        base_rates = models.layer_rates(model, head_rate, decay)
    else:
        groups = models.parameter_groups(model, base_rates)
    optimizer = make_optimizer(config, groups)
    generator = torch.Generator()
    # What the task's loss takes (e.g. a standardised number); single-label targets become soft (rows of
    # class weights) with label smoothing, and when pseudo-labelled rows join with their own weight.
    encoded = labels.task.encode(labels.targets)
    smoothing = config.train.label_smoothing  # single_label only (kit.config refuses it elsewhere)
    if smoothing and not stage.mixup and not stage.cutmix:  # timm's Mixup smooths what it mixes
        encoded = soft_targets(encoded, len(labels.classes), smoothing)
    if stage.precompute:  # the body is frozen and sees no augmentation: its output never changes
        with distributed.main_first():
            label = f"{config.train.model}-{image_size}px-{len(images)}"
            features = body_features_cached(
                model, images, label, interim_dir(config.name), batch_size, image_size
            )
        train_set = TensorDataset(
            torch.from_numpy(features[state.train_rows]), torch.from_numpy(encoded[state.train_rows])
        )
        return PreparedStage(
            model.get_classifier(),
            optimizer,
            base_rates,
            make_loader(train_set, batch_size, True, generator, 0),
            torch.from_numpy(features[state.valid_rows]),
            labels.targets[state.valid_rows],
            image_size,
            batch_size,
            False,
            generator,
            task=labels.task,
            precision=resolve_precision(config.train.precision),
        )
    transform = augment.train_transform(config, image_size, images.shape[1]) if stage.augment else None
    mixup = None
    if stage.mixup or stage.cutmix:  # single_label only: mixes class indices into soft targets
        mixup = Mixup(
            mixup_alpha=stage.mixup,
            cutmix_alpha=stage.cutmix,
            prob=stage.mix_prob,
            label_smoothing=smoothing,
            num_classes=len(labels.classes),
        )
    if pseudo is None:
        train_set = BatchDataset(images, encoded, state.train_rows, transform)
    else:  # soft targets: each row's (smoothed) one-hot times its weight, 1 or pseudo.weight
        classes = len(labels.classes)
        soft = soft_targets(np.concatenate([labels.targets, pseudo.targets]), classes, smoothing)
        soft[len(labels.targets) :] *= pseudo.weight
        added = len(labels.targets) + np.arange(len(pseudo.targets))
        rows = np.concatenate([state.train_rows, added])
        train_set = BatchDataset(JoinedImages(images, pseudo.images), soft, rows, transform)
    loader = make_loader(train_set, batch_size, True, generator, worker_count(config.train.num_workers))
    return PreparedStage(
        model,
        optimizer,
        base_rates,
        loader,
        images[state.valid_rows],
        labels.targets[state.valid_rows],
        image_size,
        batch_size,
        True,
        generator,
        transform,
        task=labels.task,
        mixup=mixup,
        precision=resolve_precision(config.train.precision),
    )


def train_step(
    prepared: PreparedStage, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """One optimizer step; returns the loss as a device tensor (no host sync)."""
    compute = device()
    prepared.optimizer.zero_grad(
        set_to_none=True
    )  # first: the last step's gradients freed before the forward
    targets = targets.to(compute, non_blocking=True)
    if prepared.images_are_raw:
        mean, std = model.pretrained_cfg["mean"], model.pretrained_cfg["std"]
        inputs = to_input(inputs, mean, std, compute, prepared.image_size)
    inputs, targets = mix(prepared, inputs.to(compute), targets)
    with autocast(compute, prepared.precision):
        loss = prepared.task.loss(prepared.train_module(inputs), targets)
    backward_and_step(loss, prepared.optimizer, prepared.scaler)  # fp16: scaled, an overflow's step skipped
    return loss.detach()


def mix(
    prepared: PreparedStage, inputs: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup/CutMix by timm when the stage mixes: mixed images and soft targets (rows sum to 1).

    While the loop has switched mixing off (`mixup_enabled`, the last mix_off_epochs) the images pass
    unmixed with the same (smoothed) soft targets. Unchanged when the stage does not mix.
    """
    if prepared.mixup is None:
        return inputs, targets
    if len(inputs) % 2:  # timm mixes image i with image n-1-i: an odd batch (a shard's last) stays unmixed
        mixer = prepared.mixup
        return inputs, mixup_target(targets, mixer.num_classes, smoothing=mixer.label_smoothing)
    return prepared.mixup(inputs, targets)


def soft_targets(targets: np.ndarray, classes: int, smoothing: float) -> np.ndarray:
    """Class indices as rows of class weights (float32, rows sum to 1): 1 - smoothing + smoothing / classes
    on the class, smoothing / classes elsewhere, as timm's Mixup makes them (torch's label_smoothing)."""
    return mixup_target(torch.from_numpy(targets), classes, smoothing=smoothing).numpy().astype(np.float32)


def training_images(config: Config, labels: LabelTable, side: int) -> tuple[np.ndarray, dict]:
    """The training photos cached whole as `side` x `side` squares: for training at a size, a little
    larger than it (kit.data.images.cache_side)."""
    require_download(config.name)
    with distributed.main_first():  # rank 0 builds the cache, the other ranks then read it
        return photo_cache(config, labels.paths, side, "train")
