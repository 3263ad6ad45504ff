"""Seeds of a fold run (`kit train COMP --fold K|all --seeds N`): the same recipe trained N times per fold,
each seed with its own randomness (initial weights, batches, augmentation), averaged like snapshots.

Seed 0 trains in fold-K/ as a fold of one seed does, seed S in fold-K/seed-S/ (kit.run.FoldFolder.seed);
each seed's own kept views, OOF and result are written under its seed folder. After a fold's last seed,
each candidate weight file's kept OOF views in fold-K/ become the arithmetic mean over the seeds, the
fold's OOF and score are made again from them, and only then is fold-K/result.json written: selection and
calibration read the average, and --resume sees the fold unfinished until every seed is done. `kit predict`
averages each chosen file's per-view test probabilities over its seeds in the same way before it blends.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from kit.config import Config
from kit.errors import KitError
from kit.run import FoldFolder, FoldResult

# Seed S trains with train.seed + SEED_STEP * S: far enough apart that fold K of seed S never draws the
# initial weights (torch.manual_seed(train.seed + fold)) of fold K + 1 of seed S - 1.
SEED_STEP = 1000


def check_seeds(config: Config, seeds: int) -> str | None:
    """--seeds N as a fold run takes it (N >= 1, else one line), and the line said when train.stop_when_worse
    is on: every seed then stops where seed 0 of its fold did (or fold 0's, where the folds follow fold 0),
    so that the seeds' files average file by file."""
    if seeds < 1:
        raise KitError(f"--seeds {seeds}: give 1 or more")
    if seeds == 1 or not config.train.stop_when_worse:
        return None
    return (
        f"--seeds {seeds} with train.stop_when_worse: each fold's seeds stop where its seed 0 does (its "
        "decision, or fold 0's where the folds follow fold 0), so their weight files average file by file"
    )


def seed_config(config: Config, seed: int) -> Config:
    """The config seed `seed` trains with: train.seed moved by SEED_STEP * seed (seed 0: as given). Pure."""
    if seed == 0:
        return config
    train = dataclasses.replace(config.train, seed=config.train.seed + SEED_STEP * seed)
    return dataclasses.replace(config, train=train)


def mean_over_seeds(per_seed: list[np.ndarray]) -> np.ndarray:
    """Per-view probabilities (views x rows x outputs) of one weight file from each seed, averaged over the
    seeds (the arithmetic mean, view by view), in float64. Pure."""
    return np.mean(np.asarray(per_seed, dtype=np.float64), axis=0)


def seed_files(fold: FoldFolder, path: Path, seeds: int) -> list[Path]:
    """A weight file of a fold (by its stem) as each of `seeds` seeds saved it, in seed order. Pure."""
    return [fold.seed(seed).weights(path.stem) for seed in range(seeds)]


def join_seeds(per_file_views: list[np.ndarray], seeds: int) -> list[np.ndarray]:
    """Each weight file's per-view probabilities averaged over its seeds, from a list that holds every
    file's seeds in a row (seed_files, file by file). Pure."""
    return [
        mean_over_seeds(per_file_views[start : start + seeds])
        for start in range(0, len(per_file_views), seeds)
    ]


def seed_records(config: Config, results: list[FoldResult]) -> list[dict]:
    """What metrics.json keeps of each seed of a fold: its number, the train.seed it trained with, its
    own OOF score and its epochs. Pure."""
    return [
        {
            "seed": seed,
            "train_seed": seed_config(config, seed).train.seed,
            "score": result.score,
            "history": result.history,
        }
        for seed, result in enumerate(results)
    ]
