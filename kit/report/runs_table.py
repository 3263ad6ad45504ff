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
from kit.run_folder import list_runs


def runs_table(config: Config) -> pd.DataFrame:
    """One row per run: CV, folds, minutes, and every setting that differs between the trained runs."""
    rows, settings = [], {}
    for run_dir in list_runs(config):
        summary = read_json(run_dir / "metrics.json") if (run_dir / "metrics.json").exists() else {}
        ensemble = summary.get("ensemble")
        rows.append(
            {
                "run": run_dir.name,
                "cv": summary.get("cv", np.nan),  # as submitted (calibrated)
                "cv_uncalibrated": summary.get("cv_uncalibrated", summary.get("cv", np.nan)),
                "metric": summary.get("metric", "(unfinished)"),
                "folds": "+".join(ensemble["runs"])
                if ensemble
                else ",".join(map(str, summary.get("folds_trained", []))),
                "minutes": round(summary.get("seconds", 0) / 60, 1),
            }
        )
        if not ensemble:  # an ensemble's config.json is its first run's: its settings say nothing new
            flat = flatten(read_json(run_dir / "config.json"))
            settings[run_dir.name] = {
                k: json.dumps(v) if isinstance(v, list) else v for k, v in flat.items() if k != "path"
            }
    keys = sorted({key for values in settings.values() for key in values})
    differing = [
        key
        for key in keys
        if len({json.dumps(values.get(key), default=str) for values in settings.values()}) > 1
    ]
    for row in rows:
        row.update({key: settings.get(row["run"], {}).get(key, "") for key in differing})
    return pd.DataFrame(rows)
