"""The `kit` command line: parses arguments and calls library functions, nothing more."""

from __future__ import annotations

import click

from kit import pipeline
from kit.config import load_competition

COMPETITION = click.argument("competition")
OVERRIDES = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key, e.g. train.epochs=2.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Kaggle image-competition starter kit: download, train, predict, submit."""


@main.command("list")
def list_command() -> None:
    """Competitions and how far each has got."""
    for row in pipeline.list_competitions():
        click.echo(f"{row['competition']:<20} {row['kaggle']:<40} {row['status']}")


@main.command()
@COMPETITION
def download(competition: str) -> None:
    """Fetch the competition's files into data/raw/<name> (once)."""
    config = load_competition(competition)
    fetched = pipeline.download(config)
    click.echo(f"{config.name}: {'downloaded' if fetched else 'already downloaded'} in data/raw/{config.name}")


@main.command()
@COMPETITION
@OVERRIDES
def folds(competition: str, overrides: tuple[str, ...]) -> None:
    """Write (once) and show the stratified cross-validation folds."""
    click.echo(pipeline.folds(load_competition(competition, overrides)).to_string())


@main.command()
@COMPETITION
@click.option("--fold", default="0", show_default=True, help="Fold number, or 'all' for every fold (OOF predictions).")
@OVERRIDES
def train(competition: str, fold: str, overrides: tuple[str, ...]) -> None:
    """Train the competition's recipe on one fold or all of them."""
    pipeline.train_run(load_competition(competition, overrides), fold)


@main.command()
@COMPETITION
@click.argument("run", required=False)
def predict(competition: str, run: str | None) -> None:
    """Predict the test set with a run (default: the newest) and write the submission CSV."""
    pipeline.predict_run(load_competition(competition), run)


@main.command()
@COMPETITION
@click.option("--run", default=None, help="Run id (default: the newest finished run).")
@click.option("-m", "--message", default="", help="Submission message (CV score, run and commit are added).")
@click.option("--dry-run", is_flag=True, help="Check and record, but do not upload.")
def submit(competition: str, run: str | None, message: str, dry_run: bool) -> None:
    """Check the run's submission and upload it to Kaggle (or score it locally), then record it."""
    pipeline.submit(load_competition(competition), run, message, dry_run)


@main.command("ledger")
@COMPETITION
def ledger_command(competition: str) -> None:
    """Refresh leaderboard scores from Kaggle and show them next to CV for every submission."""
    config = load_competition(competition)
    table = pipeline.ledger(config)
    click.echo(table.to_string(index=False) if len(table) else f"no submissions of {config.name} yet")


@main.command("new")
@click.argument("name")
@click.option("--kaggle", "slug", default="", help="Kaggle slug, from the competition's URL.")
@click.option("--metric", default=None, help="Metric name (default: log_loss for probabilities, accuracy for labels).")
@click.option("--from-raw", is_flag=True, help="Use the files already in data/raw/NAME instead of downloading.")
def new(name: str, slug: str, metric: str | None, from_raw: bool) -> None:
    """Fork the kit for a new competition: download, inspect, write competitions/NAME/competition.toml."""
    pipeline.new_competition(name, slug, metric, from_raw)


if __name__ == "__main__":
    main()
