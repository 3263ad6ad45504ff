"""A competition's settings: `competitions/<name>/competition.toml` loaded into typed, frozen dataclasses.

Every key has a type and a default here, stated once. An unknown key, a value of the wrong type or an
impossible combination is a one-line `ConfigError` naming the file, the key and what is allowed.
`--set key=value` overrides go through exactly the same checks.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import click
import tomllib

from kit import paths

# The names kit.metrics.METRICS registers (a test keeps the two equal); here, so that loading a config
# needs no scikit-learn.
MetricName = Literal["accuracy", "log_loss", "f1_micro", "f2_samples", "rmse", "qwk"]
TaskName = Literal["single_label", "multi_label", "regression", "ordinal"]  # kit.tasks.TASKS
# Which metrics fit which task; the first is the task's default metric.
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "single_label": ("log_loss", "accuracy", "f1_micro"),
    "multi_label": ("f2_samples",),
    "regression": ("rmse",),
    "ordinal": ("qwk",),
}
LabelSource = Literal["csv", "filenames", "folders"]
SubmissionFormat = Literal["probabilities", "binary", "label"]
AugmentPreset = Literal["side_on", "top_down", "none"]  # kit.data.augment.PRESETS
PaddingMode = Literal["reflect", "constant", "edge"]  # kit.data.augment.PADDING_MODES
Optimizer = Literal["adamw", "sgd"]
ScheduleKind = Literal["sgdr", "one_cycle"]
Recipe = Literal["full", "quick"]
PredictMean = Literal["probabilities", "logits"]  # kit.predict.selection.average
PredictWeights = Literal["snapshots", "last", "best", "ema"]
Precision = Literal["auto", "bf16", "fp16", "fp32"]  # kit.device.PRECISIONS
Accelerator = Literal["auto", "t4", "t4x2", "cpu"]  # kit.kaggle.budget.ACCELERATORS
SubmissionKind = Literal["csv", "notebook"]  # notebook: a code competition (`kit notebook --submit`)
LAYER_GROUPS = 3  # early body, late body, head: the lesson's three learning rates
DEFAULT_WARMUP = 0.05  # of the first cycle, in stages that train body layers (fastai 0.7: 1/20)


class ConfigError(click.ClickException):
    """A user-caused configuration problem, shown as one line without a traceback."""


@dataclass(frozen=True)
class CompetitionSection:
    kaggle: str = ""  # Kaggle slug, e.g. "dog-breed-identification"; empty when hooks.py builds the data
    # What a label is: one class, space-separated tags, a number, or an integer grade (kit.tasks)
    task: TaskName = "single_label"
    # A name in kit.metrics.METRICS fitting the task (TASK_METRICS; unset: the task's first); decides the
    # best checkpoint, the decisions fitted on OOF and the submission's file name
    metric: MetricName = "log_loss"
    description: str = ""
    # "csv": upload a file (`kit submit`); "notebook": a code competition, where a notebook predicts on
    # Kaggle with the internet off (`kit notebook --submit`)
    submission: SubmissionKind = "csv"


@dataclass(frozen=True)
class DataSection:
    labels: LabelSource = (
        "csv"  # where labels come from: "csv", "filenames" (cat.12.jpg) or "folders" (train/cat/)
    )
    labels_csv: str = "labels.csv"  # relative to data/raw/<name>; used when labels = "csv"
    id_column: str = "id"
    label_column: str = "label"
    # For labels = "filenames": a regex with a named group `label`, matched on the file stem (the image's id).
    filename_pattern: str = r"^(?P<label>[^.]+)\.(?P<id>.+)$"
    train_dir: str = "train"
    test_dir: str | tuple[str, ...] = "test"  # or several folders, e.g. ["test-jpg", "test-jpg-additional"]
    extension: str = ".jpg"  # image files' extension, with the dot
    sample_submission: str = "sample_submission.csv"
    max_bad_images: int = 10  # unreadable training images skipped (and reported) up to this count
    # The cache squishes the photo into a square; a longer side beyond max_aspect times the shorter one is
    # centre-cropped first. 0: no cap (the whole photo squished), 1: the centre square. 1.33 keeps a 4:3
    # photo whole and squishes no more than that: by 5-fold CV on real dog-breed photos it beat no cap
    # (README, "Whole photos"; scripts/compare_aspect.py).
    max_aspect: float = 1.33


@dataclass(frozen=True)
class SubmissionSection:
    # "probabilities": one column per class; "binary": one P(positive); "label": the class, the tags, the
    # number or the grade (the only format of tasks other than single_label, and their default)
    format: SubmissionFormat = "probabilities"
    id_column: str = "id"
    label_column: str = "label"  # the column holding P(positive) or the class, for binary and label formats
    positive_class: str = ""  # for format = "binary": the class whose probability is submitted
    clip_epsilon: float = 1e-15  # log-loss only: probabilities clipped to [eps, 1 - eps] before upload


@dataclass(frozen=True)
class AugmentSection:
    preset: AugmentPreset = "side_on"  # "side_on" (photos), "top_down" (satellite, microscopy) or "none"
    padding_mode: PaddingMode = "reflect"  # how rotations fill the corners: "reflect", "constant", "edge"
    # Extra albumentations transforms, e.g. [{name = "Blur", blur_limit = 3, p = 0.2}]
    transforms: tuple[dict, ...] = ()


@dataclass(frozen=True)
class TrainSection:
    model: str = "efficientnet_lite0"  # any timm model name
    pretrained: bool = True  # ImageNet weights; efficientnet_lite0's ship offline with the kit
    image_size: int = 224  # pixels, square; a stage may override it (progressive resizing)
    batch_size: int = 64  # images per step (per GPU)
    epochs: int = 3  # used when no [[stages]] are given: one stage of this many epochs
    lr: float = 1e-3  # peak learning rate, for batch_size images per step
    optimizer: Optimizer = "adamw"
    weight_decay: float = 0.01
    schedule: ScheduleKind = "sgdr"  # "sgdr" (cosine with warm restarts) or "one_cycle" (warm-up then cosine)
    folds: int = 5  # stratified K-fold; `--fold all` trains every one
    seed: int = 42
    num_workers: int = -1  # DataLoader workers; -1: all cores on a GPU box, 0 (in-process) on a CPU
    compile: bool = False  # torch.compile the training step's model (GPU only: slow to compile on a CPU)
    # "auto": bf16 on GPUs with bf16 tensor cores (compute capability 8.0+), fp16 with a loss scaler on 7.x
    # (Kaggle's T4: bf16 is emulated there, many times slower), fp32 below and on a CPU (kit.device)
    precision: Precision = "auto"
    lr_find: bool = False  # run the LR finder before the first stage and print its suggestion
    # "quick": only the recipe's head stages (frozen body), with the competition's TTA: a first submission
    # in minutes (`make train COMP=... SET="recipe=quick"`). "full": every stage.
    recipe: Recipe = "full"
    # Tricks from recent winning solutions, all off by default (timm's implementations):
    label_smoothing: float = 0.0  # single-label targets: 1 - s on the class, s spread over all classes
    ema_decay: float = 0.0  # exponential moving average of the weights per step (e.g. 0.999); 0: off
    # Layer-wise LR decay (timm's layer grouping): each layer's rate is the head's times this per layer
    # below it (e.g. 0.75), instead of the three groups' rates; 0: off (three groups)
    layer_decay: float = 0.0


@dataclass(frozen=True)
class PredictSection:
    tta: int = 0  # test-time augmentation: number of augmented views added to the plain one
    snapshot_ensemble: int = 3  # prediction averages the last N snapshots (when stages save them)
    # "snapshots", "last", "best" (by validation metric) or "ema" (train.ema_decay's average, at the last
    # stage's snapshots when it takes them, else at the end)
    weights: PredictWeights = "snapshots"
    # Choose on OOF which of those weight files and TTA views predict (kit.predict.selection): what does
    # not pay is not computed for the test set. A costlier choice must gain at least min_gain on OOF.
    select: bool = True
    min_gain: float = 0.002
    # The test and OOF views' size, as a multiple of the last stage's size (rounded to whole pixels).
    # Random crops magnify a photo's subject in training, so a model trained on crops sees it at that scale
    # in a view a little larger than its training size ("FixRes", Touvron et al. 2019): 1.143 predicts at
    # 256 px after training at 224. A multiple, not pixels, so that a changed training size carries it.
    image_scale: float = 1.0
    # How a fold's views and weight files are averaged: "probabilities" (their arithmetic mean) or "logits"
    # (the mean on the scale the head outputs: a renormalised geometric mean of class probabilities). With
    # a head-only model beside the fine-tuned one (a stage's joins_prediction) the logit mean scored
    # cats-vs-dogs-dev's OOF and answer key better on 4 seeds of 4, but not dog-breeds' OOF (README).
    mean: PredictMean = "probabilities"
    precision: Precision = "auto"  # as train.precision, for OOF and test predictions


@dataclass(frozen=True)
class PseudoLabel:
    """Pseudo-labels: test images the fold's own model predicts confidently join the stage's training rows."""

    threshold: float = 0.95  # the calibrated probability of the predicted class must reach this
    weight: float = 0.5  # each pseudo-labelled image counts this much in the loss (a real one counts 1)


@dataclass(frozen=True)
class NotebookSection:
    """`kit notebook`: the run packaged as a private Kaggle dataset and predicted by a Kaggle notebook."""

    gpu: bool = True  # the notebook runs on a GPU (`--gpu/--no-gpu` overrides)
    max_package_mb: float = 2000.0  # refuse to upload a package (wheel, weights, config) larger than this
    poll_seconds: float = 15.0  # how often the notebook's status is asked for while it runs
    timeout_minutes: float = 540.0  # stop waiting after this long (Kaggle stops a notebook after 9 h)
    # The Kaggle machine the notebook runs on: "t4" (one T4), "t4x2" (two), "cpu" (2 cores, no GPU);
    # "auto": t4x2 where notebook.gpu allows a GPU, else cpu. Written as kernel-metadata's machine_shape.
    accelerator: Accelerator = "auto"
    # Images in the hidden test set the notebook predicts on Kaggle (often more than the public test
    # folder: the competition's Data or Code Requirements page says); 0: the public test count. The time
    # budget before a push scales to it.
    hidden_test_images: int = 0


@dataclass(frozen=True)
class Stage:
    name: str = "train"
    # Layer groups >= freeze_to are trained: 0 trains all, -1 (or 2) trains the head only ("frozen").
    freeze_to: int = 0
    precompute: bool = False  # train the head on cached body features (needs freeze_to = -1, no augment)
    image_size: int | None = None  # None: train.image_size
    batch_size: int | None = None  # None: train.batch_size scaled by (train.image_size / image_size)^2
    lr: float | tuple[float, ...] | None = None  # one value, or one per layer group (early, late, head)
    n_cycles: int = 1
    cycle_len: float = 1.0  # epochs in the first cycle
    cycle_mult: float = 1.0  # each cycle is this many times longer than the previous one
    snapshots: bool = False  # save the weights at the end of every cycle
    # Keep this stage's final weights (fold-K/stage-S.pt, S its index) as one more weight file that predicts
    # beside the last stage's: e.g. the head trained on frozen ImageNet features, a cautious second opinion
    # for the fine-tuned network. Selection on OOF may still drop it (predict.select). No effect on the last.
    joins_prediction: bool = False
    augment: bool = True  # use the [augment] transforms in this stage
    # Warm-up: this fraction of the first cycle climbs from lr/100 to lr (fastai 0.7 started each fit
    # at lr/100 for 1/20 of the first cycle). None: 0.05 when body layers train
    # (freeze_to != -1: unfreezing at full rate throws the validation loss up), 0 for head-only stages.
    warmup: float | None = None
    # Mixup / CutMix (timm.data.Mixup, soft-target loss): Beta(alpha, alpha) mixing strengths; 0: off
    mixup: float = 0.0  # blend two images (e.g. 0.2)
    cutmix: float = 0.0  # paste a box of another image (e.g. 1.0); with mixup, each batch picks one
    mix_prob: float = 1.0  # share of batches mixed
    mix_off_epochs: float = 0.0  # the stage's last epochs train on unmixed images
    pseudo_label: PseudoLabel | None = None  # e.g. {threshold = 0.95, weight = 0.5}; None: off


@dataclass(frozen=True)
class Config:
    name: str
    path: Path  # the competition.toml this came from
    competition: CompetitionSection = field(default_factory=CompetitionSection)
    data: DataSection = field(default_factory=DataSection)
    submission: SubmissionSection = field(default_factory=SubmissionSection)
    augment: AugmentSection = field(default_factory=AugmentSection)
    train: TrainSection = field(default_factory=TrainSection)
    predict: PredictSection = field(default_factory=PredictSection)
    notebook: NotebookSection = field(default_factory=NotebookSection)
    stages: tuple[Stage, ...] = ()

    @property
    def directory(self) -> Path:
        return self.path.parent

    def stage_epochs(self, stage: Stage) -> float:
        return total_epochs(stage.n_cycles, stage.cycle_len, stage.cycle_mult)

    def stage_image_size(self, stage: Stage) -> int:
        return stage.image_size or self.train.image_size

    def predict_image_size(self) -> int:
        """The size of prediction's views (OOF and test): the last stage's size times predict.image_scale."""
        return max(1, round(self.stage_image_size(self.stages[-1]) * self.predict.image_scale))

    def stage_batch_size(self, stage: Stage) -> int:
        """As given, or train.batch_size scaled with the pixel count so memory stays about the same."""
        if stage.batch_size:
            return stage.batch_size
        scale = (self.train.image_size / self.stage_image_size(stage)) ** 2
        return max(8, min(4 * self.train.batch_size, int(self.train.batch_size * scale) // 8 * 8))

    def stage_warmup(self, stage: Stage) -> float:
        """The fraction of the stage's first cycle spent warming up (see Stage.warmup)."""
        if stage.warmup is not None:
            return stage.warmup
        head_only = stage.freeze_to % LAYER_GROUPS == LAYER_GROUPS - 1
        return 0.0 if head_only else DEFAULT_WARMUP

    def stage_learning_rates(self, stage: Stage) -> list[float]:
        """One learning rate per layer group (early body, late body, head), for stage_batch_size images."""
        if isinstance(stage.lr, tuple):
            return list(stage.lr)
        return [stage.lr or self.train.lr] * LAYER_GROUPS

    def to_dict(self) -> dict[str, Any]:
        result = dataclasses.asdict(self)
        result["path"] = str(self.path)
        return result


SECTIONS = {
    "competition": CompetitionSection,
    "data": DataSection,
    "submission": SubmissionSection,
    "augment": AugmentSection,
    "train": TrainSection,
    "predict": PredictSection,
    "notebook": NotebookSection,
}


def total_epochs(n_cycles: int, cycle_len: float, cycle_mult: float) -> float:
    """Epochs in n SGDR cycles: cycle_len * (1 + mult + mult^2 + ...)."""
    return sum(cycle_len * cycle_mult**index for index in range(n_cycles))


def _matches(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return value in typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, option) for option in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is tuple:
        item_type = typing.get_args(annotation)[0]
        return isinstance(value, (list, tuple)) and all(_matches(item, item_type) for item in value)
    return isinstance(value, annotation)


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is Literal:
        return "one of " + ", ".join(typing.get_args(annotation))
    return str(annotation).replace("typing.", "").replace("<class '", "").replace("'>", "")


# Keys that moved to another section: older TOMLs and run folders name them where they were.
MOVED = {
    "train.tta": "predict.tta",
    "train.snapshot_ensemble": "predict.snapshot_ensemble",
    "train.predict_weights": "predict.weights",
}


def _nested_dataclass(annotation: Any) -> type | None:
    """The dataclass a key holds as a table (e.g. Stage.pseudo_label), else None."""
    options = typing.get_args(annotation) or (annotation,)
    return next((option for option in options if dataclasses.is_dataclass(option)), None)


def _build(cls: type, table: Any, where: str, file: Path) -> Any:
    """Make a frozen dataclass from a TOML table, refusing unknown keys and wrong types."""
    if not isinstance(table, dict):
        raise ConfigError(f"{file}: [{where}] must be a table of keys")
    hints = typing.get_type_hints(cls)
    allowed = [item.name for item in dataclasses.fields(cls)]
    values = {}
    for key, value in table.items():
        if f"{where}.{key}" in MOVED:
            section, name = MOVED[f"{where}.{key}"].split(".")
            raise ConfigError(
                f"{file}: '{where}.{key}' has moved: write it as {name} = ... under [{section}]"
            )
        if key not in allowed:
            raise ConfigError(f"{file}: unknown key '{where}.{key}'; allowed keys: {', '.join(allowed)}")
        nested = _nested_dataclass(hints[key])
        if nested is not None and isinstance(value, dict):
            values[key] = _build(nested, value, f"{where}.{key}", file)
            continue
        if not _matches(value, hints[key]):
            wanted = _type_name(hints[key])
            verb = "is not" if wanted.startswith("one of") else "should be"
            raise ConfigError(f"{file}: '{where}.{key}' = {value!r} {verb} {wanted}")
        if isinstance(value, list):
            value = tuple(value)
        if hints[key] is float and isinstance(value, int):
            value = float(value)
        values[key] = value
    return cls(**values)


def _check_range(
    file: Path, key: str, value: float, allowed: str, low=None, high=None, inclusive=True
) -> None:
    """One number within its range; NaN and infinity are never in range (TOML allows `nan` and `inf`)."""
    inside = math.isfinite(value) and (low is None or value > low or (inclusive and value == low))
    if not inside or (high is not None and value > high):
        raise ConfigError(f"{file}: '{key}' = {value} must be {allowed}")


def _validate(config: Config) -> None:
    """Cross-field checks that types alone cannot express."""
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
    for key in ("image_size", "batch_size", "epochs", "folds"):
        if getattr(config.train, key) < 1 or (key == "folds" and config.train.folds < 2):
            raise ConfigError(f"{file}: 'train.{key}' = {getattr(config.train, key)} is too small")
    _check_range(file, "train.lr", config.train.lr, "a positive number, e.g. 1e-3", low=0, inclusive=False)
    _check_range(file, "train.weight_decay", config.train.weight_decay, "0 or more, e.g. 0.01", low=0)
    _check_range(file, "train.seed", config.train.seed, "0 to 2**32 - 1", low=0, high=2**32 - 1)
    _check_range(file, "train.num_workers", config.train.num_workers, "-1 (automatic) or more", low=-1)
    _check_range(file, "data.max_bad_images", config.data.max_bad_images, "0 or more", low=0)
    _check_range(file, "predict.tta", config.predict.tta, "0 (no TTA) or more", low=0)
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
    if not (config.data.max_aspect == 0 or config.data.max_aspect >= 1):  # NaN too
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
    if config.train.label_smoothing and task != "single_label":
        raise ConfigError(
            f"{file}: train.label_smoothing spreads a class's probability over the others: task = "
            f"{task!r} has no classes to spread over; remove it (single_label only)"
        )
    if config.predict.weights == "ema" and not config.train.ema_decay:
        raise ConfigError(f"{file}: predict.weights = 'ema' needs train.ema_decay (e.g. 0.999)")
    for index, stage in enumerate(config.stages):
        where = f"{file}: stages[{index}] ({stage.name})"
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
        if stage.precompute and stage.freeze_to % LAYER_GROUPS != LAYER_GROUPS - 1:
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
            if stage.precompute:
                raise ConfigError(
                    f"{where}: pseudo_label needs images (test images join): not with precompute"
                )
            if stage.mixup or stage.cutmix:
                raise ConfigError(
                    f"{where}: pseudo_label weights each row's loss, which timm's Mixup cannot mix: "
                    "put mixup/cutmix in another stage"
                )
            if not (0 < stage.pseudo_label.threshold <= 1 and 0 < stage.pseudo_label.weight <= 1):
                raise ConfigError(f"{where}: pseudo_label threshold and weight must be in (0, 1]")
            if index == 0:
                raise ConfigError(
                    f"{where}: pseudo_label needs an earlier stage to train the model that labels"
                )


def parse_override(text: str) -> tuple[str, Any]:
    """'train.lr=3e-3' -> ('train.lr', 0.003); the value is read as TOML, else as a string."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: write key=value, e.g. --set train.epochs=2")
    key, raw_value = (part.strip() for part in text.split("=", 1))
    try:
        value = tomllib.loads(f"value = {raw_value}")["value"]
    except tomllib.TOMLDecodeError:
        value = raw_value
    return key, value


def _apply_override(raw: dict, key: str, value: Any, file: Path) -> None:
    parts = key.split(".")
    if parts == ["stages"]:  # a whole recipe, e.g. stages=[{cycle_len=2}]; [] means one plain stage
        raw["stages"] = value
        return
    if len(parts) == 1:  # a bare key: find its section
        owners = [
            name for name, cls in SECTIONS.items() if parts[0] in {f.name for f in dataclasses.fields(cls)}
        ]
        if len(owners) > 1:
            raise ConfigError(
                f"--set {key}: ambiguous; write {' or '.join(f'{owner}.{key}' for owner in owners)}"
            )
        if not owners:
            raise ConfigError(f"--set {key}: unknown key; write section.key, sections: {', '.join(SECTIONS)}")
        parts = [owners[0], parts[0]]
    if parts[0] == "stages" and len(parts) == 3 and parts[1].isdigit():
        stages = raw.get("stages", [])
        if int(parts[1]) >= len(stages):
            raise ConfigError(f"--set {key}: {file} has {len(stages)} stages")
        stages[int(parts[1])][parts[2]] = value
    elif len(parts) == 2 and parts[0] in SECTIONS:
        raw.setdefault(parts[0], {})[parts[1]] = value
    else:
        raise ConfigError(f"--set {key}: write section.key or stages.N.key; sections: {', '.join(SECTIONS)}")


def _read_toml(path: Path) -> dict:
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: malformed TOML: {error}") from None
    for key in (
        "name",
        "path",
    ):  # config_from_dict drops these (a run's config.json has them); a TOML may not
        if key in raw:
            raise ConfigError(
                f"{path}: unknown top-level key '{key}'; the competition's name is its folder's name"
            )
    return raw


def load_config(path: Path, overrides: typing.Sequence[str] = ()) -> Config:
    """Read, override and validate one competition.toml."""
    return config_from_dict(with_overrides(_read_toml(path), overrides, path), path)


def with_overrides(raw: dict, overrides: typing.Sequence[str], path: Path) -> dict:
    """A TOML-shaped dict (a competition.toml, or a run's saved config) with `--set` overrides applied."""
    for text in overrides:
        _apply_override(raw, *parse_override(text), path)
    return raw


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """{'train': {'lr': 1}, 'stages': [{'lr': 2}]} -> {'train.lr': 1, 'stages.0.lr': 2}.

    Other lists stay whole.
    """
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in flatten(item, f"{prefix}{key}.").items()}
    if isinstance(value, (list, tuple)) and value and all(isinstance(item, dict) and item for item in value):
        return {
            k: v for index, item in enumerate(value) for k, v in flatten(item, f"{prefix}{index}.").items()
        }
    return {prefix.rstrip("."): list(value) if isinstance(value, tuple) else value}


def changed_settings(config: Config) -> list[tuple[str, Any, Any]]:
    """Every resolved key whose value is not the kit's default, as (key, value, default); a stage's keys are
    compared with a default Stage's (`stages.N.mixup` against Stage().mixup)."""
    defaults = flatten({name: dataclasses.asdict(cls()) for name, cls in SECTIONS.items()})
    stage_defaults = flatten(dataclasses.asdict(Stage()))
    rows = []
    for key, value in flatten(
        {k: v for k, v in config.to_dict().items() if k not in ("name", "path")}
    ).items():
        parts = key.split(".")
        default = stage_defaults.get(".".join(parts[2:])) if parts[0] == "stages" else defaults.get(key)
        if parts[0] == "stages" and parts[2] == "pseudo_label" and len(parts) > 3:
            default = None  # a stage without pseudo-labels has none of its keys
        if value != (list(default) if isinstance(default, tuple) else default):
            rows.append((key, value, default))
    return rows


def value_sources(path: Path, overrides: typing.Sequence[str] = ()) -> list[tuple[str, Any, str]]:
    """Every resolved key of a competition as (key, value, source), source being "default", "toml" or "--set".

    A key is "--set" when an override names it (or a table holding it, such as `stages`), "toml" when
    the file states it, else "default".
    """
    config = load_config(path, overrides)
    from_file = flatten(_read_toml(path))
    overridden = []
    for text in overrides:
        key, _ = parse_override(text)
        if "." not in key and key != "stages":  # a bare key: the section that owns it
            owners = [
                name for name, cls in SECTIONS.items() if key in {f.name for f in dataclasses.fields(cls)}
            ]
            key = f"{owners[0]}.{key}" if owners else key
        overridden.append(key)
    rows = []
    for key, value in flatten(
        {k: v for k, v in config.to_dict().items() if k not in ("name", "path")}
    ).items():
        if any(key == name or key.startswith(name + ".") for name in overridden):
            source = "--set"
        elif key in from_file or (key.startswith("stages.") and "stages" in from_file):
            source = "toml"
        else:
            source = "default"
        rows.append((key, value, source))
    return rows


def quick_stages(stages: tuple[Stage, ...]) -> tuple[Stage, ...]:
    """The head stages of a recipe (frozen body: seconds per epoch on cached features or small steps);
    a recipe with none keeps its first stage."""
    head = tuple(stage for stage in stages if stage.freeze_to % LAYER_GROUPS == LAYER_GROUPS - 1)
    return head or stages[:1]


def config_from_dict(raw: dict, path: Path) -> Config:
    """Build and validate a Config from a TOML-shaped dict (also used to reload a run's config.json)."""
    raw = {key: value for key, value in raw.items() if key not in ("name", "path")}
    allowed = [*SECTIONS, "stages"]
    for key in raw:
        if key not in allowed:
            raise ConfigError(f"{path}: unknown section '{key}'; allowed: {', '.join(allowed)}")
    sections = {name: _build(cls, raw.get(name, {}), name, path) for name, cls in SECTIONS.items()}
    task = sections["competition"].task
    # Unset keys whose default depends on the task: its first metric, and the label format.
    if "metric" not in raw.get("competition", {}):
        sections["competition"] = dataclasses.replace(sections["competition"], metric=TASK_METRICS[task][0])
    if "format" not in raw.get("submission", {}) and task != "single_label":
        sections["submission"] = dataclasses.replace(sections["submission"], format="label")
    stage_tables = raw.get("stages") or []
    if not isinstance(stage_tables, list):
        raise ConfigError(f"{path}: 'stages' must be an array of tables: [[stages]]")
    stages = tuple(_build(Stage, table, f"stages[{i}]", path) for i, table in enumerate(stage_tables))
    if not stages:  # no recipe given: one plain stage of train.epochs epochs, all layers trained
        stages = (Stage(cycle_len=float(sections["train"].epochs)),)
    if sections["train"].recipe == "quick":
        stages = quick_stages(stages)
    config = Config(name=path.parent.name, path=path, stages=stages, **sections)
    _validate(config)
    return config


def competition_names() -> list[str]:
    return sorted(p.parent.name for p in paths.competitions_dir().glob("*/competition.toml"))


def resolve_name(query: str) -> str:
    """A folder name, a Kaggle slug, or an unambiguous prefix of either -> the folder name."""
    names = competition_names()
    slugs = {}
    for name in names:
        try:
            slugs[name] = (
                tomllib.loads(paths.competition_file(name).read_text())
                .get("competition", {})
                .get("kaggle", "")
            )
        except tomllib.TOMLDecodeError:
            slugs[name] = ""
    exact = [name for name in names if query in (name, slugs[name])]
    if exact:
        return exact[0]
    candidates = [name for name in names if name.startswith(query) or (slugs[name] or "").startswith(query)]
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        raise ConfigError(f"competition '{query}' is ambiguous: {', '.join(candidates)}")
    raise ConfigError(f"unknown competition '{query}'; known: {', '.join(names) or '(none)'}")


def load_competition(query: str, overrides: typing.Sequence[str] = ()) -> Config:
    return load_config(paths.competition_file(resolve_name(query)), overrides)
