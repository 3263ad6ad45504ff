"""A competition's settings: `competitions/<name>/competition.toml` loaded into typed, frozen dataclasses.

Every key has a type and a default here, stated once. An unknown key, a value of the wrong type or an
impossible combination is a one-line `ConfigError` naming the file, the key and what is allowed.
`--set key=value` overrides go through exactly the same checks.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import tomllib

# Everything (competitions/, data/, runs/, submissions/) lives under the project root; tests point
# KIT_PROJECT_ROOT at a temporary copy so they never touch the real folders.
PROJECT_ROOT = Path(os.environ.get("KIT_PROJECT_ROOT") or Path(__file__).resolve().parent.parent)
COMPETITIONS_DIR = PROJECT_ROOT / "competitions"

LABEL_SOURCES = ("csv", "filenames", "folders")
SUBMISSION_FORMATS = ("probabilities", "binary", "label")
SCHEDULES = ("sgdr", "one_cycle")
OPTIMIZERS = ("adamw", "sgd")
PREDICT_WEIGHTS = ("snapshots", "last", "best")
LAYER_GROUPS = 3  # early body, late body, head: the lesson's three learning rates


class ConfigError(click.ClickException):
    """A user-caused configuration problem, shown as one line without a traceback."""


@dataclass(frozen=True)
class CompetitionSection:
    kaggle: str = ""  # Kaggle slug, e.g. "dog-breed-identification"; empty when hooks.py builds the data
    metric: str = "log_loss"  # a name in kit.metrics.METRICS; decides the best checkpoint and the submission's file name
    description: str = ""


@dataclass(frozen=True)
class DataSection:
    labels: str = "csv"  # where labels come from: "csv", "filenames" (cat.12.jpg) or "folders" (train/cat/)
    labels_csv: str = "labels.csv"  # relative to data/raw/<name>; used when labels = "csv"
    id_column: str = "id"
    label_column: str = "label"
    # For labels = "filenames": a regex with a named group `label`, matched on the file stem (the image's id).
    filename_pattern: str = r"^(?P<label>[^.]+)\.(?P<id>.+)$"
    train_dir: str = "train"
    test_dir: str = "test"
    extension: str = ".jpg"  # image files' extension, with the dot
    sample_submission: str = "sample_submission.csv"
    max_bad_images: int = 10  # unreadable training images skipped (and reported) up to this count


@dataclass(frozen=True)
class SubmissionSection:
    format: str = "probabilities"  # one column per class; "binary": one P(positive); "label": the class
    id_column: str = "id"
    label_column: str = "label"  # the column holding P(positive) or the class, for binary and label formats
    positive_class: str = ""  # for format = "binary": the class whose probability is submitted
    clip_epsilon: float = 1e-15  # log-loss only: probabilities clipped to [eps, 1 - eps] before upload


@dataclass(frozen=True)
class AugmentSection:
    preset: str = "side_on"  # "side_on" (photos), "top_down" (satellite, microscopy) or "none"
    padding_mode: str = "reflect"  # how rotations fill the corners: "reflect", "constant", "edge"
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
    optimizer: str = "adamw"
    weight_decay: float = 0.01
    schedule: str = "sgdr"  # "sgdr" (cosine with warm restarts) or "one_cycle" (warm-up then cosine)
    folds: int = 5  # stratified K-fold; `--fold all` trains every one
    seed: int = 42
    tta: int = 0  # test-time augmentation: number of augmented views added to the plain one
    snapshot_ensemble: int = 3  # prediction averages the last N snapshots (when stages save them)
    predict_weights: str = "snapshots"  # "snapshots", "last" or "best" (by validation metric)
    num_workers: int = -1  # DataLoader workers; -1: all cores on a GPU box, 0 (in-process) on a CPU
    compile: bool = False  # torch.compile the model (CUDA only)
    lr_find: bool = False  # run the LR finder before the first stage and print its suggestion


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
    augment: bool = True  # use the [augment] transforms in this stage


@dataclass(frozen=True)
class Config:
    name: str
    path: Path  # the competition.toml this came from
    competition: CompetitionSection = field(default_factory=CompetitionSection)
    data: DataSection = field(default_factory=DataSection)
    submission: SubmissionSection = field(default_factory=SubmissionSection)
    augment: AugmentSection = field(default_factory=AugmentSection)
    train: TrainSection = field(default_factory=TrainSection)
    stages: tuple[Stage, ...] = ()

    @property
    def directory(self) -> Path:
        return self.path.parent

    def stage_epochs(self, stage: Stage) -> float:
        return total_epochs(stage.n_cycles, stage.cycle_len, stage.cycle_mult)

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
}


def total_epochs(n_cycles: int, cycle_len: float, cycle_mult: float) -> float:
    """Epochs in n SGDR cycles: cycle_len * (1 + mult + mult^2 + ...)."""
    return sum(cycle_len * cycle_mult**index for index in range(n_cycles))


def _matches(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
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
    return str(annotation).replace("typing.", "").replace("<class '", "").replace("'>", "")


def _build(cls: type, table: Any, where: str, file: Path) -> Any:
    """Make a frozen dataclass from a TOML table, refusing unknown keys and wrong types."""
    if not isinstance(table, dict):
        raise ConfigError(f"{file}: [{where}] must be a table of keys")
    hints = typing.get_type_hints(cls)
    allowed = [item.name for item in dataclasses.fields(cls)]
    values = {}
    for key, value in table.items():
        if key not in allowed:
            raise ConfigError(f"{file}: unknown key '{where}.{key}'; allowed keys: {', '.join(allowed)}")
        if not _matches(value, hints[key]):
            raise ConfigError(
                f"{file}: '{where}.{key}' = {value!r} should be {_type_name(hints[key])}"
            )
        if isinstance(value, list):
            value = tuple(value)
        if hints[key] is float and isinstance(value, int):
            value = float(value)
        values[key] = value
    return cls(**values)


def _check_choice(file: Path, key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{file}: '{key}' = {value!r} is not one of {', '.join(choices)}")


def _validate(config: Config) -> None:
    """Cross-field checks that types alone cannot express."""
    from kit import augment, metrics  # late imports: they need albumentations and sklearn; config stays light

    file = config.path
    _check_choice(file, "competition.metric", config.competition.metric, tuple(metrics.METRICS))
    _check_choice(file, "data.labels", config.data.labels, LABEL_SOURCES)
    _check_choice(file, "submission.format", config.submission.format, SUBMISSION_FORMATS)
    _check_choice(file, "train.optimizer", config.train.optimizer, OPTIMIZERS)
    _check_choice(file, "train.schedule", config.train.schedule, SCHEDULES)
    _check_choice(file, "train.predict_weights", config.train.predict_weights, PREDICT_WEIGHTS)
    if config.submission.format == "binary" and not config.submission.positive_class:
        raise ConfigError(f"{file}: submission.format = 'binary' needs 'submission.positive_class'")
    for key in ("image_size", "batch_size", "epochs", "folds"):
        if getattr(config.train, key) < 1 or (key == "folds" and config.train.folds < 2):
            raise ConfigError(f"{file}: 'train.{key}' = {getattr(config.train, key)} is too small")
    if config.train.lr <= 0:
        raise ConfigError(f"{file}: 'train.lr' must be positive")
    for index, stage in enumerate(config.stages):
        where = f"{file}: stages[{index}] ({stage.name})"
        if stage.cycle_mult < 1:
            raise ConfigError(f"{where}: cycle_mult = {stage.cycle_mult} must be >= 1")
        if stage.n_cycles < 1 or stage.cycle_len <= 0:
            raise ConfigError(f"{where}: n_cycles must be >= 1 and cycle_len > 0")
        if not -LAYER_GROUPS <= stage.freeze_to < LAYER_GROUPS:
            raise ConfigError(f"{where}: freeze_to = {stage.freeze_to} must be in -3..2 (3 layer groups)")
        if stage.precompute and stage.freeze_to % LAYER_GROUPS != LAYER_GROUPS - 1:
            raise ConfigError(f"{where}: precompute needs a frozen body: set freeze_to = -1")
        if isinstance(stage.lr, tuple) and len(stage.lr) != LAYER_GROUPS:
            raise ConfigError(
                f"{where}: lr has {len(stage.lr)} values; give one, or {LAYER_GROUPS} (early, late, head)"
            )
    augment.check_config(config)


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
        owners = [name for name, cls in SECTIONS.items() if parts[0] in {f.name for f in dataclasses.fields(cls)}]
        if len(owners) > 1:
            raise ConfigError(f"--set {key}: ambiguous; write {' or '.join(f'{owner}.{key}' for owner in owners)}")
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


def load_config(path: Path, overrides: typing.Sequence[str] = ()) -> Config:
    """Read, override and validate one competition.toml."""
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: malformed TOML: {error}") from None
    for key in ("name", "path"):  # config_from_dict drops these (a run's config.json has them); a TOML may not
        if key in raw:
            raise ConfigError(f"{path}: unknown top-level key '{key}'; the competition's name is its folder's name")
    for text in overrides:
        _apply_override(raw, *parse_override(text), path)
    return config_from_dict(raw, path)


def config_from_dict(raw: dict, path: Path) -> Config:
    """Build and validate a Config from a TOML-shaped dict (also used to reload a run's config.json)."""
    raw = {key: value for key, value in raw.items() if key not in ("name", "path")}
    allowed = [*SECTIONS, "stages"]
    for key in raw:
        if key not in allowed:
            raise ConfigError(f"{path}: unknown section '{key}'; allowed: {', '.join(allowed)}")
    sections = {name: _build(cls, raw.get(name, {}), name, path) for name, cls in SECTIONS.items()}
    stage_tables = raw.get("stages") or []
    if not isinstance(stage_tables, list):
        raise ConfigError(f"{path}: 'stages' must be an array of tables: [[stages]]")
    stages = tuple(_build(Stage, table, f"stages[{i}]", path) for i, table in enumerate(stage_tables))
    if not stages:  # no recipe given: one plain stage of train.epochs epochs, all layers trained
        stages = (Stage(cycle_len=float(sections["train"].epochs)),)
    config = Config(name=path.parent.name, path=path, stages=stages, **sections)
    _validate(config)
    return config


def competition_names() -> list[str]:
    return sorted(p.parent.name for p in COMPETITIONS_DIR.glob("*/competition.toml"))


def resolve_name(query: str) -> str:
    """A folder name, a Kaggle slug, or an unambiguous prefix of either -> the folder name."""
    names = competition_names()
    slugs = {}
    for name in names:
        try:
            slugs[name] = tomllib.loads((COMPETITIONS_DIR / name / "competition.toml").read_text()).get(
                "competition", {}
            ).get("kaggle", "")
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
    return load_config(COMPETITIONS_DIR / resolve_name(query) / "competition.toml", overrides)

