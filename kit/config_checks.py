"""The checks a competition's settings pass once their types are right (kit.config_build checks those):
ranges, NaN and infinity, and combinations that cannot work. Each failure is a one-line `ConfigError`
naming the file, the key and what is allowed."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Any

from kit.config import LAYER_GROUPS, SECTIONS, TASK_METRICS, TTA_VIEW_COUNTS, Config, Stage
from kit.errors import ConfigError


def _check_range(
    file: Path, key: str, value: float, allowed: str, low=None, high=None, inclusive=True
) -> None:
    """One number within its range; NaN and infinity are never in range (TOML allows `nan` and `inf`)."""
    inside = math.isfinite(value) and (low is None or value > low or (inclusive and value == low))
    if not inside or (high is not None and value > high):
        raise ConfigError(f"{file}: '{key}' = {value} must be {allowed}")


# Pixels, square. A decoded-image cache holds size x size x 3 bytes a photo: 2048 px is 12.6 MB, so 10,000
# photos take 126 GB; beyond it decoding runs out of memory and the photos are skipped as unreadable.
MAX_IMAGE_SIZE = 2048
EXTENSION = re.compile(r"^\.[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*$")  # ".jpg", ".tif", ".nii.gz"


def validate(config: Config) -> None:
    """Every check of a built config: its sections, then each stage, then what no check above covers
    (a float key's NaN or infinity)."""
    _check_task(config)
    _check_data(config)
    _check_numbers(config)
    _check_tricks(config)
    for index, stage in enumerate(config.stages):
        _check_stage(config, index, stage)
    _check_image_sizes(config)
    _check_finite(config)


def _check_data(config: Config) -> None:
    """What the data settings name: an extension as file names end, columns that are not one another."""
    file, data, submission = config.path, config.data, config.submission
    if not EXTENSION.match(data.extension):
        name = data.extension.replace("\\", "/").rsplit("/", 1)[-1].strip(" *")
        example = Path(name).suffix or "." + (name.strip(".") or "jpg")  # "x.png": ".png"; "png": ".png"
        where = " (a path: it reaches outside the image folders)" if "/" in data.extension else ""
        raise ConfigError(
            f"{file}: 'data.extension' = {data.extension!r} must be the file names' ending with its dot"
            f"{where}, e.g. {example!r}"
        )
    if data.labels == "csv" and data.id_column == data.label_column:
        raise ConfigError(
            f"{file}: 'data.id_column' and 'data.label_column' both name the column {data.id_column!r}; "
            "set each to its own column of the labels CSV"
        )
    if submission.format != "probabilities" and submission.id_column == submission.label_column:
        raise ConfigError(
            f"{file}: 'submission.id_column' and 'submission.label_column' both name "
            f"{submission.id_column!r}; set each to its own column of the sample submission"
        )


def _check_image_sizes(config: Config) -> None:
    """Every size a cache is built at (training stages, prediction's views) at most MAX_IMAGE_SIZE."""
    file = config.path
    sizes = [("train.image_size", config.train.image_size)]
    sizes += [(f"stages[{i}].image_size", stage.image_size) for i, stage in enumerate(config.stages)]
    for key, size in sizes:
        if size is not None and size > MAX_IMAGE_SIZE:
            raise ConfigError(
                f"{file}: '{key}' = {size} px must be at most {MAX_IMAGE_SIZE} (a decoded cache holds "
                f"{size * size * 3 / 1e6:.0f} MB a photo at that size); e.g. 224, 384 or 512"
            )
    if config.predict_image_size() > MAX_IMAGE_SIZE:
        raise ConfigError(
            f"{file}: 'predict.image_scale' = {config.predict.image_scale} predicts at "
            f"{config.predict_image_size()} px (the last stage's size times the scale), more than "
            f"{MAX_IMAGE_SIZE}; lower it (e.g. 1.143) or the last stage's image_size"
        )


def _floats(value: Any, key: str) -> list[tuple[str, float]]:
    """Every float inside a section, stage or table, with its dotted key."""
    if dataclasses.is_dataclass(value):
        fields = dataclasses.fields(value)
        return [pair for item in fields for pair in _floats(getattr(value, item.name), f"{key}.{item.name}")]
    if isinstance(value, tuple):
        return [pair for item in value for pair in _floats(item, key)]
    return [(key, value)] if isinstance(value, float) else []


def _check_finite(config: Config) -> None:
    """No float key is NaN or infinite (TOML writes them `nan`, `inf`): the checks above cover most keys
    with their ranges; this covers every other, present and to come."""
    tables = [(name, getattr(config, name)) for name in SECTIONS]
    tables += [(f"stages[{index}]", stage) for index, stage in enumerate(config.stages)]
    for name, table in tables:
        for key, value in _floats(table, name):
            if not math.isfinite(value):
                raise ConfigError(f"{config.path}: '{key}' = {value} must be a finite number")


def _check_task(config: Config) -> None:
    """The metric, submission format and tricks fit the task."""
    file = config.path
    task, metric = config.competition.task, config.competition.metric
    if metric not in TASK_METRICS[task]:
        raise ConfigError(
            f"{file}: competition.metric = {metric!r} does not fit task = {task!r}; "
            f"choose {' or '.join(map(repr, TASK_METRICS[task]))}"
        )
    if task != "single_label" and config.submission.format != "label":
        raise ConfigError(
            f"{file}: task = {task!r} submits a label column: "
            "set submission.format = 'label' (or leave it out)"
        )
    if config.data.test_dir == ():
        raise ConfigError(f"{file}: 'data.test_dir' = [] names no folder; give one, or a list of them")
    if config.submission.format == "binary" and not config.submission.positive_class:
        raise ConfigError(f"{file}: submission.format = 'binary' needs 'submission.positive_class'")


def _check_numbers(config: Config) -> None:
    """Each section's numbers within their ranges."""
    file = config.path
    for key in ("image_size", "batch_size", "epochs", "folds"):
        if getattr(config.train, key) < 1 or (key == "folds" and config.train.folds < 2):
            raise ConfigError(f"{file}: 'train.{key}' = {getattr(config.train, key)} is too small")
    _check_range(file, "train.lr", config.train.lr, "a positive number, e.g. 1e-3", low=0, inclusive=False)
    _check_range(file, "train.weight_decay", config.train.weight_decay, "0 or more, e.g. 0.01", low=0)
    _check_range(file, "train.seed", config.train.seed, "0 to 2**32 - 1", low=0, high=2**32 - 1)
    _check_range(file, "train.num_workers", config.train.num_workers, "-1 (automatic) or more", low=-1)
    _check_range(file, "data.max_bad_images", config.data.max_bad_images, "0 or more", low=0)
    _check_range(file, "predict.tta", config.predict.tta, "0 (no TTA) or more", low=0)
    _check_range(
        file, "train.stop_patience", config.train.stop_patience, "0 (stop at the first) or more", low=0
    )
    distinct = TTA_VIEW_COUNTS[config.augment.preset]
    if config.predict.tta > distinct:
        raise ConfigError(
            f"{file}: 'predict.tta' = {config.predict.tta}: augment.preset = {config.augment.preset!r} has "
            f"{distinct} distinct views beside the plain one (more repeat them); give 0 to {distinct}"
        )
    if not 0.25 <= config.predict.image_scale <= 4:  # NaN too
        raise ConfigError(
            f"{file}: 'predict.image_scale' = {config.predict.image_scale} must be between 0.25 and 4 "
            "(a multiple of the last stage's size, e.g. 1.143 for 256 px after 224; 1: the same size)"
        )
    _check_range(file, "predict.snapshot_ensemble", config.predict.snapshot_ensemble, "1 or more", low=1)
    _check_range(
        file,
        "submission.clip_epsilon",
        config.submission.clip_epsilon,
        "0 to 0.5, e.g. 1e-15",
        low=0,
        high=0.5,
    )
    if not (config.data.max_aspect == 0 or 1 <= config.data.max_aspect < math.inf):  # NaN too
        raise ConfigError(
            f"{file}: 'data.max_aspect' = {config.data.max_aspect} must be 0 (no cap) or 1 or more, e.g. 1.5"
        )
    for key in ("max_package_mb", "poll_seconds", "timeout_minutes"):
        if not getattr(config.notebook, key) > 0:  # NaN too
            raise ConfigError(f"{file}: 'notebook.{key}' = {getattr(config.notebook, key)} must be positive")
    if config.notebook.hidden_test_images < 0:
        raise ConfigError(
            f"{file}: 'notebook.hidden_test_images' = {config.notebook.hidden_test_images} must be 0 (the "
            "public test count) or the hidden test set's size"
        )
    for key in ("label_smoothing", "ema_decay", "layer_decay"):
        if not 0 <= getattr(config.train, key) < 1:
            raise ConfigError(
                f"{file}: 'train.{key}' = {getattr(config.train, key)} must be in [0, 1) (0: off)"
            )


def _check_tricks(config: Config) -> None:
    """Label smoothing and the weights' average fit the task and each other."""
    file, task = config.path, config.competition.task
    if config.train.label_smoothing and task != "single_label":
        raise ConfigError(
            f"{file}: train.label_smoothing spreads a class's probability over the others: task = "
            f"{task!r} has no classes to spread over; remove it (single_label only)"
        )
    if config.predict.weights == "ema" and not config.train.ema_decay:
        raise ConfigError(f"{file}: predict.weights = 'ema' needs train.ema_decay (e.g. 0.999)")


def _check_stage(config: Config, index: int, stage: Stage) -> None:
    """One [[stages]] table: its sizes, rates, cycles, frozen groups and tricks."""
    where = f"{config.path}: stages[{index}] ({stage.name})"
    task = config.competition.task
    for key in ("image_size", "batch_size"):
        value = getattr(stage, key)
        if value is not None and value < 1:
            raise ConfigError(f"{where}: {key} = {value} must be 1 or more (or left out: train.{key})")
    for rate in stage.lr if isinstance(stage.lr, tuple) else [stage.lr]:
        if rate is not None and not (math.isfinite(rate) and rate > 0):
            raise ConfigError(f"{where}: lr = {rate} must be a positive number, e.g. 1e-3")
    if not stage.cycle_mult >= 1 or not math.isfinite(stage.cycle_mult):
        raise ConfigError(f"{where}: cycle_mult = {stage.cycle_mult} must be >= 1")
    if stage.n_cycles < 1 or not (0 < stage.cycle_len < math.inf):
        raise ConfigError(f"{where}: n_cycles must be >= 1 and cycle_len > 0")
    if not -LAYER_GROUPS <= stage.freeze_to < LAYER_GROUPS:
        raise ConfigError(f"{where}: freeze_to = {stage.freeze_to} must be in -3..2 (3 layer groups)")
    if stage.precompute and not stage.trains_head_only:
        raise ConfigError(f"{where}: precompute needs a frozen body: set freeze_to = -1")
    if stage.warmup is not None and not 0 <= stage.warmup < 1:
        raise ConfigError(f"{where}: warmup = {stage.warmup} must be in [0, 1) (of the first cycle)")
    if isinstance(stage.lr, tuple) and len(stage.lr) != LAYER_GROUPS:
        raise ConfigError(
            f"{where}: lr has {len(stage.lr)} values; give one, or {LAYER_GROUPS} (early, late, head)"
        )
    if isinstance(stage.lr, tuple) and config.train.layer_decay:
        raise ConfigError(
            f"{where}: with train.layer_decay the rates fall layer by layer from the head's: give one lr"
        )
    mixing = (stage.mixup, stage.cutmix, stage.mix_off_epochs)
    if not all(0 <= value < math.inf for value in mixing) or not 0 <= stage.mix_prob <= 1:
        raise ConfigError(f"{where}: mixup, cutmix, mix_off_epochs must be >= 0 and mix_prob in [0, 1]")
    if (stage.mixup or stage.cutmix or stage.pseudo_label is not None) and task != "single_label":
        raise ConfigError(
            f"{where}: mixup, cutmix and pseudo_label mix or pick classes: task = {task!r} has none; "
            "remove them (single_label only)"
        )
    if (stage.mixup or stage.cutmix) and stage.precompute:
        raise ConfigError(
            f"{where}: mixup/cutmix mix images, and a precompute stage trains on fixed features: "
            "set them in a stage without precompute"
        )
    if stage.pseudo_label is not None:
        _check_pseudo_label(where, index, stage)


def _check_pseudo_label(where: str, index: int, stage: Stage) -> None:
    if stage.precompute:
        raise ConfigError(f"{where}: pseudo_label needs images (test images join): not with precompute")
    if stage.mixup or stage.cutmix:
        raise ConfigError(
            f"{where}: pseudo_label weights each row's loss, which timm's Mixup cannot mix: "
            "put mixup/cutmix in another stage"
        )
    if not (0 < stage.pseudo_label.threshold <= 1 and 0 < stage.pseudo_label.weight <= 1):
        raise ConfigError(f"{where}: pseudo_label threshold and weight must be in (0, 1]")
    if index == 0:
        raise ConfigError(f"{where}: pseudo_label needs an earlier stage to train the model that labels")
