"""The step after a full-data refit (`kit train COMP --fold full`), in place of kit.predict.summary.settle:
nothing is held out, so nothing is chosen or fitted. What the fold run chose is reused: which weight files
and views predict, the decisions, the temperatures fitted on its OOF (one temperature for every seed: the
geometric mean of the folds'), and its clip. Its CV is reported as the fold run's, named as such, and its
OOF (what `kit ensemble` blends on) is the fold run's as a stand-in for a model of the same recipe.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

from kit.config import Config
from kit.config_sources import flatten
from kit.data.labels import LabelTable
from kit.errors import KitError
from kit.run import Calibration, FoldResult, Run, Summary
from kit.run_folder import find_run, finished_runs

# What a full-data refit takes over from the fold run's metrics.json as it is.
TAKEN_OVER = ("metric", "cv", "cv_uncalibrated", "cv_default_decisions", "task", "decisions", "weights_rule")


def is_fold_run(summary: Summary) -> bool:
    return not summary.is_ensemble and not summary.is_full_refit and bool(summary.folds_trained)


def chosen_on(config: Config, run: str | None) -> Path:
    """The fold run a full-data refit reuses: `run` (id or prefix), else the newest finished fold run; one
    line when there is none, or when `run` is not a fold run."""
    if run is not None:
        run_dir = find_run(config, run)
        if not is_fold_run(Run(run_dir).summary()):
            raise KitError(
                f"--chosen-on {run}: {run_dir.name} is not a finished fold run (an ensemble or a full-data "
                "refit has no OOF of its own to choose on); name a run of `kit train --fold all`"
            )
        return run_dir
    for run_dir in reversed(finished_runs(config)):
        if is_fold_run(Run(run_dir).summary()):
            return run_dir
    raise KitError(
        f"--fold full reuses what a fold run chose, and {config.name} has no finished fold run: "
        f"run `kit train {config.name} --fold all` first"
    )


# The sections whose settings change what a full-data refit trains (its recipe, model, image size, data).
TRAINING_SECTIONS = ("data", "augment", "train", "stages")
# Keys of those sections a full-data refit does not use: no LR finder, no folds, no stop (nothing held out).
UNUSED_BY_REFIT = (
    "train.lr_find",
    "train.folds",
    "train.stop_when_worse",
    "train.stop_patience",  # a fold run recorded before the key existed differs only there
    "train.min_stage_gain",
    "train.stop_per_fold",
)


def training_differences(recorded: Config, now: Config) -> list[str]:
    """The settings that change training on which `now` (competition.toml plus the refit's --set) differs
    from `recorded` (the fold run's config plus the same --set), as "key = recorded (competition.toml now:
    value)". Pure."""
    saved, current = flatten(recorded.to_dict()), flatten(now.to_dict())
    keys = sorted(
        key
        for key in saved.keys() | current.keys()
        if key.split(".")[0] in TRAINING_SECTIONS
        and key not in UNUSED_BY_REFIT
        and saved.get(key) != current.get(key)
    )
    missing = "(none)"
    return [
        f"{key} = {saved.get(key, missing)!r} (competition.toml now: {current.get(key, missing)!r})"
        for key in keys
    ]


def settings_note(source_name: str, recorded: Config, now: Config, shown: int = 3) -> str:
    """'' when the fold run's settings train what competition.toml (with the refit's --set) trains now;
    else one line: the refit trains the fold run's settings, the first `shown` differences, and how to
    train the TOML's instead. Pure."""
    found = training_differences(recorded, now)
    if not found:
        return ""
    more = f"; and {len(found) - shown} more" if len(found) > shown else ""
    return (
        f"--fold full trains the settings fold run {source_name} was trained and chosen with, not "
        f"competition.toml's now: {'; '.join(found[:shown])}{more} (to refit the TOML's recipe, train a "
        "fold run of it first and refit on it: what is reused was chosen on the fold run's recipe)"
    )


def full_calibration(source: Calibration, parts: list[str]) -> Calibration:
    """One temperature for every full-data seed, the geometric mean of the fold run's per-fold ones (a
    temperature scales logits: its mean is taken in log space); the clip as the fold run's. Pure."""
    if not source.temperatures:
        return Calibration({}, source.epsilon, source.before, source.after)
    mean = math.exp(sum(math.log(t) for t in source.temperatures.values()) / len(source.temperatures))
    return Calibration(dict.fromkeys(parts, mean), source.epsilon, source.before, source.after)


def full_prediction(prediction: dict | None) -> dict | None:
    """The fold run's prediction choice for a model that had no validation: "best" (the best validation
    epoch) becomes "last" (the recipe's end); other weight files (snapshots, stages) keep their names."""
    if not prediction:
        return None
    names = list(dict.fromkeys("last" if name == "best" else name for name in prediction["weights"]))
    return {**prediction, "weights": names}


def full_part_record(result: FoldResult) -> dict:
    """metrics.json's record of one full-data seed: no score (nothing held out), its epochs and, where
    the fold run's stop was followed, its recipe. Pure."""
    record = {"score": None, "history": result.history}
    return {**record, "recipe": result.recipe} if result.recipe is not None else record


def settle_full(
    config: Config, labels: LabelTable, run_dir: Path, source_dir: Path, parts: list[str], seconds: float
) -> dict:
    """The full-data refit's calibration.json, oof.npy (the fold run's) and metrics.json, written once."""
    run, source = Run(run_dir), Run(source_dir)
    chosen = source.summary()
    run.write_calibration(full_calibration(source.read_calibration(), parts))
    shutil.copyfile(source.oof, run.oof)  # a stand-in: the same recipe's out-of-fold predictions
    prediction = full_prediction(chosen.prediction)
    summary = {
        **{key: chosen.record[key] for key in TAKEN_OVER if key in chosen.record},  # copied as they are
        "folds_trained": parts,
        "classes": labels.classes,
        "seconds": round(seconds, 1),
        # each seed's recipe: where it stopped, following the fold run (kit.train.full_data.fold_run_stop),
        # so that a weights rule picks the files it picked there (kit.predict.inference.stopped_rule)
        "folds": {part: full_part_record(run.part(part).read_result()) for part in parts},
        "full": {
            "chosen_on": source_dir.name,
            "seeds": len(parts),
            "rows": len(labels.ids),
            "cv_from": f"CV of {source_dir.name} (the fold run reused: a full-data model has no OOF)",
        },
        **({"prediction": prediction} if prediction else {}),
    }
    run.write_summary(summary)
    return summary
