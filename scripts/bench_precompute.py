"""Benchmark: an epoch on precomputed body features vs a frozen-body epoch with augmentation.

Both train only the head of the same model on the same fold of the digits competition; the first
reads cached pooled features, the second runs the frozen body forward on augmented images every
epoch. Prints seconds per epoch, the ratio, the one-off feature pass, and the machine.

    .venv/bin/python scripts/bench_precompute.py [--model efficientnet_lite0] [--image-size 64]
"""

from __future__ import annotations

import platform
import time

import click
import numpy as np
import torch

from kit import commands
from kit.competitions import load_competition
from kit.data.folds import load_folds
from kit.data.labels import load_labels
from kit.device import place
from kit.models import create_model
from kit.train import loop, stage


def epoch_seconds(config, stage_index: int, state: stage.FoldState) -> tuple[float, float]:
    """(median seconds per epoch as the loop records them: training + validation, without the stage's
    one-off set-up or checkpoint writes; wall seconds of the whole stage)."""
    started = time.perf_counter()
    first = len(state.history)
    loop.run_stage(config, stage_index, state, progress=False)
    wall = time.perf_counter() - started
    return float(np.median([record["seconds"] for record in state.history[first + 1 :]])), wall


@click.command()
@click.option("--model", default="efficientnet_lite0")
@click.option("--image-size", default=64)
@click.option("--epochs", default=4, help="Epochs per stage; the first of each is not counted.")
def main(model: str, image_size: int, epochs: int) -> None:
    base = load_competition("digits")
    commands.download(base)
    stages = (
        f"stages=[{{name='precomputed', freeze_to=-1, precompute=true, augment=false, cycle_len={epochs}}},"
        f" {{name='frozen-augmented', freeze_to=-1, precompute=false, augment=true, cycle_len={epochs}}}]"
    )
    config = load_competition("digits", [f"train.model={model}", f"train.image_size={image_size}", stages])
    labels = load_labels(config)
    folds = load_folds(config, labels)
    rows = np.arange(len(labels.ids))
    network = place(create_model(model, len(labels.classes), config.train.pretrained))
    meta = {"model": model, "classes": labels.classes}
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as scratch:
        state = stage.FoldState(network, labels, rows[folds != 0], rows[folds == 0], Path(scratch), meta, [])
        precomputed, precomputed_wall = epoch_seconds(config, 0, state)  # includes the one feature pass
        augmented, augmented_wall = epoch_seconds(config, 1, state)
    name = (
        torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    )
    click.echo(f"device: {name}; model {model} at {image_size}px; {len(state.train_rows)} training images")
    click.echo(
        f"epoch on precomputed features: {precomputed:.3f} s (stage of {epochs} epochs: "
        f"{precomputed_wall:.2f} s wall, feature pass and checkpoints included)"
    )
    click.echo(
        f"epoch frozen body + augmentation: {augmented:.3f} s "
        f"(stage of {epochs} epochs: {augmented_wall:.2f} s wall)"
    )
    click.echo(f"speed-up: {augmented / precomputed:.1f}x (acceptance: >= 10x in issue 3, >= 20x in issue 5)")


if __name__ == "__main__":
    main()
