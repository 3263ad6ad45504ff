"""Whole photos squished into the cache's square, or an aspect cap: which scores better by CV on real photos
of varied sizes (issue 13: `data.max_aspect`).

    .venv/bin/python scripts/compare_aspect.py --data ../shared/data/dog-breed-identification-sample

The data folder is copied once (never written) into a scratch project (KIT_PROJECT_ROOT) as
data/raw/<competition>; every setting of `data.max_aspect` (--aspects; 0 = squish the whole photo, 1 = the
centre square, as the kit cached before issue 13) then trains the same folds (--folds, default fold 0)
with the same recipe (--recipe, default quick) and the same seed, and the CV of each is printed with its
wall and CPU minutes, the machine and the date; results.json is written in --work. Only the cache differs
between the arms (each cap has its own cache key).
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
from measuring import child_cpu_seconds

REPO = Path(__file__).resolve().parent.parent
MARKER = ".download-complete"  # kit.files.DOWNLOAD_MARKER


@click.command()
@click.option(
    "--data", "data_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True
)
@click.option("--competition", default="dog-breeds", show_default=True)
@click.option("--aspects", default="0,1.33,1", show_default=True, help="data.max_aspect values, in order.")
@click.option("--folds", "fold", default="0", show_default=True, help="--fold for kit train (0, all).")
@click.option("--recipe", default="quick", show_default=True, help="train.recipe for every arm.")
@click.option("--image-size", type=int, default=None, help="train.image_size for every arm.")
@click.option("--work", type=click.Path(path_type=Path), default=None, help="Scratch folder (default /tmp).")
def main(data_dir, competition, aspects, fold, recipe, image_size, work) -> None:
    import torch  # the machine's description only

    work = work or Path(f"/tmp/compare-aspect-{datetime.now(UTC):%Y%m%d-%H%M%S}")
    shutil.copytree(
        REPO / "competitions", work / "competitions", ignore=shutil.ignore_patterns("__pycache__")
    )
    raw = work / "data" / "raw" / competition
    shutil.copytree(data_dir, raw)
    (raw / MARKER).write_text("copied by scripts/compare_aspect.py\n")
    environment = {**os.environ, "PYTHONPATH": str(REPO), "KIT_PROJECT_ROOT": str(work)}
    common = [f"train.recipe={recipe}", *([f"train.image_size={image_size}"] if image_size else [])]
    results = {}
    for aspect in aspects.split(","):
        settings = [item for value in [*common, f"data.max_aspect={aspect}"] for item in ("--set", value)]
        started, cpu_started = time.time(), child_cpu_seconds()
        with (work / f"aspect-{aspect}.log").open("w") as log:
            subprocess.run(
                [sys.executable, "-m", "kit", "train", competition, "--fold", fold, *settings],
                cwd=REPO, env=environment, check=True, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        seconds, cpu_seconds = time.time() - started, child_cpu_seconds() - cpu_started
        runs = sorted((work / "runs" / competition).iterdir())
        summary = json.loads((runs[-1] / "metrics.json").read_text())
        results[aspect] = {
            "cv": summary["cv"],
            "cv_uncalibrated": summary.get("cv_uncalibrated", summary["cv"]),
            "metric": summary["metric"],
            "folds": summary["folds_trained"],
            "seconds": round(seconds, 1),
            "cpu_seconds": round(cpu_seconds, 1),
            "run": runs[-1].name,
        }
        click.echo(f"max_aspect {aspect}: {results[aspect]}", err=True)
    machine = (
        torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else f"CPU {platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    )
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    click.echo(f"{stamp}; {machine}; {data_dir.name}; recipe {recipe}; folds {fold}")
    click.echo(f"{'max_aspect':<12}{'CV':>9}{'CV uncal.':>11}{'minutes':>9}{'CPU min':>9}")
    for aspect, result in results.items():
        click.echo(
            f"{aspect:<12}{result['cv']:>9.4f}{result['cv_uncalibrated']:>11.4f}"
            f"{result['seconds'] / 60:>9.1f}{result['cpu_seconds'] / 60:>9.1f}"
        )
    (work / "results.json").write_text(
        json.dumps({"date": stamp, "machine": machine, "recipe": recipe, "arms": results}, indent=1)
    )


if __name__ == "__main__":
    main()
