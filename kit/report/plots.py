"""Plots as PNG files: each function takes plain values and a path, draws one figure, returns the path.

matplotlib's object API (Figure + savefig, the Agg renderer) is used without pyplot: no global state,
no display needed, safe on a headless GPU box.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from kit.files import atomic_path
from kit.train import schedule

DPI = 100  # pixels per inch of figure size


def save(figure: Figure, path: Path) -> Path:
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=DPI, bbox_inches="tight")
    return path


def plot_lr_find(rates: list[float], losses: list[float], suggestion: float, path: Path) -> Path:
    """The LR range test: raw and smoothed loss against the learning rate (log axis), suggestion marked."""
    figure = Figure(figsize=(7, 4.5))
    axes = figure.add_subplot()
    smoothed = schedule.smooth(list(losses))
    axes.plot(rates, losses, color="0.75", linewidth=1, label="loss")
    axes.plot(rates, smoothed, color="C0", linewidth=2, label="smoothed loss")
    axes.axvline(suggestion, color="C3", linestyle="--", label=f"suggestion {suggestion:.2g}")
    finite = [value for value in smoothed if math.isfinite(value)]
    if finite:  # the diverging tail would squash the useful part of the curve
        low, high = (
            min(finite),
            min(max(finite), smoothed[0] * 1.5 if math.isfinite(smoothed[0]) else max(finite)),
        )
        axes.set_ylim(low - 0.05 * (high - low + 1e-9), high + 0.1 * (high - low + 1e-9))
        nearest = int(np.argmin(np.abs(np.log(np.asarray(rates)) - math.log(suggestion))))
        axes.plot([rates[nearest]], [smoothed[nearest]], "o", color="C3")
    axes.set_xscale("log")
    axes.set_xlabel("learning rate (log scale)")
    axes.set_ylabel("training loss")
    axes.set_title("LR finder")
    axes.legend()
    return save(figure, path)


def plot_history(
    folds: dict[str, list[dict]],
    metric: str,
    schedule_epochs: np.ndarray,
    schedule_rates: np.ndarray,
    stage_starts: list[tuple[float, str]],
    path: Path,
) -> Path:
    """Loss and metric per epoch for every fold, with the per-iteration LR schedule underneath.

    `folds`: fold -> records with an `x` (epochs since training began) added; `schedule_rates`:
    iterations x layer groups.
    """
    figure = Figure(figsize=(9, 8))
    loss_axes, metric_axes, lr_axes = figure.subplots(
        3, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2, 2]}
    )
    for index, (fold, records) in enumerate(sorted(folds.items())):
        xs = [record["x"] for record in records]
        color = f"C{index % 10}"
        loss_axes.plot(
            xs, [r["train_loss"] for r in records], "--", color=color, marker=".", label=f"fold {fold} train"
        )
        loss_axes.plot(
            xs, [r["valid_loss"] for r in records], "-", color=color, marker="o", label=f"fold {fold} valid"
        )
        metric_axes.plot(
            xs, [r.get(metric, math.nan) for r in records], "-", color=color, marker="o", label=f"fold {fold}"
        )
        lr_axes.plot(xs, [r["lr"] for r in records], "o", color=color, markersize=4)
    group_names = ["early body", "late body", "head"]
    distinct = schedule_rates.shape[1] > 1 and not np.allclose(schedule_rates, schedule_rates[:, -1:])
    for group in range(schedule_rates.shape[1]) if distinct else [schedule_rates.shape[1] - 1]:
        name = group_names[group] if schedule_rates.shape[1] == 3 else f"group {group}"
        lr_axes.plot(schedule_epochs, schedule_rates[:, group], linewidth=1.2, label=f"lr ({name})")
    for axes in (loss_axes, metric_axes, lr_axes):
        for start, _ in stage_starts:
            axes.axvline(start, color="0.6", linestyle=":", linewidth=1)
    stages_axis = loss_axes.secondary_xaxis("top")  # stage names above the plot, where no curve runs
    stages_axis.set_xticks(
        [start for start, _ in stage_starts],
        [name for _, name in stage_starts],
        fontsize=8,
        rotation=20,
        ha="left",
    )
    loss_axes.set_ylabel("loss")
    loss_axes.legend(fontsize=7, ncol=2, loc="upper right")
    metric_axes.set_ylabel(metric)
    lr_axes.set_ylabel("learning rate")
    lr_axes.set_xlabel("epoch (dots: recorded at each epoch's end)")
    lr_axes.legend(fontsize=7)
    loss_axes.set_title("training history (stages above)", pad=24)
    return save(figure, path)


def plot_confusion(confusion: np.ndarray, classes: list[str], path: Path, max_classes: int = 20) -> Path:
    """Counts of (true, predicted); beyond `max_classes` classes, only those in the most confused pairs."""
    shown = list(range(len(classes)))
    title = "confusion matrix (counts)"
    if len(classes) > max_classes:
        errors = confusion.astype(float).copy()
        np.fill_diagonal(errors, 0)
        order = np.dstack(np.unravel_index(np.argsort(-errors, axis=None), errors.shape))[0]
        shown = []
        for true, predicted in order:
            if errors[true, predicted] == 0 or len(shown) >= max_classes:
                break
            for name in (true, predicted):
                if name not in shown and len(shown) < max_classes:
                    shown.append(name)
        shown = shown or list(range(max_classes))
        title = f"confusion among the {len(shown)} classes of the most confused pairs (of {len(classes)})"
    sub = confusion[np.ix_(shown, shown)]
    names = [shorten(classes[c], 24) for c in shown]
    size = max(5.0, 0.45 * len(shown) + 2.5)
    figure = Figure(figsize=(size, size))
    axes = figure.add_subplot()
    axes.imshow(sub, cmap="Blues")
    axes.set_xticks(range(len(shown)), names, rotation=90, fontsize=8)
    axes.set_yticks(range(len(shown)), names, fontsize=8)
    threshold = sub.max() / 2 if sub.size else 0
    for (row, column), count in np.ndenumerate(sub):
        if count:
            axes.text(
                column,
                row,
                str(int(count)),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if count > threshold else "black",
            )
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title, fontsize=10)
    return save(figure, path)


def plot_image_grid(
    images: list[np.ndarray], captions: list[str], title: str, path: Path, columns: int = 4
) -> Path:
    """Square images (S x S x 3 uint8, one size) in a grid, each with its caption above it.

    One mosaic in one axes: drawing 16 axes costs several times more for the same picture.
    """
    rows = max(1, math.ceil(len(images) / columns))
    side = images[0].shape[0] if images else 1
    # Pixels between tiles, and above each tile for its two-line caption (each tile is drawn 2.8 inches wide).
    gap, band = max(1, side // 16), max(4, round(side * 0.22))
    mosaic = np.full((rows * (side + band + gap), columns * (side + gap), 3), 255, dtype=np.uint8)
    width = columns * 2.8
    figure = Figure(figsize=(width, width * mosaic.shape[0] / mosaic.shape[1] + 0.5))
    axes = figure.add_subplot()
    for index, image in enumerate(images):
        top, left = (index // columns) * (side + band + gap) + band, (index % columns) * (side + gap)
        mosaic[top : top + side, left : left + side] = image[:side, :side]
        axes.text(left + side / 2, top - 1, captions[index], ha="center", va="bottom", fontsize=7)
    axes.imshow(mosaic, interpolation="nearest")
    axes.axis("off")
    axes.set_title(title)
    return save(figure, path)


def plot_image_sizes(sizes: dict[str, tuple[np.ndarray, np.ndarray]], path: Path) -> Path:
    """Histograms of raw image widths and heights (pixels), one series per image set (train, test)."""
    figure = Figure(figsize=(10, 3.8))
    width_axes, height_axes = figure.subplots(1, 2)
    for name, (widths, heights) in sizes.items():
        if len(widths):
            width_axes.hist(widths, bins=40, alpha=0.6, label=f"{name} (median {int(np.median(widths))})")
            height_axes.hist(heights, bins=40, alpha=0.6, label=f"{name} (median {int(np.median(heights))})")
    for axes, what in ((width_axes, "width"), (height_axes, "height")):
        axes.set_xlabel(f"{what} (pixels)")
        axes.set_ylabel("images")
        axes.legend(fontsize=8)
    figure.suptitle("raw image sizes")
    return save(figure, path)


def shorten(text: str, length: int) -> str:
    """At most `length` characters, the middle elided: class names often share a prefix or a suffix."""
    if len(text) <= length:
        return text
    head = (length - 1) // 2
    return text[:head] + "…" + text[len(text) - (length - 1 - head) :]


def plot_tag_thresholds(tags: list[str], thresholds: list[float], f2: list[float], path: Path) -> Path:
    """Multi-label: each tag's decision threshold (fitted on OOF) and its F2 out of fold, side by side."""
    figure = Figure(figsize=(max(6, 0.5 * len(tags) + 2), 4.5))
    axes = figure.add_subplot()
    positions = np.arange(len(tags))
    axes.bar(positions - 0.2, thresholds, width=0.4, color="C0", label="threshold")
    axes.bar(positions + 0.2, f2, width=0.4, color="C2", label="F2 (out of fold)")
    axes.axhline(0.5, color="0.6", linestyle="--", linewidth=1)
    axes.set_xticks(positions, [shorten(tag, 20) for tag in tags], rotation=45, ha="right")
    axes.set_ylim(0, 1)
    axes.set_title("Per-tag threshold and F2")
    axes.legend()
    return save(figure, path)


def plot_predicted_vs_true(true: np.ndarray, predicted: np.ndarray, path: Path) -> Path:
    """Regression: each out-of-fold prediction against its true value, with the diagonal y = x."""
    figure = Figure(figsize=(5.5, 5.5))
    axes = figure.add_subplot()
    axes.scatter(true, predicted, s=6, alpha=0.4, color="C0")
    low, high = float(min(true.min(), predicted.min())), float(max(true.max(), predicted.max()))
    axes.plot([low, high], [low, high], color="C3", linewidth=1, label="y = x")
    axes.set_xlabel("true")
    axes.set_ylabel("predicted (out of fold)")
    axes.legend()
    return save(figure, path)


def plot_cv_against_public(
    cv: np.ndarray, public: np.ndarray, metric: str, title: str, path: Path, marked: int | None = None
) -> Path:
    """Each submission's CV against its public leaderboard score (`marked`: this run's, in red), with the
    diagonal y = x: points along a rising line mean CV can be trusted to choose."""
    figure = Figure(figsize=(5.5, 5.5))
    axes = figure.add_subplot()
    axes.scatter(cv, public, s=24, color="C0")
    if marked is not None:
        axes.scatter(cv[marked], public[marked], s=48, color="C3", label="this run")
        axes.legend()
    low, high = float(min(cv.min(), public.min())), float(max(cv.max(), public.max()))
    axes.plot([low, high], [low, high], color="0.6", linestyle="--", linewidth=1)
    axes.set_xlabel(f"CV {metric}")
    axes.set_ylabel(f"public score ({metric})")
    axes.set_title("\n".join(textwrap.wrap(title, 70)), fontsize=9)
    return save(figure, path)
