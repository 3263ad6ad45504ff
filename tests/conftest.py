"""Shared fixtures: an isolated project tree, so tests never touch the real data/, runs/ or submissions/."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import kit.config
import kit.runs
import kit.submission

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A temporary project root with a copy of competitions/; kit's paths point into it.

    Subprocesses inherit KIT_PROJECT_ROOT, so `python -m kit ...` run by a test also stays inside it.
    """
    root = tmp_path / "project"
    shutil.copytree(REPO / "competitions", root / "competitions", ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setenv("KIT_PROJECT_ROOT", str(root))
    monkeypatch.setattr(kit.config, "PROJECT_ROOT", root)
    monkeypatch.setattr(kit.config, "COMPETITIONS_DIR", root / "competitions")
    monkeypatch.setattr(kit.runs, "DATA_DIR", root / "data")
    monkeypatch.setattr(kit.runs, "RUNS_DIR", root / "runs")
    monkeypatch.setattr(kit.runs, "SUBMISSIONS_DIR", root / "submissions")
    monkeypatch.setattr(kit.submission, "SUBMISSIONS_DIR", root / "submissions")
    return root


# Small and fast on a 2-core CPU: a tiny timm model from scratch, 32 px, few epochs.
TINY = [
    "train.model=test_efficientnet",
    "train.pretrained=false",
    "train.image_size=32",
    "train.batch_size=64",
    "train.epochs=1",
    "train.lr=3e-3",
    "stages=[{}]",  # one plain 1-epoch stage, whatever recipe the competition ships
    "train.lr_find=false",
]


def tiny_recipe(cycles: tuple[int, ...], tta: int) -> list[str]:
    """TINY, but keeping the competition's own stages, each cut to `cycles[i]` cycles: its recipe, in seconds."""
    kept = [value for value in TINY if not value.startswith("stages")]
    return [*kept, *(f"stages.{index}.n_cycles={count}" for index, count in enumerate(cycles)), f"train.tta={tta}"]


@pytest.fixture
def digits(project):
    """The embedded digits competition, downloaded into the temporary project; returns a loader of
    its config with the tiny-model overrides plus any extra `key=value` strings."""
    from kit import pipeline
    from kit.config import load_competition

    pipeline.download(load_competition("digits"))
    return lambda *extra: load_competition("digits", [*TINY, *extra])


def fold_state(config, fold_dir):
    """Fold 0 of a loaded competition, ready for kit.stage / kit.train: a fresh model, seeded."""
    import numpy as np
    import torch

    from kit import models, stage
    from kit.data import load_folds, load_labels

    labels = load_labels(config)
    folds = load_folds(config, labels)
    torch.manual_seed(0)
    model = models.create_model(config.train.model, len(labels.classes), config.train.pretrained)
    rows = np.arange(len(labels.ids))
    meta = {"model": config.train.model, "classes": labels.classes}
    return stage.FoldState(model, labels, rows[folds != 0], rows[folds == 0], fold_dir, meta, [])
