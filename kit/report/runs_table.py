"""`kit runs`: one row per run of a competition, with CV, time and the settings that differ.

Light on purpose (pandas only): listing runs needs no model, no plots.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from kit.config import Config
from kit.config_sources import flatten
from kit.files import read_json
from kit.run import Run, RunError, Summary
from kit.run_folder import list_runs


def trained(summary: Summary) -> str:
    """What a run trained, in a few words: 'fold 0', 'folds 0-4', 'folds 0,2, 3 seeds each', 'ensemble of 3
    runs'."""
    if summary.is_ensemble:
        return f"ensemble of {len(summary.members)} runs"
    if summary.is_full_refit:
        full = summary.full
        return f"every row, {full['seeds']} seed(s) (recipe of {full['chosen_on']})"
    folds = sorted(summary.folds_trained)
    if not folds:
        return ""
    seeds = f", {summary.seeds} seeds each" if summary.seeds > 1 else ""  # --seeds N, averaged per fold
    if len(folds) == 1:
        return f"fold {folds[0]}{seeds}"
    consecutive = folds == list(range(folds[0], folds[-1] + 1))
    named = f"folds {folds[0]}-{folds[-1]}" if consecutive else "folds " + ",".join(map(str, folds))
    return named + seeds


def recipe_summary(stages: list[dict]) -> str:
    """A recipe in one cell: each stage's name and epochs, 'head-precomputed 1, unfrozen 7'."""
    described = []
    for stage in stages:
        cycles, length, mult = stage.get("n_cycles", 1), stage.get("cycle_len", 1), stage.get("cycle_mult", 1)
        epochs = sum(length * mult**index for index in range(cycles))
        described.append(f"{stage.get('name', 'train')} {epochs:g}")
    return ", ".join(described)


def stages_run(summary: Summary) -> str:
    """Which stages ran, in a few words (train.stop_when_worse): '' when every stage ran or the run was
    trained without the stop; else where each fold stopped and what was skipped, e.g. "fold 0: 'unfrozen'
    1/7 epochs, skipped 'final'". A pure function of metrics.json."""
    described = []
    for fold, stages in summary.stages.items():
        stopped = [
            f"'{stage['stage']}' {stage['epochs']}/{stage['of']} epochs"
            for stage in stages
            if stage["status"] == "stopped"
        ]
        ran_then_stop = [
            f"'{stage['stage']}' did not pay"
            for stage in stages
            if stage["status"] == "ran" and stage.get("why")
        ]
        skipped = [f"'{stage['stage']}'" for stage in stages if stage["status"] == "skipped"]
        if stopped or ran_then_stop or skipped:
            parts = [*stopped, *ran_then_stop, *([f"skipped {', '.join(skipped)}"] if skipped else [])]
            described.append(f"fold {fold}: {', '.join(parts)}")
    return "; ".join(described)


def predicts(summary: Summary) -> str:
    """The weight files that predict (metrics.json's prediction, chosen on OOF), e.g. 'stage-1+last'."""
    chosen = summary.prediction
    return "+".join(chosen["weights"]) if chosen else ""


def setting_columns(configs: dict[str, dict]) -> dict[str, dict]:
    """run -> {setting: value} for the settings that differ between runs. Runs with recipes of different
    lengths (a quick run beside full ones) differ in every key of the stages one has and the other lacks:
    their recipes are one `stages` column (names and epochs) instead of a column per stage key."""
    same_length = len({len(saved.get("stages", [])) for saved in configs.values()}) <= 1
    settings = {}
    for run, saved in configs.items():
        shown = saved if same_length else {k: v for k, v in saved.items() if k != "stages"}
        flat = {
            k: json.dumps(v) if isinstance(v, list) else v for k, v in flatten(shown).items() if k != "path"
        }
        if not same_length:
            flat["stages"] = recipe_summary(saved.get("stages", []))
        settings[run] = flat
    keys = sorted({key for values in settings.values() for key in values})
    differing = [
        key
        for key in keys
        if len({json.dumps(values.get(key), default=str) for values in settings.values()}) > 1
    ]
    return {run: {key: values.get(key, "") for key in differing} for run, values in settings.items()}


def runs_table(config: Config) -> pd.DataFrame:
    """One row per run: CV, what it trained, minutes, and every setting that differs between the trained
    runs (an ensemble says how many runs it blends; `kit ensemble` printed which, its metrics.json keeps
    them)."""
    rows, configs = [], {}
    for run_dir in list_runs(config):
        run = Run(run_dir)
        row = {"run": run_dir.name, "cv": np.nan, "cv_uncalibrated": np.nan, "metric": "(unfinished)"}
        row |= {"trained": "(unfinished)", "minutes": 0.0, "stopped": "", "predicts": ""}
        summary = None
        try:
            summary = run.summary() if run.summary_file.exists() else None
        except RunError:  # made by another kit, or damaged: listed, not read (kit predict says why)
            row["metric"] = "(another kit's layout)"
        if summary is not None:
            row |= {
                "cv": summary.cv,  # as submitted (calibrated)
                "cv_uncalibrated": summary.cv_uncalibrated,
                "metric": summary.metric,
                "trained": trained(summary) or "(unfinished)",
                "minutes": round(summary.seconds / 60, 1),
                "stopped": stages_run(summary),  # where train.stop_when_worse stopped, what it skipped
                "predicts": predicts(summary),
            }
        rows.append(row)
        # an ensemble's config.json is its first run's: its settings say nothing new
        if summary is None or not summary.is_ensemble:
            configs[run_dir.name] = read_json(run.config_file)
    settings = setting_columns(configs)
    for row in rows:
        row.update(settings.get(row["run"], dict.fromkeys(next(iter(settings.values()), {}), "")))
    return pd.DataFrame(rows)
