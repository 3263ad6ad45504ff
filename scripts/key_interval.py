"""The noise of an answer-key comparison between arms of scripts/compare_stop.py: each arm's submission
scored per test photo (log loss, clipped as Kaggle clips), then a paired bootstrap over the photos of the
difference of each arm from the first (the same photos in every resample), with a 95% interval.

    .venv/bin/python scripts/key_interval.py --data /work/shared/data/cats-vs-dogs-dev \
        /tmp/w31b/cats-full/full /tmp/w31b/cats-default/default /tmp/w31b/cats-quick/quick
    # a --holdout arm (dog breeds): the key is the held-out photos' breeds in the arm's own labels.csv
    .venv/bin/python scripts/key_interval.py --data /work/shared/data/dog-breed-identification-sample \
        --competition dog-breeds /tmp/w31b/dogs-full/full /tmp/w31b/dogs-quick/quick

An arm folder is compare_stop.py's project folder of one arm (runs/, submissions/, data/raw/).
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np
import pandas as pd


def row_losses(arm: Path, competition: str, data_dir: Path, clip: float) -> pd.Series:
    """The arm's submission's log loss per test photo (index: id)."""
    (run_dir,) = [p for p in (arm / "runs" / competition).iterdir() if (p / "submission.json").exists()]
    record = json.loads((run_dir / "submission.json").read_text())
    frame = pd.read_csv(arm / "submissions" / record["file"], dtype={"id": str}).set_index("id")
    if (data_dir / "answers.csv").exists():  # binary: id,label with 1 for the positive class
        answers = pd.read_csv(data_dir / "answers.csv", dtype={"id": str}).set_index("id")["label"]
        truth = answers.loc[frame.index].to_numpy(dtype=int)
        probability = np.clip(frame["label"].to_numpy(dtype=float), clip, 1 - clip)
        losses = -(truth * np.log(probability) + (1 - truth) * np.log(1 - probability))
        return pd.Series(losses, index=frame.index)
    # held out of training by compare_stop.py --holdout: in the full labels, not in the arm's
    labels = pd.read_csv(data_dir / "labels.csv", dtype={"id": str}).set_index("id").iloc[:, 0]
    probabilities = np.clip(frame.to_numpy(dtype=float), clip, 1 - clip)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    columns = list(frame.columns)
    truth = [columns.index(labels[identifier]) for identifier in frame.index]
    return pd.Series(-np.log(probabilities[np.arange(len(truth)), truth]), index=frame.index)


@click.command()
@click.option("--data", "data_dir", type=click.Path(exists=True, path_type=Path), required=True)
@click.option("--competition", default="cats-vs-dogs", show_default=True)
@click.option("--clip", type=float, default=1e-15, show_default=True)
@click.option("--resamples", type=int, default=10_000, show_default=True)
@click.argument("arms", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
def main(data_dir, competition, clip, resamples, arms) -> None:
    losses = [row_losses(arm, competition, data_dir, clip) for arm in arms]
    index = losses[0].index
    table = np.stack([item.loc[index].to_numpy() for item in losses])  # arms x photos
    draws = np.random.default_rng(0).integers(0, len(index), (resamples, len(index)))
    click.echo(f"{len(index)} test photos, {resamples} paired bootstrap resamples; the first arm: {arms[0]}")
    for arm, row in zip(arms, table, strict=True):
        difference = (row - table[0])[draws].mean(axis=1)
        low, high = np.percentile(difference, [2.5, 97.5])
        click.echo(
            f"{str(arm):<48} key {row.mean():.4f}  minus the first {row.mean() - table[0].mean():+.4f} "
            f"(95% {low:+.4f} to {high:+.4f})"
        )


if __name__ == "__main__":
    main()
