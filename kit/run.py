"""A run folder, runs/<name>/<run-id>/: every path inside it, and the typed records written there.

One owner for each file's name (as timm's CheckpointSaver owns its checkpoints'): code asks a `Run` for
`run.summary_file`, `run.fold(0).weights("snapshot-3")`, never joins a file name itself.

    config.json provenance.json plan.json   the resolved config, where and how it ran, what --resume continues
    metrics.json                            the run's Summary (kit.predict.summary writes it once)
    oof.npy calibration.json                the chosen OOF prediction, and its Calibration
    test-probabilities.npy submission.json  the uncalibrated test prediction, and the SubmissionRecord
    fold-K/                                 a FoldFolder: weight files, resume.pt, result.json, kept views
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kit.errors import KitError
from kit.files import read_json, write_json

# The layout of the records in a run folder. This kit writes and reads this one only: a folder of another
# layout is one line saying so (retrain it, or predict it with the kit that made it), not a shim per reader.
LAYOUT = 2


class RunError(KitError):
    """A run folder's record that this kit cannot read: missing, of another layout, or of a wrong shape."""


def _older(path: Path, found: Any) -> RunError:
    made = f"layout {found}" if found is not None else "a layout before records were versioned"
    return RunError(
        f"{path}: made by another kit ({made}; this kit reads layout {LAYOUT}): retrain the run "
        "(`make train`), or use the kit that made it for `kit predict`"
    )


def _record(path: Path, required: tuple[str, ...]) -> dict:
    """A record's JSON object, its layout checked and its required keys present; else one line."""
    if not path.exists():
        raise RunError(f"{path} is missing: retrain the run (`make train`), or restore the file")
    value = read_json(path)
    if not isinstance(value, dict):
        raise RunError(f"{path}: expected a JSON object, found {type(value).__name__}; {_FIX}")
    if value.get("layout") != LAYOUT:
        raise _older(path, value.get("layout"))
    missing = [key for key in required if key not in value]
    if missing:
        raise RunError(f"{path}: no {', '.join(repr(key) for key in missing)}; {_FIX}")
    return value


_FIX = "the file was edited or damaged: restore it, or retrain the run (`make train`)"


def _number(path: Path, key: str, value: Any, positive: bool = False, optional: bool = False) -> float | None:
    """A JSON number (finite; > 0 when `positive`), or None when `optional`; else one line."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RunError(f"{path}: {key} = {value!r} is not a finite number; {_FIX}")
    if positive and value <= 0:
        raise RunError(f"{path}: {key} = {value!r} must be > 0; {_FIX}")
    return float(value)


BLEND = "blend"  # an ensemble's one calibrated part: its blended predictions
FULL_PART = "full-seed-"  # a full-data refit's parts (folds_trained, calibration): full-seed-0, ...
FOLD_PART = "fold-"  # a fold's folder: fold-0, ...
SEED_PART = "seed-"  # --seeds N: fold-0/seed-1/ (seed 0's record too; its weights stay in fold-0/)
WEIGHT_SUFFIX = ".pt"
CONFIG_FILE = "config.json"  # names for messages; paths: Run.config_file, Run.summary_file
SUMMARY_FILE = "metrics.json"


def weight_file_name(stem: str) -> str:
    """A weight file's name from its stem: "last" -> "last.pt" (for messages; paths: FoldFolder.weights)."""
    return f"{stem}{WEIGHT_SUFFIX}"


def snapshot_stem(number: int, moving_average: bool = False) -> str:
    """The stem of the weight file SGDR cycle `number` (1-based, over the fold) left: "snapshot-3"."""
    return f"{'ema-' if moving_average else ''}snapshot-{number}"


def stage_stem(stage_index: int) -> str:
    """The stem of a stage's final weights when it joins prediction: "stage-1"."""
    return f"stage-{stage_index}"


def stage_of_stem(stem: str) -> int | None:
    """The stage a "stage-S" stem names; None for any other stem."""
    found = re.fullmatch(r"stage-(\d+)", stem)
    return int(found[1]) if found else None


def snapshot_of_stem(stem: str) -> int | None:
    """The snapshot number a "snapshot-K" or "ema-snapshot-K" stem names; None for any other stem."""
    found = re.fullmatch(r"(?:ema-)?snapshot-(\d+)", stem)
    return int(found[1]) if found else None


def fold_key(folder: Path) -> str:
    """How metrics.json's per-fold records name a fold's folder: fold-3 -> "3"."""
    return folder.name.removeprefix(FOLD_PART)


# What every metrics.json holds (a trained run's and a blend's); the rest depends on which it is.
SUMMARY_KEYS = ("metric", "cv", "classes")


@dataclass(frozen=True)
class Summary:
    """metrics.json, read: what the step after training (kit.predict.summary), a blend (kit.predict.ensemble)
    or a full-data refit (kit.predict.refit) found. Readers ask these accessors instead of testing which
    keys are present; the record's layout is checked when it is read (`Run.summary`)."""

    record: dict  # as written (Run.write_summary), the layout number aside

    @property
    def metric(self) -> str:
        return self.record["metric"]

    @property
    def cv(self) -> float:  # as submitted: calibrated (when calibration pays), cross-fitted where it can be
        return self.record["cv"]

    @property
    def cv_uncalibrated(self) -> float:  # the same rows without the calibration (the CV when none is fitted)
        return self.record.get("cv_uncalibrated", self.cv)

    @property
    def classes(self) -> list[str]:
        return self.record["classes"]

    @property
    def task_record(self) -> dict:  # kit.tasks.Task.describe(): kit.tasks.from_record reads it back
        return self.record["task"]

    @property
    def decisions(self) -> dict | None:  # thresholds or cut-points fitted on OOF (kit.tasks), or None
        return self.record.get("decisions")

    @property
    def folds_trained(self) -> list:  # fold numbers, or a full-data refit's parts (full-seed-K); a blend: []
        return self.record.get("folds_trained", [])

    @property
    def folds(self) -> dict[str, dict]:  # per trained part: score, history, pseudo_labels, recipe
        return self.record.get("folds", {})

    @property
    def seeds(self) -> int:  # seeds each fold averages (--seeds N; per seed: folds[K]["seeds"]); 1: one model
        return self.record.get("seeds", 1)

    def fold_recipe(self, key: str) -> dict | None:
        """A fold's check points, stop and stages (kit.train.stopping); None: trained without the stop."""
        return self.folds.get(key, {}).get("recipe")

    @property
    def seconds(self) -> float:
        return self.record.get("seconds", 0)

    @property
    def prediction(self) -> dict | None:  # the prediction choice made on OOF (kit.predict.selection), or None
        return self.record.get("prediction") or None

    @property
    def stages(self) -> dict[str, list]:  # per fold: which stages ran, were stopped or skipped, and why
        return self.record.get("stages", {})

    @property
    def worse_stages(self) -> dict[str, list]:  # per fold: stages that ended worse than they started
        return self.record.get("worse_stages", {})

    @property
    def is_ensemble(self) -> bool:  # a blend (kit ensemble): no weight files, no folds of its own
        return "ensemble" in self.record

    @property
    def ensemble(self) -> dict:  # a blend's members (runs), their weights, rows, cross_fitted; {} for a run
        return self.record.get("ensemble", {})

    @property
    def members(self) -> list[str]:  # a blend's runs (or kept variants), as named on the command line
        return self.ensemble.get("runs", [])

    @property
    def is_full_refit(self) -> bool:  # kit train --fold full: no OOF of its own
        return "full" in self.record

    @property
    def full(self) -> dict:  # a full-data refit's chosen_on, seeds, rows, cv_from; {} otherwise
        return self.record.get("full", {})

    # How the CV was scored (kit.predict.crossfit.honest_cv); None where it was not cross-fitted.
    @property
    def cross_fitted_by(self) -> str | None:  # "folds" or "halves"
        return self.record.get("cv_cross_fitted_by")

    @property
    def cv_in_sample(self) -> float | None:  # fitted and scored on the same rows
        return self.record.get("cv_in_sample")

    @property
    def calibration_pays(self) -> bool | None:  # None: no calibration was weighed (not log loss)
        return self.record.get("calibration_pays")

    @property
    def cv_uncalibrated_cross_fitted(self) -> float | None:
        return self.record.get("cv_uncalibrated_cross_fitted")

    @property
    def cv_interval(self) -> tuple[float, float] | None:  # a small fold's 95% bootstrap interval
        found = self.record.get("cv_interval")
        return (found[0], found[1]) if found else None

    @property
    def cv_rows(self) -> int | None:  # the validation rows the CV was scored on
        return self.record.get("cv_rows")


@dataclass(frozen=True)
class Calibration:
    """What is done to predictions before they are submitted, fitted once on OOF (kit.predict.calibrate):
    one shape for runs and ensembles. A temperature per part (a run: each fold's, applied to that fold's
    predictions before the folds are averaged; an ensemble: "blend"), then a clip to [epsilon, 1 - epsilon]
    and renormalisation. No temperatures and no epsilon: the identity (metrics other than log loss)."""

    temperatures: dict[str, float]  # > 0 each; T > 1 softens, T < 1 sharpens
    epsilon: float | None  # the clip; None: no clip, no renormalising
    before: float | None = None  # OOF log loss before and after (None: not fitted)
    after: float | None = None

    @classmethod
    def from_record(cls, value: dict, path: Path) -> Calibration:
        temperatures = value["temperatures"]
        if not isinstance(temperatures, dict):
            raise RunError(f"{path}: temperatures must be an object of part -> temperature; {_FIX}")
        checked = {
            str(part): _number(path, f"temperatures.{part}", temperature, positive=True)
            for part, temperature in temperatures.items()
        }
        epsilon = _number(path, "epsilon", value["epsilon"], optional=True)
        if epsilon is not None and not 0 <= epsilon < 0.5:
            raise RunError(f"{path}: epsilon = {epsilon!r} must be in [0, 0.5); {_FIX}")
        before = _number(path, "before", value.get("before"), optional=True)
        return cls(checked, epsilon, before, _number(path, "after", value.get("after"), optional=True))


@dataclass(frozen=True)
class FoldResult:
    """fold-K/result.json: a finished fold, as training left it (kit.train.cross_validation)."""

    score: float  # the fold's OOF metric with the default prediction rule (NaN when it diverged)
    history: list[dict]  # one record per epoch (kit.train.loop)
    valid_rows: list[int]  # the training rows the fold predicted out of fold
    pseudo_labels: dict[str, int] = field(default_factory=dict)  # test images joined per pseudo-label file
    # check points, the stop (train.stop_when_worse) and each stage's outcome (kit.train.stopping); None:
    # trained without the stop
    recipe: dict | None = None
    seeds: list[dict] = field(default_factory=list)  # --seeds N: each seed alone (seed, train_seed, score)

    @classmethod
    def from_record(cls, value: dict, path: Path) -> FoldResult:
        if not isinstance(value["history"], list):
            raise RunError(f"{path}: history must be a list of epochs; {_FIX}")
        rows = value["valid_rows"]
        if not isinstance(rows, list) or not all(isinstance(row, int) and row >= 0 for row in rows):
            raise RunError(f"{path}: valid_rows must be a list of row numbers; {_FIX}")
        score = value["score"]
        if not (isinstance(score, int | float) and not isinstance(score, bool)):
            raise RunError(f"{path}: score = {score!r} is not a number; {_FIX}")
        pseudo = value.get("pseudo_labels", {})
        if not isinstance(pseudo, dict):
            raise RunError(f"{path}: pseudo_labels must be an object; {_FIX}")
        recipe = value.get("recipe")
        if recipe is not None and not (isinstance(recipe, dict) and {"checkpoints", "stop"} <= set(recipe)):
            raise RunError(f"{path}: recipe must be an object with checkpoints and stop; {_FIX}")
        if not isinstance(value.get("seeds", []), list):
            raise RunError(f"{path}: seeds must be a list of the fold's seeds; {_FIX}")
        return cls(float(score), value["history"], rows, pseudo, recipe, value.get("seeds", []))

    @property
    def rows(self) -> np.ndarray:
        return np.array(self.valid_rows, dtype=np.int64)


@dataclass(frozen=True)
class FoldFolder:
    """runs/<name>/<run-id>/fold-K/: one fold's weight files, its resume point and what it predicted."""

    folder: Path
    number: int | None = None  # the fold's number (None: a folder named otherwise, as tests make)

    def weights(self, name: str) -> Path:
        """A weight file by stem: "best", "last", "ema", "snapshot-3", "ema-snapshot-3", "stage-0"."""
        return self.folder / weight_file_name(name)

    @property
    def best(self) -> Path:  # best validation score so far
        return self.weights("best")

    @property
    def last(self) -> Path:  # the last stage's final weights
        return self.weights("last")

    def ema_weights(self) -> Path:  # the moving average's final weights (train.ema_decay)
        return self.weights("ema")

    def snapshot(self, number: int) -> Path:  # at the end of SGDR cycle `number` (1-based, over the fold)
        return self.weights(snapshot_stem(number))

    def ema_snapshot(self, number: int) -> Path:
        return self.weights(snapshot_stem(number, moving_average=True))

    def stage_weights(self, stage_index: int) -> Path:  # a stage that joins prediction: its final weights
        return self.weights(stage_stem(stage_index))

    def stage_weights_present(self) -> list[Path]:
        """The stages' final weights present (stage-S.pt), in stage order."""
        found = self.folder.glob("stage-*.pt")
        return sorted(found, key=lambda path: int(path.stem.rsplit("-", 1)[1]))

    def snapshots(self, moving_average: bool = False) -> list[Path]:
        """Snapshot files present, in the order they were taken."""
        prefix = "ema-snapshot-" if moving_average else "snapshot-"
        found = self.folder.glob(f"{prefix}*.pt")
        return sorted(found, key=lambda path: int(path.stem.rsplit("-", 1)[1]))

    @property
    def resume_point(self) -> Path:  # everything needed to continue after the last completed epoch
        return self.folder / "resume.pt"

    @property
    def result_file(self) -> Path:  # the FoldResult: written when the fold is done
        return self.folder / "result.json"

    @property
    def oof(self) -> Path:  # the fold's validation rows as its default prediction made them
        return self.folder / "oof.npy"

    def kept_oof(self, weights: str) -> Path:
        """Per-view OOF probabilities of one weight file (views x rows x outputs, float32)."""
        return self.folder / f"oof-{weights}.npy"

    def kept_test(self, weights: str) -> Path:
        """Per-view test probabilities of one weight file, as the run's prediction made them."""
        return self.folder / f"test-{weights}.npy"

    def kept_oof_names(self) -> list[str]:
        """Stems of the weight files whose per-view OOF probabilities are kept."""
        return sorted(path.stem.removeprefix("oof-") for path in self.folder.glob("oof-*.npy"))

    def seed(self, seed: int, record: bool = False) -> FoldFolder:  # --seeds N: seed S's weights or `record`
        own = seed == 0 and not record  # seed 0's weights and resume point: the fold's own folder
        return self if own else FoldFolder(self.folder / f"{SEED_PART}{seed}", self.number)

    def pseudo_labels(self, stage_index: int) -> Path:  # test images labelled for a stage
        return self.folder / f"pseudo-labels-stage-{stage_index}.json"

    def pseudo_label_files(self) -> list[Path]:
        return sorted(self.folder.glob("pseudo-labels-stage-*.json"))

    def write_result(self, result: FoldResult) -> None:
        write_json(self.result_file, {"layout": LAYOUT, **asdict(result)})

    def read_result(self) -> FoldResult:
        return FoldResult.from_record(
            _record(self.result_file, ("score", "history", "valid_rows")), self.result_file
        )

    def holds_training(self) -> bool:
        """A completed epoch (a resume point or weights) or a finished fold."""
        return any(self.folder.glob("*.pt")) or self.result_file.exists()


@dataclass(frozen=True)
class Run:
    """runs/<name>/<run-id>/: a trained run or an ensemble of runs."""

    folder: Path

    @property
    def name(self) -> str:
        return self.folder.name

    def fold(self, number: int) -> FoldFolder:
        return FoldFolder(self.folder / f"{FOLD_PART}{number}", number)

    def full(self, seed: int) -> FoldFolder:
        """full-seed-K/: seed K's model trained on every row (`kit train --fold full`): weight files and a
        result, no OOF of its own (it predicts as the fold run it was chosen on chose)."""
        return FoldFolder(self.folder / f"{FULL_PART}{seed}", None)

    def part(self, key: int | str) -> FoldFolder:
        """A trained part as metrics.json's folds_trained names it: a fold number, or a full-data seed."""
        if isinstance(key, str) and key.startswith(FULL_PART):
            return FoldFolder(self.folder / key, None)
        return self.fold(int(key))

    def folds_present(self) -> list[FoldFolder]:
        found = (path for path in self.folder.glob("fold-*") if path.is_dir())
        numbers = sorted(int(path.name.split("-", 1)[1]) for path in found)
        return [self.fold(number) for number in numbers]

    def full_parts_present(self) -> list[FoldFolder]:
        """The full-data seeds' folders present (kit train --fold full), in seed order."""
        found = (path for path in self.folder.glob(f"{FULL_PART}*") if path.is_dir())
        return [self.full(seed) for seed in sorted(int(path.name.removeprefix(FULL_PART)) for path in found)]

    def holds_training(self) -> bool:
        return any(part.holds_training() for part in self.folds_present() + self.full_parts_present())

    @property
    def config_file(self) -> Path:
        return self.folder / CONFIG_FILE

    @property
    def provenance_file(self) -> Path:
        return self.folder / "provenance.json"

    @property
    def plan_file(self) -> Path:  # which folds `kit train` was asked for: what --resume continues
        return self.folder / "plan.json"

    @property
    def summary_file(self) -> Path:
        return self.folder / SUMMARY_FILE

    @property
    def oof(self) -> Path:  # every training row's OOF probabilities as the chosen prediction makes them
        return self.folder / "oof.npy"

    @property
    def calibration_file(self) -> Path:
        return self.folder / "calibration.json"

    def write_summary(self, summary: dict) -> None:
        """metrics.json: what the step after training (or a blend) found, with the layout it is written in."""
        write_json(self.summary_file, {"layout": LAYOUT, **summary})

    def read_summary(self) -> dict:
        """metrics.json of a finished run, of this kit's layout (another's is one line: retrain it)."""
        return _record(self.summary_file, SUMMARY_KEYS)

    def summary(self) -> Summary:
        """metrics.json of a finished run, typed (another kit's layout is one line: retrain it)."""
        return Summary(self.read_summary())

    def write_calibration(self, calibration: Calibration) -> None:
        write_json(self.calibration_file, {"layout": LAYOUT, **asdict(calibration)})

    def read_calibration(self) -> Calibration:
        """The calibration the step after training (or the blend) fitted; prediction never refits it."""
        path = self.calibration_file
        return Calibration.from_record(_record(path, ("temperatures", "epsilon")), path)

    @property
    def test_probabilities(self) -> Path:  # uncalibrated, folds averaged: what an ensemble blends
        return self.folder / "test-probabilities.npy"

    @property
    def submission_record_file(self) -> Path:
        return self.folder / "submission.json"

    @property
    def row_order_file(self) -> Path:  # which training rows, in order, the OOF rows are (kit.data.labels)
        return self.folder / "row-order.json"

    @property
    def bad_images(self) -> Path:  # training images that could not be read (skipped)
        return self.folder / "bad-images.json"

    @property
    def bad_test_images(self) -> Path:
        return self.folder / "bad-test-images.json"

    def lr_find(self, stage_index: int, suffix: str = ".json") -> Path:
        return self.folder / f"lr-find-stage{stage_index}{suffix}"

    def lr_find_files(self, suffix: str) -> list[Path]:
        return sorted(self.folder.glob(f"lr-find*{suffix}"))

    def plot(self, name: str) -> Path:  # a report's figure: history, confusion, most-wrong, ...
        return self.folder / f"{name}.png"

    @property
    def report_file(self) -> Path:
        return self.folder / "report.html"

    @property
    def kaggle_folder(self) -> Path:  # kit notebook's package, notebook and fetched outputs
        return self.folder / "kaggle"
