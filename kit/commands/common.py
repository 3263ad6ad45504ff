"""What several commands share: the one-line notice on stderr, the baseline beside a score, the
Kaggle slug of a competition."""

from __future__ import annotations

import click

from kit import baselines
from kit.config import Config
from kit.data.labels import LabelTable, load_labels


def notice(line: str) -> None:
    """One-line warnings and retry notices from the Kaggle calls, on stderr beside the progress bars."""
    click.echo(line, err=True)


def baseline_text(config: Config, metric: str, labels: LabelTable | None = None) -> str:
    """'baseline 0.6931 (the class shares for every image)' on the competition's training labels; "" when
    they cannot be read here (no data on this machine)."""
    try:
        labels = labels or load_labels(config)
    except Exception:  # no data here, or data the run's command will name better: no baseline is shown
        return ""
    if metric not in baselines.BASELINES:
        return ""
    return baselines.describe(baselines.baseline(metric, labels.targets, len(labels.classes)))


def kaggle_slug(config: Config) -> str:
    if not config.competition.kaggle:
        raise click.ClickException(
            f"{config.path}: set competition.kaggle (the Kaggle slug) to ask Kaggle about it"
        )
    return config.competition.kaggle
