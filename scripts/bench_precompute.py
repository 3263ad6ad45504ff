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

from kit import pipeline, train
from kit.config import load_competition
from kit.data import load_folds, load_labels
from kit.models import create_model
from kit.predict import device


def epoch_seconds(config, stage_index: int, state: train.FoldState, repeats: int) -> float:
    """Median wall time of one epoch of the stage (the first, warm-up epoch is not counted)."""
    timings = []
    for _ in range(repeats + 1):
        started = time.perf_counter()
        train.run_stage(config, stage_index, state, progress=False)
        timings.append(time.perf_counter() - started)
    return float(np.median(timings[1:]))


@click.command()
@click.option("--model", default="efficientnet_lite0")
@click.option("--image-size", default=64)
@click.option("--repeats", default=3)
def main(model: str, image_size: int, repeats: int) -> None:
    base = load_competition("digits")
    pipeline.download(base)
    stages = (
        "stages=[{name='precomputed', freeze_to=-1, precompute=true, augment=false, cycle_len=1},"
        " {name='frozen-augmented', freeze_to=-1, precompute=false, augment=true, cycle_len=1}]"
    )
    config = load_competition("digits", [f"train.model={model}", f"train.image_size={image_size}", stages])
    labels = load_labels(config)
    folds = load_folds(config, labels)
    rows = np.arange(len(labels.ids))
    network = create_model(model, len(labels.classes), config.train.pretrained).to(device())
    meta = {"model": model, "classes": labels.classes}
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as scratch:
        state = train.FoldState(network, labels, rows[folds != 0], rows[folds == 0], Path(scratch), meta, [])
        started = time.perf_counter()
        train.run_stage(config, 0, state, progress=False)  # computes (or reads) the feature cache once
        first = time.perf_counter() - started
        precomputed = epoch_seconds(config, 0, state, repeats)
        augmented = epoch_seconds(config, 1, state, repeats)
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    click.echo(f"device: {name}; model {model} at {image_size}px; {len(state.train_rows)} training images")
    click.echo(f"first precompute stage (incl. feature pass when not cached): {first:.2f} s")
    click.echo(f"epoch on precomputed features: {precomputed:.3f} s")
    click.echo(f"epoch frozen body + augmentation: {augmented:.3f} s")
    click.echo(f"speed-up: {augmented / precomputed:.1f}x (acceptance: >= 10x)")


if __name__ == "__main__":
    main()
