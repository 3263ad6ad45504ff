"""A run folder, runs/<name>/<run-id>/: every path inside it, and the typed records written there.

One owner for each file's name (as timm's CheckpointSaver owns its checkpoints'): code asks a `Run` for
`run.summary_file`, `run.fold(0).weights("snapshot-3")`, never joins a file name itself.

    config.json provenance.json plan.json   the resolved config, where and how it ran, what --resume continues
    metrics.json                            the run's Summary (kit.predict.summary writes it once)
    oof.npy calibration.json                the chosen OOF prediction, and its Calibration
    test-probabilities.npy submission.json  the uncalibrated test prediction, and the SubmissionRecord
    fold-K/                                 a FoldFolder: weight files, resume.pt, result.json, kept views
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class FoldFolder:
    """runs/<name>/<run-id>/fold-K/: one fold's weight files, its resume point and what it predicted."""

    folder: Path
    number: int

    def weights(self, name: str) -> Path:
        """A weight file by stem: "best", "last", "ema", "snapshot-3", "ema-snapshot-3", "stage-0"."""
        return self.folder / f"{name}.pt"

    @property
    def best(self) -> Path:  # best validation score so far
        return self.weights("best")

    @property
    def last(self) -> Path:  # the last stage's final weights
        return self.weights("last")

    def ema_weights(self) -> Path:  # the moving average's final weights (train.ema_decay)
        return self.weights("ema")

    def snapshot(self, number: int) -> Path:  # at the end of SGDR cycle `number` (1-based, over the fold)
        return self.weights(f"snapshot-{number}")

    def ema_snapshot(self, number: int) -> Path:
        return self.weights(f"ema-snapshot-{number}")

    def stage_weights(self, stage_index: int) -> Path:  # a stage that joins prediction: its final weights
        return self.weights(f"stage-{stage_index}")

    def snapshots(self, moving_average: bool = False) -> list[Path]:
        """Snapshot files present, in the order they were taken."""
        prefix = "ema-snapshot-" if moving_average else "snapshot-"
        found = self.folder.glob(f"{prefix}*.pt")
        return sorted(found, key=lambda path: int(path.stem.rsplit("-", 1)[1]))

    @property
    def resume_point(self) -> Path:  # everything needed to continue after the last completed epoch
        return self.folder / "resume.pt"

    @property
    def result_file(self) -> Path:  # the FoldResult: written when the fold is done
        return self.folder / "result.json"

    @property
    def oof(self) -> Path:  # the fold's validation rows as its default prediction made them
        return self.folder / "oof.npy"

    def kept_oof(self, weights: str) -> Path:
        """Per-view OOF probabilities of one weight file (views x rows x outputs, float32)."""
        return self.folder / f"oof-{weights}.npy"

    def kept_test(self, weights: str) -> Path:
        """Per-view test probabilities of one weight file, as the run's prediction made them."""
        return self.folder / f"test-{weights}.npy"

    def kept_oof_names(self) -> list[str]:
        """Stems of the weight files whose per-view OOF probabilities are kept."""
        return sorted(path.stem.removeprefix("oof-") for path in self.folder.glob("oof-*.npy"))

    def pseudo_labels(self, stage_index: int) -> Path:  # test images labelled for a stage
        return self.folder / f"pseudo-labels-stage-{stage_index}.json"

    def pseudo_label_files(self) -> list[Path]:
        return sorted(self.folder.glob("pseudo-labels-stage-*.json"))

    def holds_training(self) -> bool:
        """A completed epoch (a resume point or weights) or a finished fold."""
        return any(self.folder.glob("*.pt")) or self.result_file.exists()


@dataclass(frozen=True)
class Run:
    """runs/<name>/<run-id>/: a trained run or an ensemble of runs."""

    folder: Path

    @property
    def name(self) -> str:
        return self.folder.name

    def fold(self, number: int) -> FoldFolder:
        return FoldFolder(self.folder / f"fold-{number}", number)

    def folds_present(self) -> list[FoldFolder]:
        found = (path for path in self.folder.glob("fold-*") if path.is_dir())
        numbers = sorted(int(path.name.split("-", 1)[1]) for path in found)
        return [self.fold(number) for number in numbers]

    def holds_training(self) -> bool:
        return any(fold.holds_training() for fold in self.folds_present())

    @property
    def config_file(self) -> Path:
        return self.folder / "config.json"

    @property
    def provenance_file(self) -> Path:
        return self.folder / "provenance.json"

    @property
    def plan_file(self) -> Path:  # which folds `kit train` was asked for: what --resume continues
        return self.folder / "plan.json"

    @property
    def summary_file(self) -> Path:
        return self.folder / "metrics.json"

    @property
    def oof(self) -> Path:  # every training row's OOF probabilities as the chosen prediction makes them
        return self.folder / "oof.npy"

    @property
    def calibration_file(self) -> Path:
        return self.folder / "calibration.json"

    @property
    def test_probabilities(self) -> Path:  # uncalibrated, folds averaged: what an ensemble blends
        return self.folder / "test-probabilities.npy"

    @property
    def submission_record_file(self) -> Path:
        return self.folder / "submission.json"

    @property
    def bad_images(self) -> Path:  # training images that could not be read (skipped)
        return self.folder / "bad-images.json"

    @property
    def bad_test_images(self) -> Path:
        return self.folder / "bad-test-images.json"

    def lr_find(self, stage_index: int, suffix: str = ".json") -> Path:
        return self.folder / f"lr-find-stage{stage_index}{suffix}"

    def lr_find_files(self, suffix: str) -> list[Path]:
        return sorted(self.folder.glob(f"lr-find*{suffix}"))

    def plot(self, name: str) -> Path:  # a report's figure: history, confusion, most-wrong, ...
        return self.folder / f"{name}.png"

    @property
    def report_file(self) -> Path:
        return self.folder / "report.html"

    @property
    def kaggle_folder(self) -> Path:  # kit notebook's package, notebook and fetched outputs
        return self.folder / "kaggle"
