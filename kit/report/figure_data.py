"""The rows and numbers behind the report's figures, as pure functions of plain values: the image grids'
rows (most wrong, most uncertain, most confidently right), confusion counts and the most confused pairs,
the learning rate as trained (from the schedule object the loop used) and each epoch's place on it, image
sizes read from file headers, and the grids' captions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from kit.config import Config
from kit.report import plots
from kit.train import schedule

GRID_IMAGES = 16  # images per grid: 4 x 4
CONFUSED_PAIRS = 15  # rows in the table of most confused class pairs
SIZE_SAMPLE = 4000  # image headers read per set for the size histogram (evenly spaced sample)


def predicted_rows(probabilities: np.ndarray) -> np.ndarray:
    """The rows with a prediction (out-of-fold rows of folds that were not trained are NaN)."""
    return np.flatnonzero(~np.isnan(probabilities).any(1))


def _true_probability(probabilities: np.ndarray, targets: np.ndarray, rows: np.ndarray) -> np.ndarray:
    return probabilities[rows, targets[rows]]


def most_wrong(probabilities: np.ndarray, targets: np.ndarray, count: int = GRID_IMAGES) -> np.ndarray:
    """Misclassified rows, the least probability given to the true label first (where mislabels hide)."""
    rows = predicted_rows(probabilities)
    rows = rows[probabilities[rows].argmax(1) != targets[rows]]
    return rows[np.argsort(_true_probability(probabilities, targets, rows), kind="stable")][:count]


def most_uncertain(probabilities: np.ndarray, targets: np.ndarray, count: int = GRID_IMAGES) -> np.ndarray:
    """Rows where the top two classes are closest (smallest margin), whatever the label."""
    rows = predicted_rows(probabilities)
    top_two = np.sort(probabilities[rows], 1)[:, -2:]
    return rows[np.argsort(top_two[:, 1] - top_two[:, 0], kind="stable")][:count]


def most_confident_right(
    probabilities: np.ndarray, targets: np.ndarray, count: int = GRID_IMAGES
) -> np.ndarray:
    """Correctly classified rows, the highest probability of the true label first."""
    rows = predicted_rows(probabilities)
    rows = rows[probabilities[rows].argmax(1) == targets[rows]]
    return rows[np.argsort(-_true_probability(probabilities, targets, rows), kind="stable")][:count]


def confusion_counts(targets: np.ndarray, predictions: np.ndarray, class_count: int) -> np.ndarray:
    """class_count x class_count counts: row = true class, column = predicted class."""
    return np.bincount(targets * class_count + predictions, minlength=class_count**2).reshape(
        class_count, class_count
    )


def most_confused_pairs(confusion: np.ndarray, count: int = CONFUSED_PAIRS) -> list[tuple[int, int, int]]:
    """(true, predicted, images) for the largest off-diagonal counts, largest first."""
    errors = confusion.copy()
    np.fill_diagonal(errors, 0)
    order = np.argsort(-errors, axis=None, kind="stable")[:count]
    pairs = [
        (int(t), int(p), int(errors[t, p]))
        for t, p in zip(*np.unravel_index(order, errors.shape), strict=True)
    ]
    return [pair for pair in pairs if pair[2] > 0]


def trained_base_rates(config: Config, history: list[dict]) -> list[list[float]]:
    """Each stage's peak rates per layer group as the loop used them (recorded per epoch: scaled after a
    halved batch or with several processes); the configured rates where the history has no record.

    Records name their stage by index (names need not be unique)."""
    recorded = {}
    for record in history:
        recorded.setdefault(record["stage_index"], record["base_rates"])
    return [
        recorded.get(index, config.stage_learning_rates(stage)) for index, stage in enumerate(config.stages)
    ]


def lr_schedule(
    config: Config, history: list[dict] = (), points_per_epoch: int = 100
) -> tuple[np.ndarray, np.ndarray, list[tuple[float, str]]]:
    """The learning rate of every layer group across all stages, as trained: (epochs, rates, stage starts).

    Drawn from the same schedule object the loop set the optimizer from (kit.train.schedule).
    """
    epochs, rates, starts, offset = [], [], [], 0.0
    for stage, base_rates in zip(config.stages, trained_base_rates(config, list(history)), strict=True):
        warmup = config.stage_warmup(stage)
        stage_schedule = schedule.for_stage(config.train.schedule, stage, base_rates, warmup)
        positions = np.arange(0, stage_schedule.epochs, 1 / points_per_epoch)
        epochs.append(positions + offset)
        rates.append(np.array([stage_schedule.rates(position) for position in positions]))
        starts.append((offset, stage.name))
        offset += stage_schedule.epochs
    return np.concatenate(epochs), np.concatenate(rates), starts


def history_positions(config: Config, history: list[dict]) -> list[dict]:
    """Each epoch record with `x`: epochs since training began (stages follow each other)."""
    lengths = [config.stage_epochs(stage) for stage in config.stages]
    stage, offset, previous, placed = 0, 0.0, None, []
    for record in history:
        if previous is not None and (
            record["stage"] != previous["stage"] or record["epoch"] <= previous["epoch"]
        ):
            offset += lengths[stage] if stage < len(lengths) else previous["epoch"]
            stage += 1
        length = lengths[stage] if stage < len(lengths) else record["epoch"]
        placed.append({**record, "x": offset + min(record["epoch"], length)})
        previous = record
    return placed


def image_sizes(paths: list[Path], limit: int = SIZE_SAMPLE) -> tuple[np.ndarray, np.ndarray]:
    """Widths and heights in pixels, read from file headers (no decoding); unreadable files are skipped."""
    step = max(1, len(paths) // limit)
    widths, heights = [], []
    for path in paths[::step]:
        try:
            with Image.open(path) as image:  # lazy: only the header is parsed
                widths.append(image.size[0])
                heights.append(image.size[1])
        except (OSError, Image.DecompressionBombError):  # unreadable, or too large to open safely
            continue
    return np.array(widths), np.array(heights)


def _probability(value: float) -> str:
    """0.93, or 3e-05 where two decimals would say 0.00."""
    return f"{value:.2f}" if value >= 0.005 else f"{value:.0e}"


def image_captions(
    probabilities: np.ndarray, targets: np.ndarray, rows: np.ndarray, classes: list[str]
) -> list[str]:
    captions = []
    for row in rows:
        predicted = int(probabilities[row].argmax())
        captions.append(
            f"true {plots.shorten(classes[targets[row]], 24)} "
            f"({_probability(probabilities[row, targets[row]])})\n"
            f"pred {plots.shorten(classes[predicted], 24)} ({_probability(probabilities[row, predicted])})"
        )
    return captions
