"""The report: selections, confusions and schedules on plain values; the HTML page on a tiny digits run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import invoke
from PIL import Image

from kit import commands
from kit.config_build import config_from_dict
from kit.data.folds import load_folds
from kit.data.labels import load_labels
from kit.report import figure_data, plots, runs_table
from kit.run import LAYOUT


def confident(targets: np.ndarray, classes: int, probability: float = 0.9) -> np.ndarray:
    """Rows that give `probability` to their target and share the rest evenly."""
    rows = np.full((len(targets), classes), (1 - probability) / (classes - 1))
    rows[np.arange(len(targets)), targets] = probability
    return rows


def test_selections_find_planted_rows_and_skip_unpredicted_ones():
    targets = np.arange(40) % 4
    probabilities = confident(targets, 4)
    probabilities[7] = [0.02, 0.01, 0.96, 0.01]  # labelled 3, surely a 2: the planted mislabel
    probabilities[11] = [0.1, 0.1, 0.5, 0.3]  # labelled 3, a milder mistake
    probabilities[20] = [0.5, 0.48, 0.01, 0.01]  # a near tie
    probabilities[5] = [0.0, 1.0, 0.0, 0.0]  # the most confident right answer (label 1)
    probabilities[[30, 31]] = np.nan  # folds not trained
    assert figure_data.most_wrong(probabilities, targets, 16).tolist() == [7, 11]
    assert figure_data.most_uncertain(probabilities, targets, 2).tolist() == [20, 11]
    right = figure_data.most_confident_right(probabilities, targets, 40)
    assert right[0] == 5 and not {7, 11, 30, 31} & set(right.tolist()) and len(right) == 36


def test_confusion_counts_and_most_confused_pairs():
    targets = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    predictions = np.array([0, 1, 1, 1, 0, 2, 1, 2, 2])
    confusion = figure_data.confusion_counts(targets, predictions, 3)
    assert confusion.tolist() == [[1, 2, 0], [1, 1, 0], [0, 1, 3]]
    assert figure_data.most_confused_pairs(confusion) == [(0, 1, 2), (1, 0, 1), (2, 1, 1)]


def recipe_config(tmp_path: Path):
    """Three stages: head at 1e-2, then all layers with discriminative rates and SGDR (1, 2, 4 epochs)."""
    return config_from_dict(
        {
            "train": {"epochs": 1, "lr": 1e-2},
            "stages": [
                {"name": "head", "freeze_to": -1, "n_cycles": 1, "cycle_len": 1.0},
                {"name": "all", "lr": [1e-4, 1e-3, 1e-2], "n_cycles": 3, "cycle_len": 1.0, "cycle_mult": 2.0},
            ],
        },
        tmp_path / "recipe" / "competition.toml",
    )


def test_lr_schedule_restarts_at_every_sgdr_cycle(tmp_path):
    epochs, rates, starts = figure_data.lr_schedule(recipe_config(tmp_path), points_per_epoch=100)
    assert starts == [(0.0, "head"), (1.0, "all")] and epochs[-1] < 8 and rates.shape == (len(epochs), 3)
    head = rates[:, 2]
    # Stage 2 starts at epoch 1 (warming up from a hundredth of its rate: it trains the body); its cycles
    # end after 1, 3 and 7 of its epochs, and the later ones restart at the full rate.
    for restart, peak in ((1.0, 1e-4), (2.0, 1e-2), (4.0, 1e-2)):
        index = int(np.searchsorted(epochs, restart))
        assert head[index] == pytest.approx(peak) and head[index - 1] < 1e-3
    assert np.allclose(rates[100:, 0] * 100, rates[100:, 2])  # the early layers at a hundredth of the head


def test_history_positions_follow_the_stages(tmp_path):
    records = [{"stage": "head", "epoch": 1}, {"stage": "all", "epoch": 1}, {"stage": "all", "epoch": 2}]
    placed = figure_data.history_positions(recipe_config(tmp_path), records)
    assert [record["x"] for record in placed] == [1.0, 2.0, 3.0]


def test_lr_finder_plot_and_image_sizes(tmp_path):
    rates = [1e-6 * 10 ** (i / 10) for i in range(60)]
    losses = [2.3 - 0.02 * i if i < 45 else 2.3 + 0.5 * (i - 45) for i in range(60)]
    path = plots.plot_lr_find(rates, losses, 1e-3, tmp_path / "lr-find.png")
    assert Image.open(path).format == "PNG"
    for index, size in enumerate([(30, 20), (31, 20), (640, 480)]):
        Image.new("RGB", size).save(tmp_path / f"{index}.jpg")
    widths, heights = figure_data.image_sizes(sorted(tmp_path.glob("*.jpg")) + [tmp_path / "missing.jpg"])
    assert widths.tolist() == [30, 31, 640] and heights.tolist() == [20, 20, 480]


@pytest.mark.slow
def test_report_of_a_digits_run_shows_a_planted_mislabel(digits, project):
    # Plant a mislabel in the test's own copy of the raw data: a clear "0" that train.csv calls "1".
    table_path = project / "data" / "raw" / "digits" / "train.csv"
    table = pd.read_csv(table_path, dtype=str)
    planted = int(np.flatnonzero(table["label"] == "0")[0])
    table.loc[planted, "label"] = "1"
    table.to_csv(table_path, index=False)
    # Fold 0 of 10 trains on 90% of the images: one epoch is enough for ~95% accuracy.
    config = digits("train.folds=10", "train.batch_size=32", "train.lr=1e-2", "predict.tta=0")
    labels = load_labels(config)
    run_dir = commands.train(config, str(load_folds(config, labels)[planted]))
    (run_dir / "lr-find.json").write_text(
        json.dumps(
            {
                "rates": [1e-5, 1e-4, 1e-3, 1e-2, 1e-1],
                "losses": [2.3, 2.2, 1.5, 1.2, 9.0],
                "suggestion": 1e-3,
                "reason": "test",
            }
        )
    )

    oof = np.load(run_dir / "oof.npy")
    assert planted in figure_data.most_wrong(oof, labels.targets, figure_data.GRID_IMAGES).tolist()

    result = invoke("report", "digits")
    assert result.exit_code == 0, result.output
    page = (run_dir / "report.html").read_text()
    assert result.output.strip().endswith("report.html")
    for plot in (
        "lr-find",
        "history",
        "confusion",
        "most-wrong",
        "most-uncertain",
        "most-confident",
        "image-sizes",
    ):
        assert (run_dir / f"{plot}.png").exists()
    assert page.count('src="data:image/png;base64,') == 7
    assert all(f"<td>{name}</td>" in page for name in labels.classes)  # the per-class table names every class
    most_wrong_section = page.split("<h2>Most wrong")[1].split("<h2>")[0]
    assert labels.ids[planted] in most_wrong_section
    # accuracy: nothing is calibrated, and the report no longer fits a calibration of its own (issue 24);
    # (a log-loss run shows its temperatures, or "not applied" when cross-fitting dropped them)
    calibration = json.loads((run_dir / "calibration.json").read_text())
    assert calibration["temperatures"] == {} and "<h2>Calibration" not in page
    assert "The best constant answer on the training labels, for comparison: baseline " in page

    result = invoke("runs", "digits")
    assert result.exit_code == 0 and run_dir.name in result.output


def test_runs_table_lists_a_run_of_another_layout_without_reading_it(project):
    """A run another kit made (metrics.json without this kit's layout number) is one row saying so:
    its keys are not guessed at; `kit predict` on it is one line (kit.run.RunError)."""
    run_dir = project / "runs" / "digits" / "20260101-000000-old"
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"path": "x", "stages": []}))
    (run_dir / "metrics.json").write_text(json.dumps({"metric": "accuracy", "cv": 0.9, "folds_trained": [0]}))
    from kit.competitions import load_competition

    table = runs_table.runs_table(load_competition("digits"))
    assert table["metric"].tolist() == ["(another kit's layout)"] and np.isnan(table["cv"].tolist()[0])


def test_runs_table_shows_only_settings_that_differ(project):
    base = project / "runs" / "digits"
    for name, lr, seconds in (("20260101-000000-a", 1e-3, 60), ("20260101-000001-b", 3e-3, 120)):
        (base / name).mkdir(parents=True)
        saved = {"path": "x", "train": {"lr": lr, "model": "m"}, "stages": [{"lr": None, "n_cycles": 1}]}
        (base / name / "config.json").write_text(json.dumps(saved))
        (base / name / "metrics.json").write_text(
            json.dumps(
                {
                    "layout": LAYOUT,
                    "metric": "accuracy",
                    "cv": lr * 100,
                    "classes": [],
                    "folds_trained": [0],
                    "seconds": seconds,
                    "folds": {},
                }
            )
        )
    from kit.competitions import load_competition

    table = runs_table.runs_table(load_competition("digits"))
    assert list(table.columns) == [
        "run",
        "cv",
        "cv_uncalibrated",
        "metric",
        "trained",
        "minutes",
        "stopped",
        "predicts",
        "train.lr",
    ]
    assert table["minutes"].tolist() == [1.0, 2.0] and table["train.lr"].tolist() == [1e-3, 3e-3]
