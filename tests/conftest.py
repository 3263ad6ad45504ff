"""Shared fixtures and helpers: an isolated project tree (so tests never touch the real data/, runs/ or
submissions/), the digits competition downloaded once per test run, one `invoke` for the CLI, and the
tiny-model overrides that keep training tests to seconds on a CPU.

Marks: `slow` (trains a model for more than a few seconds); `make test-fast` skips them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

REPO = Path(__file__).resolve().parent.parent


def invoke(*arguments) -> Result:
    """Run `kit ARGUMENTS...` in this process (click's runner), as a user would type it."""
    from kit.cli import main

    return CliRunner().invoke(main, [str(argument) for argument in arguments])


# The first line `kit new` writes: a competitor's own forks (`make new`) are not the shipped competitions the
# tests expect, and a fork named like a test's (kittens) or sharing a shipped slug would fail `make test`.
FORK_HEADER = "# Written by `kit new "


def _is_fork(folder: Path) -> bool:
    toml = folder / "competition.toml"
    return toml.is_file() and toml.read_text(errors="replace").startswith(FORK_HEADER)


def _copy_competitions(root: Path, source: Path = REPO / "competitions") -> None:
    """The shipped competitions (not the forks `kit new` wrote into this checkout) into root/competitions."""

    def ignored(directory: str, names: list[str]) -> list[str]:
        forks = [name for name in names if Path(directory) == source and _is_fork(source / name)]
        return forks + [name for name in names if name == "__pycache__"]

    shutil.copytree(source, root / "competitions", ignore=ignored)


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A temporary project root with a copy of competitions/: kit.paths reads KIT_PROJECT_ROOT at call
    time, and subprocesses (`python -m kit ...`) inherit it, so both stay inside."""
    root = tmp_path / "project"
    _copy_competitions(root)
    monkeypatch.setenv("KIT_PROJECT_ROOT", str(root))
    return root


@pytest.fixture(scope="session")
def digits_download(tmp_path_factory) -> Path:
    """data/raw/digits made once per test run (by the competition's own download hook); tests copy it."""
    root = tmp_path_factory.mktemp("digits-download")
    _copy_competitions(root)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KIT_PROJECT_ROOT", str(root))
        from kit import commands
        from kit.competitions import load_competition

        commands.download(load_competition("digits"))
    return root / "data" / "raw" / "digits"


def copy_download(source: Path, project: Path, name: str = "digits") -> Path:
    """A finished download copied into the project (copies, so a test may damage its own)."""
    target = project / "data" / "raw" / name
    shutil.copytree(source, target)
    return target


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
    "train.stop_when_worse=false",  # tests of other things keep every epoch (tests/test_stopping.py: on)
]


def tiny_recipe(cycles: tuple[int, ...], tta: int) -> list[str]:
    """TINY, keeping the competition's own stages, each cut to `cycles[i]` cycles: its recipe, in seconds."""
    kept = [value for value in TINY if not value.startswith("stages")]
    return [
        *kept,
        *(f"stages.{index}.n_cycles={count}" for index, count in enumerate(cycles)),
        f"predict.tta={tta}",
    ]


@pytest.fixture
def gpu_paths_on_cpu(monkeypatch) -> None:
    """The CPU takes the paths written for GPUs (bf16 autocast, channels_last, fused optimizer, compile,
    memory probe): kit.device.gpu_paths reads the variable at call time."""
    from kit.device import GPU_PATHS_ON_CPU

    monkeypatch.setenv(GPU_PATHS_ON_CPU, "1")


@pytest.fixture
def digits(project, digits_download):
    """The embedded digits competition, downloaded into the temporary project; returns a loader of
    its config with the tiny-model overrides plus any extra `key=value` strings."""
    from kit.competitions import load_competition

    copy_download(digits_download, project)
    return lambda *extra: load_competition("digits", [*TINY, *extra])


def fold_state(config, fold_dir):
    """Fold 0 of a loaded competition, ready for kit.train.stage / kit.train.loop: a fresh model, seeded."""
    import numpy as np
    import torch

    from kit import models
    from kit.data.folds import load_folds
    from kit.data.labels import load_labels
    from kit.train import stage

    labels = load_labels(config)
    folds = load_folds(config, labels)
    torch.manual_seed(0)
    model = models.create_model(config.train.model, len(labels.classes), config.train.pretrained)
    rows = np.arange(len(labels.ids))
    meta = models.weights_meta(config, labels.classes)
    return stage.FoldState(model, labels, rows[folds != 0], rows[folds == 0], fold_dir, meta, [])


@pytest.fixture
def waits(monkeypatch):
    """The Kaggle calls' retry waits (seconds), recorded instead of slept."""
    from kit.kaggle import answers

    slept: list[float] = []
    monkeypatch.setattr(answers, "pause", slept.append)
    return slept
