"""Compare, on the digits local leaderboard, the plain single-stage training (the kit's first version:
one stage of 6 epochs at 64 px, no TTA) with the competition's default recipe (stages, snapshots, TTA).

Both train fold 0 from the same pretrained weights in the same run of this script, predict the test
set, and are scored against the held-out answer key. Prints CV, leaderboard accuracy and minutes.

    .venv/bin/python scripts/compare_recipe.py
"""

from __future__ import annotations

import platform
import time

import click
import pandas as pd
import torch

from kit import commands
from kit.config import load_competition
from kit.files import read_json
from kit.hooks import load_hooks
from kit.paths import raw_dir

PLAIN = [
    "stages=[]",
    "train.epochs=6",
    "train.image_size=64",
    "predict.tta=0",
    "train.lr=2e-3",
    "train.lr_find=false",
]


def train_and_score(overrides: list[str]) -> dict:
    config = load_competition("digits", overrides)
    started = time.time()
    run_dir = commands.train(config, "0")
    csv = commands.predict(config, run_dir.name)
    minutes = (time.time() - started) / 60
    frame = pd.read_csv(csv, dtype=str)
    leaderboard = load_hooks(config)["score"](frame, raw_dir(config))["accuracy"]
    return {
        "run": run_dir.name,
        "cv": read_json(run_dir / "metrics.json")["cv"],
        "leaderboard": leaderboard,
        "minutes": minutes,
    }


@click.command()
def main() -> None:
    commands.download(load_competition("digits"))
    plain = train_and_score(PLAIN)
    recipe = train_and_score([])
    device = (
        torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else f"CPU {platform.machine()}, {torch.get_num_threads()} threads"
    )
    click.echo(f"device: {device}")
    for name, result in (("plain single stage", plain), ("default recipe", recipe)):
        click.echo(
            f"{name:<20} CV accuracy {result['cv']:.4f}  local leaderboard {result['leaderboard']:.4f}  "
            f"{result['minutes']:.1f} min  (run {result['run']})"
        )
    click.echo(
        f"leaderboard difference (recipe - plain): {recipe['leaderboard'] - plain['leaderboard']:+.4f}"
    )


if __name__ == "__main__":
    main()
