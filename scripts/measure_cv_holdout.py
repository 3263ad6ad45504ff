"""The CV the kit reports against a held-out key, on a labelled photo set without an answer key (the
dog-breed-identification sample): part of its labelled photos is held out as the test set, the rest
trains (`kit train --fold F`, then `kit predict`), and the submission is scored on the held-out labels.

    nice .venv/bin/python scripts/measure_cv_holdout.py \
        --data /work/shared/data/dog-breed-identification-sample --breeds 20 --image-size 96 --fold all

The data folder is copied, never written: --breeds B keeps the B breeds with the most photos (their columns
only in sample_submission.csv), --holdout H holds out that share of each breed's photos (seeded) as
test/<id>.jpg with their labels kept aside as the key. Prints the run's CV (cross-fitted, its in-sample
figure, its bootstrap interval when given), the key's multi-class log loss with the upload's clip and its
95% bootstrap interval (key rows resampled), whether the CV falls inside it, the machine, the load and the
times; writes results.json in --work.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import click
import numpy as np
import pandas as pd
from measuring import child_cpu_seconds

REPO = Path(__file__).resolve().parent.parent
MARKER = ".download-complete"  # kit.files.DOWNLOAD_MARKER


def split_photos(source: Path, target: Path, breeds: int | None, holdout: float, seed: int) -> pd.DataFrame:
    """Copy the kept breeds' photos: the held-out share of each breed to test/, the rest to train/ with
    labels.csv; returns the key (id, breed) of the held-out photos."""
    labels = pd.read_csv(source / "labels.csv", dtype={"id": str})
    label_column = labels.columns[1]
    kept = labels[label_column].value_counts().index[:breeds] if breeds else labels[label_column].unique()
    labels = labels[labels[label_column].isin(kept)]
    random = np.random.default_rng(seed)
    held = []
    for _, group in labels.groupby(label_column):
        count = max(1, round(len(group) * holdout))
        held += list(random.choice(group["id"].to_numpy(), size=count, replace=False))
    key = labels[labels["id"].isin(held)].reset_index(drop=True)
    train = labels[~labels["id"].isin(held)]
    (target / "train").mkdir(parents=True)
    (target / "test").mkdir()
    for identifier in train["id"]:
        shutil.copy(source / "train" / f"{identifier}.jpg", target / "train" / f"{identifier}.jpg")
    for identifier in key["id"]:
        shutil.copy(source / "train" / f"{identifier}.jpg", target / "test" / f"{identifier}.jpg")
    train.to_csv(target / "labels.csv", index=False)
    columns = sorted(kept)
    sample = pd.DataFrame({"id": key["id"], **{name: 1 / len(columns) for name in columns}})
    sample.to_csv(target / "sample_submission.csv", index=False)
    (target / MARKER).write_text("copied by scripts/measure_cv_holdout.py\n")
    return key.rename(columns={label_column: "label"})


def key_losses(submission: Path, key: pd.DataFrame, clip: float) -> np.ndarray:
    """Each held-out photo's log loss as Kaggle scores the file: clipped, each row renormalised."""
    frame = pd.read_csv(submission, dtype={"id": str}).set_index("id").loc[key["id"]]
    probabilities = np.clip(frame.to_numpy(dtype=float), clip, 1 - clip)
    probabilities /= probabilities.sum(1, keepdims=True)
    columns = list(frame.columns)
    truth = np.array([columns.index(label) for label in key["label"]])
    return -np.log(probabilities[np.arange(len(truth)), truth])


@click.command()
@click.option(
    "--data", "data_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True
)
@click.option("--competition", default="dog-breeds", show_default=True)
@click.option("--breeds", type=int, default=None, help="Keep the B breeds with the most photos.")
@click.option("--holdout", type=float, default=0.33, show_default=True, help="Share of each breed held out.")
@click.option("--seed", type=int, default=0, show_default=True, help="The hold-out draw's seed.")
@click.option("--image-size", type=int, default=None, help="train.image_size.")
@click.option("--fold", default="all", show_default=True, help="Fold(s) trained: a number or all.")
@click.option("--recipe", default="quick", show_default=True, help="train.recipe: quick or full.")
@click.option("--work", type=click.Path(path_type=Path), required=True, help="Scratch folder (new).")
@click.option("--set", "settings", multiple=True, help="More KEY=VALUE overrides for kit train.")
def main(data_dir, competition, breeds, holdout, seed, image_size, fold, recipe, work, settings) -> None:
    from kit.predict.crossfit import bootstrap_interval

    work.mkdir(parents=True, exist_ok=False)
    root = work / "project"
    shutil.copytree(
        REPO / "competitions", root / "competitions", ignore=shutil.ignore_patterns("__pycache__")
    )
    key = split_photos(data_dir, root / "data" / "raw" / competition, breeds, holdout, seed)
    overrides = [
        f"train.recipe={recipe}",
        *([f"train.image_size={image_size}"] if image_size else []),
        *settings,
    ]
    environment = {**os.environ, "PYTHONPATH": str(REPO), "KIT_PROJECT_ROOT": str(root)}
    load_before = os.getloadavg()
    started, cpu_started = time.time(), child_cpu_seconds()
    with (work / "kit.log").open("w") as output:
        for command in (
            [
                "train",
                competition,
                "--fold",
                fold,
                *(item for value in overrides for item in ("--set", value)),
            ],
            ["predict", competition],
        ):
            subprocess.run(
                [sys.executable, "-m", "kit", *command], cwd=REPO, env=environment, check=True, stdout=output,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
    seconds, cpu_seconds, load_after = (
        time.time() - started,
        child_cpu_seconds() - cpu_started,
        os.getloadavg(),
    )
    (run_dir,) = [p for p in (root / "runs" / competition).iterdir() if (p / "submission.json").exists()]
    summary = json.loads((run_dir / "metrics.json").read_text())
    record = json.loads((run_dir / "submission.json").read_text())
    clip = json.loads((run_dir / "config.json").read_text())["submission"]["clip_epsilon"]
    losses = key_losses(root / "submissions" / record["file"], key, clip)
    key_score = float(losses.mean())
    low, high = bootstrap_interval(lambda draw: float(losses[draw].mean()), len(losses))
    inside = low <= summary["cv"] <= high
    in_sample_inside = low <= summary["cv_in_sample"] <= high
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = f"CPU {platform.machine()}, {os.cpu_count()} cores"
    result = {
        "date": stamp,
        "machine": machine,
        "load_average_before_after": [round(load_before[0], 1), round(load_after[0], 1)],
        "training_photos": int(summary.get("cv_rows", 0)),
        "key_photos": len(key),
        "breeds": int(key["label"].nunique()),
        "fold": fold,
        "recipe": recipe,
        "image_size": image_size,
        "settings": list(settings),
        "cv": summary["cv"],
        "cv_in_sample": summary["cv_in_sample"],
        "cv_cross_fitted_by": summary.get("cv_cross_fitted_by"),
        "cv_interval": summary.get("cv_interval"),
        "calibration_pays": summary.get("calibration_pays"),
        "cv_uncalibrated_cross_fitted": summary.get("cv_uncalibrated_cross_fitted"),
        "key_log_loss": key_score,
        "key_interval": [low, high],
        "cv_inside_key_interval": inside,
        "in_sample_inside_key_interval": in_sample_inside,
        "seconds": round(seconds, 1),
        "cpu_seconds": round(cpu_seconds, 1),
        "run": run_dir.name,
    }
    (work / "results.json").write_text(json.dumps(result, indent=1))
    click.echo(json.dumps(result, indent=1))
    click.echo(
        f"{stamp}; {machine}; {result['breeds']} breeds, {result['training_photos']} CV rows, {len(key)} key "
        f"photos: CV {summary['cv']:.4f} (in sample {summary['cv_in_sample']:.4f}) against the key "
        f"{key_score:.4f} [{low:.4f}-{high:.4f}]: {'inside' if inside else 'OUTSIDE'}"
    )


if __name__ == "__main__":
    main()
