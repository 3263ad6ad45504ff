"""The `kit` command line: parses arguments and calls library functions, nothing more."""

from __future__ import annotations

import click

from kit import pipeline
from kit.config import load_competition

COMPETITION = click.argument("competition")
OVERRIDES = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key, e.g. train.epochs=2.")


class Commands(click.Group):
    """click.Group whose errors start on a line of their own, even when they interrupt a progress bar."""

    def invoke(self, context: click.Context):
        try:
            return super().invoke(context)
        except click.ClickException:
            from tqdm import tqdm

            for bar in list(getattr(tqdm, "_instances", ())):  # bars left open by the error: clear them
                bar.close()
            raise


@click.group(cls=Commands, context_settings={"help_option_names": ["-h", "--help"]})
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
@click.option("--resume", is_flag=True, help="Continue the newest interrupted run (or --run) from its last epoch.")
@click.option("--run", default=None, help="With --resume: the run to continue.")
@OVERRIDES
def train(competition: str, fold: str, resume: bool, run: str | None, overrides: tuple[str, ...]) -> None:
    """Train the competition's recipe on one fold or all of them."""
    if resume:
        pipeline.resume_run(load_competition(competition), run)
    else:
        pipeline.train_run(load_competition(competition, overrides), fold)


@main.command("lr-find")
@COMPETITION
@click.option("--stage", default=0, show_default=True, help="Recipe stage to test (frozen, unfrozen, new size).")
@click.option("--run", default=None, help="Start from this run's fold-0 weights (default: fresh pretrained).")
@OVERRIDES
def lr_find(competition: str, stage: int, run: str | None, overrides: tuple[str, ...]) -> None:
    """Learning-rate range test: plot loss against LR and suggest a rate."""
    pipeline.find_learning_rate(load_competition(competition, overrides), stage, run=run)


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


@main.command()
@COMPETITION
@click.argument("run", required=False)
def report(competition: str, run: str | None) -> None:
    """Write a run's self-contained HTML report (default: the newest run) into its folder."""
    from kit.report import report_run

    click.echo(f"report {report_run(load_competition(competition), run)}")


@main.command()
@COMPETITION
def runs(competition: str) -> None:
    """Table of the competition's runs: CV, time and the settings that differ between them."""
    from kit.report import runs_table

    table = runs_table(load_competition(competition))
    click.echo(table.to_string(index=False) if len(table) else "no runs yet")


@main.command()
@COMPETITION
@click.argument("run_ids", nargs=-1, required=True, metavar="RUN[@WEIGHTS[:plain]] ...")
def ensemble(competition: str, run_ids: tuple[str, ...]) -> None:
    """Blend runs with weights fitted on OOF log loss, calibrate, and write the submission."""
    from kit.ensemble import ensemble_runs
    from kit.runs import read_json

    run_dir = ensemble_runs(load_competition(competition), list(run_ids))
    summary = read_json(run_dir / "metrics.json")
    weights = ", ".join(f"{name} {weight:.3f}" for name, weight in zip(summary["ensemble"]["runs"], summary["ensemble"]["weights"], strict=True))
    click.echo(f"ensemble {run_dir.name}: OOF {summary['metric']} {summary['cv']:.4f} (weights {weights}); "
               f"submission {read_json(run_dir / 'submission.json')['file']}")


if __name__ == "__main__":
    main()
