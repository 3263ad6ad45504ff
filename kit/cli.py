"""The `kit` command line: parses arguments and calls library functions, nothing more."""

from __future__ import annotations

import click
from tqdm import tqdm

from kit import commands
from kit.competitions import load_competition
from kit.errors import KitError

COMPETITION = click.argument("competition")
OVERRIDES = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config key, e.g. train.epochs=2.",
)


class Commands(click.Group):
    """click.Group that shows the kit's errors (kit.errors.KitError) as click's one line, exit status 1, and
    starts them on a line of their own, even when they interrupt a progress bar."""

    def invoke(self, context: click.Context):
        try:
            return super().invoke(context)
        except (click.ClickException, KitError) as error:
            for bar in list(getattr(tqdm, "_instances", ())):  # bars left open by the error: clear them
                bar.close()
            if isinstance(error, KitError):
                raise click.ClickException(error.message) from None
            raise
        except PermissionError as error:  # a folder or file this user may not write (or read): one line
            for bar in list(getattr(tqdm, "_instances", ())):
                bar.close()
            raise click.ClickException(
                f"{error.filename or 'a file'}: no permission ({error.strerror}); give your user access to "
                "it and to its folder (e.g. `chmod u+rwX`, or `chown` it to you), then run the command again"
            ) from None


@click.group(cls=Commands, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Kaggle image-competition starter kit: download, train, predict, submit."""


@main.command("list")
def list_command() -> None:
    """Competitions and how far each has got."""
    commands.list_competitions()


@main.command()
@COMPETITION
@click.option(
    "--file",
    "file",
    default=None,
    metavar="NAME",
    help="Only this file of the competition (see `kit files`).",
)
@click.option(
    "--hand-filled",
    is_flag=True,
    help="Fetch nothing: check the files you put in data/raw/<name> and mark them as its data.",
)
def download(competition: str, file: str | None, hand_filled: bool) -> None:
    """Fetch the competition's files into data/raw/<name> (once), resuming an interrupted download."""
    commands.download(load_competition(competition), file, hand_filled)


@main.command()
@COMPETITION
def files(competition: str) -> None:
    """List the competition's files on Kaggle and their sizes."""
    commands.files(load_competition(competition))


@main.command()
@COMPETITION
@click.option(
    "--top", default=10, show_default=True, help="How many of the public leaderboard's first rows to show."
)
def leaderboard(competition: str, top: int) -> None:
    """The top of the public leaderboard and your team's position."""
    commands.leaderboard(load_competition(competition), top)


@main.command()
@COMPETITION
@OVERRIDES
def folds(competition: str, overrides: tuple[str, ...]) -> None:
    """Write (once) and show the stratified cross-validation folds."""
    commands.folds(load_competition(competition, overrides))


@main.command()
@COMPETITION
@click.option("--listed", default=20, show_default=True, help="Pairs shown per kind (all are in the CSV).")
@OVERRIDES
def duplicates(competition: str, listed: int, overrides: tuple[str, ...]) -> None:
    """Find near-duplicate photos within train and between train and test."""
    commands.duplicates(load_competition(competition, overrides), listed)


@main.command()
@COMPETITION
@click.option(
    "--fold",
    default=None,
    help="Fold number, 'all' for every fold (OOF predictions), or 'full': every training row, reusing "
    "what a fold run chose (its CV is reported).  [default: 0]",
)
@click.option(
    "--seeds",
    default=1,
    show_default=True,
    type=int,
    help="Models per fold (or, with --fold full, full-data models), each with its own seed, averaged.",
)
@click.option(
    "--chosen-on", default=None, help="With --fold full: the fold run to reuse (default: the newest)."
)
@click.option(
    "--parallel",
    type=click.Choice(["folds"]),
    default=None,
    help="Under torchrun with --fold all: each process trains its own folds (fold k on process k mod N, "
    "one GPU each) instead of DDP inside a fold.",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue the newest interrupted run (or --run) from its last epoch, with its own settings and "
    "folds (--set and --fold are refused).",
)
@click.option("--run", default=None, help="With --resume: the run to continue.")
@OVERRIDES
def train(
    competition: str,
    fold: str | None,
    seeds: int,
    chosen_on: str | None,
    parallel: str | None,
    resume: bool,
    run: str | None,
    overrides: tuple[str, ...],
) -> None:
    """Train the competition's recipe on one fold, all of them, or every row (--fold full)."""
    if resume:
        commands.resume(commands.load_for_training(competition), run, overrides, fold)
    else:
        commands.train(
            commands.load_for_training(competition, overrides), fold, seeds, chosen_on, parallel, overrides
        )


@main.command("lr-find")
@COMPETITION
@click.option(
    "--stage", default=0, show_default=True, help="Recipe stage to test (frozen, unfrozen, new size)."
)
@click.option("--run", default=None, help="Start from this run's fold-0 weights (default: fresh pretrained).")
@OVERRIDES
def lr_find(competition: str, stage: int, run: str | None, overrides: tuple[str, ...]) -> None:
    """Learning-rate range test: plot loss against LR and suggest a rate."""
    config = commands.load_for_training(competition, overrides)
    commands.find_learning_rate(config, stage, run=run, overrides=overrides)


@main.command()
@COMPETITION
@click.argument("run", required=False)
@OVERRIDES
def predict(competition: str, run: str | None, overrides: tuple[str, ...]) -> None:
    """Predict the test set with a run (default: the newest) and write the submission CSV.

    The run's own saved settings are used; --set changes them for this prediction only."""
    commands.predict(load_competition(competition), run, overrides)


@main.command()
@COMPETITION
@click.option("--run", default=None, help="Run id (default: the newest finished run).")
@click.option("-m", "--message", default="", help="Submission message (CV score, run and commit are added).")
@click.option("--dry-run", is_flag=True, help="Check and record, but do not upload.")
def submit(competition: str, run: str | None, message: str, dry_run: bool) -> None:
    """Check the run's submission and upload it to Kaggle (or score it locally), then record it."""
    commands.submit(load_competition(competition), run, message, dry_run)


@main.command()
@COMPETITION
@click.option("--run", default=None, help="Run id (default: the newest finished run).")
@click.option("--gpu/--no-gpu", default=None, help="Run the notebook on a GPU (default: notebook.gpu).")
@click.option("--submit", is_flag=True, help="Once the notebook has run, make the code submission.")
@click.option(
    "--submit-only", is_flag=True, help="Submit the run's notebook that completed, without rerunning."
)
@click.option(
    "--delete-old-versions", is_flag=True, help="Delete the run dataset's earlier versions on Kaggle."
)
@click.option(
    "--local", is_flag=True, help="Rehearse here: build and run the notebook offline, timed; push nothing."
)
@click.option("--force", is_flag=True, help="Push even where the time budget is above 80% of the limit.")
@click.option("-m", "--message", default="", help="Submission message (CV score, run and commit are added).")
@OVERRIDES
def notebook(
    competition: str,
    run: str | None,
    gpu: bool | None,
    submit: bool,
    submit_only: bool,
    delete_old_versions: bool,
    local: bool,
    force: bool,
    message: str,
    overrides: tuple[str, ...],
) -> None:
    """Code competitions: package the run as a Kaggle dataset, push a notebook that predicts with it
    offline, follow it, and with --submit make the code submission (--submit-only: of the notebook that
    ran already)."""
    commands.notebook(
        load_competition(competition, overrides),
        run,
        gpu,
        submit,
        message,
        submit_only=submit_only,
        delete_old_versions=delete_old_versions,
        local=local,
        force=force,
    )


@main.command("ledger")
@COMPETITION
def ledger_command(competition: str) -> None:
    """Refresh leaderboard scores from Kaggle and show them next to CV for every submission."""
    commands.ledger(load_competition(competition))


@main.command("new")
@click.argument("name")
@click.option("--kaggle", "slug", default="", help="Kaggle slug, from the competition's URL.")
@click.option(
    "--metric", default=None, help="Metric name (default: log_loss for probabilities, accuracy for labels)."
)
@click.option(
    "--from-raw", is_flag=True, help="Use the files already in data/raw/NAME instead of downloading."
)
@click.option(
    "--like",
    default=None,
    metavar="COMPETITION",
    help="Start from a shipped competition's recipe (e.g. cats-vs-dogs, dog-breeds) instead of the kit's.",
)
def new(name: str, slug: str, metric: str | None, from_raw: bool, like: str | None) -> None:
    """Fork the kit for a new competition: download, inspect, write competitions/NAME/competition.toml.

    The TOML holds the recipe with the defaults the kit's measurements support for the metric and kind
    (clip, views, averaging), each after a comment naming the measurement."""
    commands.new_competition(name, slug, metric, from_raw, like)


@main.command()
@COMPETITION
@click.argument("run", required=False)
def report(competition: str, run: str | None) -> None:
    """Write a run's self-contained HTML report (default: the newest run) into its folder."""
    commands.report(load_competition(competition), run)


@main.command()
@COMPETITION
def runs(competition: str) -> None:
    """Table of the competition's runs: CV, time and the settings that differ between them."""
    commands.runs(load_competition(competition))


@main.command()
@COMPETITION
@click.argument("run_ids", nargs=-1, required=True, metavar="RUN[@WEIGHTS[:plain]] ...")
def ensemble(competition: str, run_ids: tuple[str, ...]) -> None:
    """Blend runs with weights fitted on OOF log loss, calibrate, and write the submission."""
    commands.ensemble(load_competition(competition), list(run_ids))


@main.command("config")
@COMPETITION
@OVERRIDES
def config_command(competition: str, overrides: tuple[str, ...]) -> None:
    """Print the resolved config: every key, its value and its source (default, toml or --set)."""
    commands.show_config(competition, overrides)


if __name__ == "__main__":
    main()
