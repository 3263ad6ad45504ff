"""The schema of a competition's settings: every key of `competitions/<name>/competition.toml` as a typed,
frozen dataclass field with its default and the reason for it, stated once.

Reading a TOML into these is kit.config_build's job, the checks kit.config_checks's, `--set` overrides
kit.config_overrides's, and where each value came from kit.config_sources's; a competition's name is
resolved by kit.competitions.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

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
DuplicatesRule = Literal["group", "ignore"]
SubmissionFormat = Literal["probabilities", "binary", "label"]
AugmentPreset = Literal["side_on", "top_down", "none"]  # kit.data.augment.PRESETS
# The distinct test-time views of each preset beside the plain one (kit.data.tta.TTA_VIEWS; a test keeps
# the two equal): predict.tta beyond them would repeat views, computing the same prediction again.
TTA_VIEW_COUNTS: dict[str, int] = {"side_on": 8, "top_down": 5, "none": 5}
PaddingMode = Literal["reflect", "constant", "edge"]  # kit.data.augment.PADDING_MODES
Optimizer = Literal["adamw", "sgd"]
ScheduleKind = Literal["sgdr", "one_cycle"]
Recipe = Literal["full", "quick"]
PredictMean = Literal["probabilities", "logits"]  # kit.predict.selection.average
PredictWeights = Literal["snapshots", "last", "best", "ema"]
Precision = Literal["auto", "bf16", "fp16", "fp32"]  # kit.device.PRECISIONS
Accelerator = Literal["auto", "t4", "t4x2", "cpu"]  # kit.kaggle.budget.ACCELERATORS
OnnxSetting = Literal["auto", "on", "off"]  # kit.predict.onnx_runtime.SETTINGS
SubmissionKind = Literal["csv", "notebook"]  # notebook: a code competition (`kit notebook --submit`)
LAYER_GROUPS = 3  # early body, late body, head: the lesson's three learning rates
DEFAULT_WARMUP = 0.05  # of the first cycle, in stages that train body layers (fastai 0.7: 1/20)


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
    # photo whole and squishes no more than that: by 5-fold CV on 1,000 real Dog Breed Identification photos
    # (kept outside the repository) it beat no cap (docs/2026-11-27-aspect.md; scripts/compare_aspect.py).
    max_aspect: float = 1.33
    # Photos of one patient, animal or scene never sit in two folds: a column of the labels CSV naming each
    # row's group (e.g. "patient_id"), or "" (a hooks.py `groups` function, when defined; else none)
    group_column: str = ""
    # Near-duplicate training photos (perceptual hashes, `kit duplicates`): "group" puts each set in one
    # group, so that no copy validates its twin; "ignore" (the default: it decodes every photo to hash it)
    duplicates: DuplicatesRule = "ignore"


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
    # Stop a recipe that stops paying (kit.train.stopping): at each SGDR cycle's end and each stage's end
    # from the first unfrozen cycle's on (head-only stages never count), stop_patience + 1 check points in a
    # row whose OOF score is not better than the best so far by more than min_stage_gain (the metric's
    # units) skip the rest of that stage and the later stages of the fold; a better one resets the count, a
    # diverged one stops at once. With --fold all, fold 0's decision applies to every fold (the folds stay
    # one recipe) unless stop_per_fold: then each fold decides on its own. Patience 1 (check points, not
    # epochs): on digits the first unfrozen cycle (1 epoch) drops OOF accuracy from the head's 0.80 to 0.48
    # before the later cycles reach 0.98, so patience 0 stopped there and the head predicted (OOF 0.82
    # against 0.99); with 1 digits runs to its end, and a recipe whose unfrozen stage never pays stops
    # after two unfrozen cycles (docs/2026-12-03-stop-patience.md).
    stop_when_worse: bool = True
    stop_patience: int = 1
    min_stage_gain: float = 0.0
    stop_per_fold: bool = False
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
    # The test and OOF views' size, as a multiple of the size the weight file's stage trained at (the last
    # stage's for its snapshots and last.pt; an earlier stage's stage-S.pt at its own; rounded to pixels).
    # Random crops magnify a photo's subject in training, so a model trained on crops sees it at that scale
    # in a view a little larger than its training size ("FixRes", Touvron et al. 2019): 1.143 predicts at
    # 256 px after training at 224. A multiple, not pixels, so that a changed training size carries it.
    image_scale: float = 1.0
    # How a fold's views and weight files are averaged: "probabilities" (their arithmetic mean) or "logits"
    # (the mean on the scale the head outputs: a renormalised geometric mean of class probabilities). With
    # a head-only model beside the fine-tuned one (a stage's joins_prediction) the logit mean scored better
    # on 4 seeds of 4 on 1,600 Dogs vs. Cats photos with an answer key, but not on 1,000 Dog Breed
    # Identification photos (both kept outside the repository; docs/2026-11-27-cats-vs-dogs-recipe.md).
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
    # The packaged weights exported to ONNX and predicted by onnxruntime (its wheel packaged beside the
    # kit's): "auto" for a CPU notebook where onnx and onnxruntime are installed (8.5x less CPU time per
    # forward pass than torch eager, scripts/bench_onnx.py); "on" always; "off" never.
    onnx: OnnxSetting = "auto"


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

    @property
    def trains_head_only(self) -> bool:
        """Whether only the head trains (freeze_to = -1 or 2: the body is frozen)."""
        return self.freeze_to % LAYER_GROUPS == LAYER_GROUPS - 1


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
        return 0.0 if stage.trains_head_only else DEFAULT_WARMUP

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


def quick_stages(stages: tuple[Stage, ...]) -> tuple[Stage, ...]:
    """The head stages of a recipe (frozen body: seconds per epoch on cached features or small steps);
    a recipe with none keeps its first stage."""
    head = tuple(stage for stage in stages if stage.trains_head_only)
    return head or stages[:1]
