"""What each `kit` command does, in the order a user runs them: download, folds, train, predict, submit,
then the ledger, reports and forks. The CLI parses and calls these; this is the only module that tells
the user what happened (progress bars and one-line notices aside).

Commands that need no model (list, folds, runs, ledger, config, new, download) import no torch, timm,
albumentations or matplotlib: the modules that do are imported by the commands that use them, at the
start of those commands (kit.train, kit.predict.inference, kit.predict.ensemble, kit.report.report),
each import marked `# heavy`. scikit-learn (through kit.data.folds and kit.metrics) costs about a
second of start-up too, so `--help`, list, runs, ledger and config do without it.
"""

from __future__ import annotations

import os
import tempfile
import time
import typing
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import datetime
from pathlib import Path

import click
import numpy as np
import pandas as pd
import tomllib

from kit import baselines, paths, tasks
from kit import ledger as submission_ledger
from kit.competitions import competition_names, load_competition, resolve_name
from kit.config import Config, MetricName
from kit.config_build import config_from_dict, load_config
from kit.config_sources import value_sources
from kit.data import duplicates as near_duplicates
from kit.data.labels import LabelTable, check_row_order, load_labels, load_test, parse_csv, record_row_order
from kit.errors import KitError
from kit.files import (
    DOWNLOAD_MARKER,
    HAND_FILLED,
    filling_folder,
    git_commit,
    human_size,
    mark_hand_filled,
    marked_slug,
    raw_state,
    read_json,
    utc_stamp,
    write_json,
)
from kit.hooks import load_hooks
from kit.kaggle import budget, kernels, scaffold
from kit.kaggle import client as kaggle
from kit.kaggle import download as kaggle_download
from kit.predict import refit
from kit.report.runs_table import runs_table
from kit.run import BLEND, Run, is_ensemble
from kit.run_folder import (
    best_run,
    find_run,
    finished_runs,
    list_runs,
    new_run_dir,
    removed_unless_trained,
    run_config,
    run_summary,
)


def _notice(line: str) -> None:
    """One-line warnings and retry notices from the Kaggle calls, on stderr beside the progress bars."""
    click.echo(line, err=True)


def download(config: Config, file: str | None = None, hand_filled: bool = False) -> None:
    """Fill data/raw/<name> (once): from hooks.download when the competition has one, else from Kaggle.

    With `file`, only that file of the Kaggle competition (as `kit files` lists it). With `hand_filled`,
    nothing is fetched: the files already put in data/raw/<name> by hand are checked and marked complete.
    """
    target = paths.raw_dir(config.name)
    if hand_filled:
        mark_raw_data(config)
        return
    if raw_state(target) == "unmarked" and file is None:
        raise click.ClickException(unmarked_message(config.name, target))
    hooks = load_hooks(config)
    if file is not None:
        if "download" in hooks or not config.competition.kaggle:
            raise click.ClickException(
                f"--file: {config.name} is not a Kaggle download (set competition.kaggle)"
            )
        path = kaggle_download.download_file(config.competition.kaggle, file, target, _notice)
        click.echo(f"{config.name}: {file} in data/raw/{config.name}/{path.relative_to(target).as_posix()}")
        return
    if "download" in hooks:
        fetched = not (target / DOWNLOAD_MARKER).exists()
        if fetched:
            with filling_folder(target) as partial:
                hooks["download"](partial)
    elif not config.competition.kaggle:
        raise click.ClickException(
            f"{config.path}: set competition.kaggle (the Kaggle slug) or add a download hook"
        )
    else:
        fetched = kaggle_download.download_competition(config.competition.kaggle, target, _notice)
    click.echo(
        f"{config.name}: {'downloaded' if fetched else 'already downloaded'} in data/raw/{config.name}"
    )


def unmarked_message(name: str, target: Path) -> str:
    return (
        f"{target} holds files but no finished download: if you put the competition's files there, "
        f"`kit download {name} --hand-filled` checks and marks them; else move the folder away and download"
    )


def mark_raw_data(config: Config) -> None:
    """`kit download NAME --hand-filled`: the files put in data/raw/<name> by hand become the competition's
    data once its labels and test images load from them (the same checks as training's)."""
    target = paths.raw_dir(config.name)
    state = raw_state(target)
    if state == "empty":
        raise click.ClickException(
            f"--hand-filled: {target} is empty; put the competition's files there first "
            f"(as `kit files {config.name}` lists them), then run this again"
        )
    if state in ("downloaded", HAND_FILLED):
        click.echo(f"{config.name}: data/raw/{config.name} is already complete ({state})")
        return
    labels, test = load_labels(config), load_test(config)
    mark_hand_filled(target, config.competition.kaggle)
    click.echo(
        f"{config.name}: data/raw/{config.name} marked as the competition's data ({len(labels.ids)} training "
        f"images, {len(labels.classes)} classes, {len(test.ids)} test images); `kit download` keeps it as is"
    )


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


def _kaggle_slug(config: Config) -> str:
    if not config.competition.kaggle:
        raise click.ClickException(
            f"{config.path}: set competition.kaggle (the Kaggle slug) to ask Kaggle about it"
        )
    return config.competition.kaggle


def files(config: Config) -> None:
    """`kit files`: the competition's files on Kaggle and their sizes."""
    listed = kaggle.list_files(_kaggle_slug(config), _notice)
    width = max((len(item.name) for item in listed), default=4)
    for item in listed:
        click.echo(f"{item.name:<{width}}  {human_size(item.size):>10}")
    total = sum(item.size for item in listed)
    click.echo(f"{len(listed)} files, {human_size(total)}")


def leaderboard(config: Config, top: int) -> None:
    """`kit leaderboard`: the top of the public leaderboard and your team's position."""
    standing = kaggle.leaderboard(_kaggle_slug(config), top, _notice)
    click.echo(f"{'rank':>5}  {'score':>12}  {'date':<10}  team")
    for row in standing.top:
        click.echo(f"{row['rank']:>5}  {row['score']:>12}  {row['date']:<10}  {row['team']}")
    if standing.your_rank is None:
        click.echo("your team: no public score yet")
    else:
        click.echo(f"your team: rank {standing.your_rank} of {standing.teams}")


def folds(config: Config) -> None:
    from kit.data.folds import balance_line, load_folds  # heavy (scikit-learn)

    labels = load_labels(config)
    assigned = load_folds(config, labels)
    groups = pd.DataFrame(
        {"class": labels.task.fold_groups(labels.targets, labels.classes), "fold": assigned}
    ).explode("class")
    table = pd.crosstab(groups["class"], groups["fold"])
    click.echo(table.to_string())
    click.echo(balance_line(assigned, labels))


def duplicates(config: Config, listed: int) -> None:
    """`kit duplicates`: near-duplicate photos within train and between train and test (perceptual hashes),
    training pairs with different labels, written to data/interim/<name>/duplicates.csv."""

    labels = load_labels(config)
    found = near_duplicates.find(config, labels, load_test(config))
    table, conflicts = found.table, found.conflicts()
    click.echo(
        f"{found.count('train')} near-duplicate pairs within {found.train_images} training images, "
        f"{len(conflicts)} of them with different labels; {found.count('train-test')} pairs between train "
        f"and {found.test_images} test images (at most {near_duplicates.MAX_DISTANCE} bits of 64 apart)"
    )
    for title, rows in (("labels differ", conflicts), ("train/test", table[table["kind"] == "train-test"])):
        for row in rows.head(listed).itertuples():
            other = f" ({row.other_label})" if row.other_label else ""
            click.echo(f"  {title}: {row.id} ({row.label}) ~ {row.other_id}{other}, {row.distance} bits")
        if len(rows) > listed:
            click.echo(f"  {title}: {len(rows) - listed} more")
    click.echo(f"all pairs: {paths.interim_dir(config.name) / 'duplicates.csv'}")
    if found.count("train") and config.data.duplicates != "group":
        click.echo(
            "set data.duplicates = 'group' in competition.toml to keep each set of copies in one fold "
            "(move folds.csv away if you made it by hand)"
        )


def show_config(query: str, overrides: tuple[str, ...]) -> None:
    """`kit config`: every resolved key, its value and where it came from (default, toml, --set)."""
    path = paths.competition_file(resolve_name(query))
    rows = value_sources(path, overrides)
    width = max(len(key) for key, _, _ in rows)
    click.echo(f"# {path}")
    for key, value, source in rows:
        click.echo(f"{key:<{width}}  {value!r:<30}  {source}")


def load_for_training(query: str, overrides: tuple[str, ...] = ()) -> Config:
    """The config, with the parts only training needs checked too (albumentations transforms)."""
    from kit.data import augment  # heavy (albumentations, cv2): only commands that train pay for it

    config = load_competition(query, overrides)
    augment.check_transforms(config)
    return config


def _train_in_new_run(config: Config, labels: LabelTable, fold: str) -> Path:
    """A new run folder, the LR finder if asked, then training.

    Under torchrun rank 0 makes the folder and prints.
    """
    from kit import distributed  # heavy (torch): only commands that train pay for it
    from kit.device import device_name  # heavy (torch)
    from kit.train import cross_validation  # heavy (torch, timm, albumentations)

    cross_validation.fold_numbers_of(config, fold)  # a bad --fold is refused before a run folder is made
    distributed.setup()
    main = distributed.is_main()
    run_dir = distributed.broadcast_object(
        new_run_dir(config, config.train.model, device_name()) if main else None
    )
    if main:
        click.echo(f"run {run_dir.relative_to(run_dir.parents[2])}")
        _record_precision(config, run_dir)
    if main:
        record_row_order(run_dir, labels.ids)  # `kit ensemble` and --resume check the rows still match
    with removed_unless_trained(run_dir) if main else nullcontext():
        if config.train.lr_find:
            if distributed.world_size() == 1:
                _lr_find(config, labels, 0, run_dir, None)
            elif main:
                click.echo("train.lr_find: skipped with several processes; run `make lr-find` on one GPU")
        summary = _train_and_settle(config, labels, fold, run_dir)
    if main:
        baseline = baseline_text(config, summary["metric"], labels)
        click.echo(cv_line(summary, baseline, quick=_is_quick(config)))
        if _is_quick(config):
            click.echo(full_recipe_note(config, summary, list_runs(config)))
    distributed.teardown()
    return run_dir


def _is_quick(config: Config) -> bool:
    return config.train.recipe == "quick"


def cv_honesty(summary: dict) -> list[str]:
    """How far the CV can be trusted (kit.predict.crossfit): how it was cross-fitted, the in-sample figure
    beside it (named so), a calibration that did not pay, a small fold's bootstrap interval. None of it
    for a run recorded before cross-fitting."""
    if "cv_in_sample" not in summary:
        return []
    how = {
        "halves": "each half of the one fold scored with what the other half chose",
        "folds": "each fold scored with what the other folds chose",
    }[summary["cv_cross_fitted_by"]]
    lines = [
        f"cross-fitted: {how}; in sample (fitted and scored on the same rows, not a CV) "
        f"{summary['cv_in_sample']:.4f}"
    ]
    if summary.get("calibration_pays") is False:
        lines.append(
            "calibration not applied: fitted on other rows it did not lower the log loss (cross-fitted "
            f"{summary['cv_uncalibrated_cross_fitted']:.4f} without it)"
        )
    if "cv_interval" in summary:
        low, high = summary["cv_interval"]
        lines.append(
            f"{summary['cv_rows']} validation rows: the CV's 95% bootstrap interval is {low:.4f}-{high:.4f} "
            "(under 200 rows: differences inside it are noise; train more folds to narrow it)"
        )
    return lines


def cv_line(summary: dict, baseline: str = "", quick: bool = False) -> str:
    """'CV log_loss: 0.1120 (uncalibrated 0.1447; folds [0]); baseline 0.6931 (...)', and the stages that
    made the loss worse (a quick run is not told to use the quick recipe)."""
    raw = summary.get("cv_uncalibrated", summary["cv"])
    beside = f"uncalibrated {raw:.4f}; " if f"{raw:.4f}" != f"{summary['cv']:.4f}" else ""
    line = f"CV {summary['metric']}: {summary['cv']:.4f} ({beside}folds {summary['folds_trained']})"
    line += f"; {baseline}" if baseline else ""
    line += "".join(f"\n{said}" for said in cv_honesty(summary))
    worse = [
        f"'{item['stage']}' {item['start']:.4f} -> {item['end']:.4f} (fold {fold})"
        for fold, items in summary.get("worse_stages", {}).items()
        for item in items
    ]
    if worse:
        line += "\nvalidation loss ended worse than it started in: " + "; ".join(worse)
        line += " (shorten those stages or lower their rates" + (")" if quick else ", or use recipe=quick)")
    return line


# An epoch that trains the whole body costs this many times one that trains the head on augmented images
# through the frozen body (the same images: a backward pass through the body, and its weights' updates,
# added to the forward pass). Measured in one `kit train` of a 300-photo fork of cats-vs-dogs-dev
# (efficientnet_lite0, 224 px, batch 64, 240 training photos): 224 s per unfrozen epoch (mean of 7) against
# 57 s for the head-augmented one, on a loaded 2-core CPU (docs/2026-12-02-forks.md). A rough figure: an
# earlier full run of the competition, when there is one, is used instead.
UNFROZEN_EPOCH_COST = 4.0


def _epoch_seconds(summary: dict) -> dict[str, list[float]]:
    """Seconds of every trained epoch, by stage name, over the run's folds (its history)."""
    seconds: dict[str, list[float]] = {}
    for result in summary.get("folds", {}).values():
        for record in result.get("history", []):
            seconds.setdefault(record["stage"], []).append(record["seconds"])
    return seconds


def full_recipe_note(config: Config, summary: dict, runs: list[Path]) -> str:
    """What the full recipe would add to a quick run, and what it would cost per fold: from the epochs of
    an earlier full run of the competition when there is one, else from this run's frozen-body epochs
    times UNFROZEN_EPOCH_COST."""
    full = load_config(config.path)  # the recipe as competition.toml writes it (this run cut it to its head)
    added = [stage for stage in full.stages if stage.name not in {s.name for s in config.stages}]
    if not added:
        return "quick recipe: the full recipe adds no stage to it here"
    epochs = {stage.name: full.stage_epochs(stage) for stage in added}
    names = ", ".join(f"'{name}' ({count:g} epochs)" for name, count in epochs.items())
    measured = {}
    for run_dir in reversed(runs):  # the newest earlier full run that trained those stages
        if Run(run_dir).summary_file.exists() and run_config(run_dir).train.recipe == "full":
            seconds = _epoch_seconds(read_json(Run(run_dir).summary_file))
            if all(name in seconds for name in epochs):
                measured = {name: sum(seconds[name]) / len(seconds[name]) for name in epochs}
                source = f"as run {run_dir.name} measured its epochs"
                break
    if not measured:
        frozen = _epoch_seconds(summary).get(config.stages[-1].name, [])
        if not frozen or config.stages[-1].precompute:
            return f"quick recipe: the full recipe adds {names}; `make train COMP={config.name}` runs it"
        each = UNFROZEN_EPOCH_COST * sum(frozen) / len(frozen)
        measured = dict.fromkeys(epochs, each)
        source = f"{UNFROZEN_EPOCH_COST}x this run's {sum(frozen) / len(frozen):.0f} s frozen-body epochs"
    minutes = sum(measured[name] * count for name, count in epochs.items()) / 60
    return (
        f"quick recipe: the full recipe adds {names}: about {minutes:.0f} min per fold here ({source}); "
        f"`make train COMP={config.name}` runs it"
    )


@contextmanager
def resume_hint(config: Config, known: set[Path] | None = None) -> Iterator[None]:
    """On Ctrl-C, say which run is left to resume and the exact command (then stop as click does). `known`:
    the runs there were before this training began (None: any unfinished run is the one)."""
    try:
        yield
    except KeyboardInterrupt:
        if os.environ.get("RANK", "0") == "0":  # torchrun: the main process speaks
            click.echo(interrupted_line(config, known), err=True)
        raise


def interrupted_line(config: Config, known: set[Path] | None) -> str:
    left = [
        run_dir
        for run_dir in list_runs(config)
        if (known is None or run_dir not in known) and not Run(run_dir).summary_file.exists()
    ]
    if not left:
        return f"interrupted before an epoch ended: nothing to resume; `kit train {config.name}` starts again"
    run = left[-1].name
    return (
        f"interrupted: run {run} resumes from its last finished epoch with "
        f"`kit train {config.name} --resume --run {run}` (make resume COMP={config.name} RUN={run})"
    )


def train(config: Config, fold: str | None = None, seeds: int = 1, chosen_on: str | None = None) -> Path:
    """Train in a new run folder; `fold` a number, "all" (None: fold 0) or "full" (every row, `seeds`
    seeds, reusing what the fold run `chosen_on` (default: the newest) chose)."""
    if fold == "full":
        with resume_hint(config, set(list_runs(config))):
            return _train_full(config, load_labels(config), seeds, chosen_on)
    if seeds != 1:  # seeds of a fold run (averaged like snapshots) are not built yet
        raise KitError(f"--seeds {seeds}: only with --fold full for now; train a fold run with one seed")
    if chosen_on is not None:
        raise KitError("--chosen-on: only with --fold full (a fold run chooses on its own OOF)")
    with resume_hint(config, set(list_runs(config))):
        return _train_in_new_run(config, load_labels(config), "0" if fold is None else fold)


def _train_full(config: Config, labels: LabelTable, seeds: int, chosen_on: str | None) -> Path:
    """A full-data refit (kit.train.full_data, then kit.predict.refit): every training row, `seeds` seeds,
    the prediction choice, views and temperatures of the fold run it reuses; its CV is that run's."""
    from kit.device import device_name  # heavy (torch)

    if seeds < 1:
        raise KitError(f"--seeds {seeds}: give 1 or more")
    source = refit.chosen_on(config, chosen_on)
    check_row_order(source, labels.ids, f"train a fold run on today's labels first ({source.name} is not)")
    run_dir = new_run_dir(config, config.train.model, device_name())
    click.echo(
        f"run {run_dir.relative_to(run_dir.parents[2])}: every training row, {seeds} seed(s); what predicts, "
        f"its views and temperatures as {source.name} chose them on its OOF"
    )
    _record_precision(config, run_dir)
    record_row_order(run_dir, labels.ids)
    with removed_unless_trained(run_dir):
        return _train_full_and_settle(config, labels, seeds, run_dir, source)


def _train_full_and_settle(
    config: Config, labels: LabelTable, seeds: int, run_dir: Path, source: Path
) -> Path:
    """The seeds not finished yet, then kit.predict.refit's step (a new refit, or one --resume continues)."""
    from kit.train import full_data  # heavy (torch, timm, albumentations)

    started = time.time()
    parts = full_data.train(config, labels, seeds, run_dir, source.name)
    summary = refit.settle_full(config, labels, run_dir, source, parts, time.time() - started)
    click.echo(
        f"CV {summary['metric']}: {summary['cv']:.4f}, reported from {source.name}, the fold run this refit "
        "reuses (a model trained on every row has no out-of-fold rows to score)"
    )
    return run_dir


def resume(
    config: Config, run: str | None, overrides: typing.Sequence[str] = (), fold: str | None = None
) -> Path:
    """Continue an interrupted run (default: the newest) with its own config; Ctrl-C says how to go on.

    Settings (`--set`) and folds (`--fold`) are refused, not applied: the run's config.json and plan
    record what its finished epochs were trained with, and a change halfway would leave a run that no
    setting describes."""
    given = [f"--set {text}" for text in overrides] + ([f"--fold {fold}"] if fold is not None else [])
    if given:
        raise KitError(
            "--resume continues a run with the settings and folds it started with (its config.json): "
            f"drop {', '.join(given)}, or start a new run without --resume"
        )
    with resume_hint(config):
        return _resume(config, run)


def _resume(config: Config, run: str | None) -> Path:
    """Continue an interrupted run (default: the newest) with its own config.

    It restarts from the last completed epoch.
    """
    from kit import distributed  # heavy (torch): only commands that train pay for it

    distributed.setup()
    plan = None
    if distributed.is_main():  # rank 0 chooses the run and reads its folder; the other ranks are told
        if run is None:
            unfinished = [
                p for p in list_runs(config) if not Run(p).summary_file.exists() and Run(p).plan_file.exists()
            ]
            if not unfinished:
                raise click.ClickException(
                    f"no interrupted run of {config.name} to resume; start one with `make train`"
                )
            run_dir = unfinished[-1]
        else:
            run_dir = find_run(config, run)
        click.echo(f"resuming run {run_dir.name}")
        recorded = read_json(Run(run_dir).plan_file)
        if recorded["fold"] == "full":  # a full-data refit: one process, its seeds then the refit step
            saved = run_config(run_dir)
            labels = load_labels(saved)
            check_row_order(run_dir, labels.ids, "start a new run: a run resumes on its own rows")
            source = find_run(saved, recorded["chosen_on"])
            return _train_full_and_settle(saved, labels, recorded["seeds"], run_dir, source)
        plan = (run_dir, run_config(run_dir), recorded["fold"])
    run_dir, saved_config, fold = distributed.broadcast_object(plan)
    check_row_order(run_dir, load_labels(saved_config).ids, "start a new run: a run resumes on its own rows")
    summary = _train_and_settle(saved_config, load_labels(saved_config), fold, run_dir)
    if distributed.is_main():
        click.echo(cv_line(summary, baseline_text(saved_config, summary["metric"])))
    distributed.teardown()
    return run_dir


def _train_and_settle(config: Config, labels: LabelTable, fold: str, run_dir: Path) -> dict | None:
    """Training (kit.train: each fold's weight files and kept views), then, on rank 0, the one step after
    it (kit.predict.summary): the prediction choice, calibration and CV summary, fitted and written once.
    Returns the summary; None on the other ranks."""
    from kit import distributed  # heavy (torch)
    from kit.predict import summary as after_training  # heavy (torch, timm, scikit-learn)
    from kit.train import cross_validation  # heavy (torch, timm, albumentations)

    started = time.time()
    fold_numbers = cross_validation.train(config, labels, fold, run_dir)
    if not distributed.is_main():
        return None
    return after_training.settle(config, labels, run_dir, fold_numbers, time.time() - started)


def _record_precision(config: Config, run_dir: Path) -> None:
    """The precision training and prediction run at on this device, added to the run's provenance.json;
    one line where train.compile is asked for but skipped here, and why."""
    from kit.device import precision_record  # heavy (torch)

    record = precision_record(config.train.precision, config.predict.precision, config.train.compile)
    provenance = Run(run_dir).provenance_file
    write_json(provenance, {**read_json(provenance), "precision": record})
    if record["compile"].startswith("skipped"):
        click.echo(f"train.compile: {record['compile']}")


def _lr_find(config: Config, labels: LabelTable, stage: int, run_dir: Path, weights: Path | None) -> dict:
    from kit.report.plots import plot_lr_find  # heavy (matplotlib)
    from kit.train.lr_find import lr_find  # heavy (torch)

    result = lr_find(config, labels, stage, run_dir, weights)
    plot = plot_lr_find(
        result["rates"], result["losses"], result["suggestion"], Run(run_dir).lr_find(stage, ".png")
    )
    click.echo(
        f"LR finder, stage {stage} ({result['stage']}): suggested lr {result['suggestion']:.3g}: "
        f"{result['reason']}; plot in {plot}"
    )
    return result


def find_learning_rate(config: Config, stage: int, run: str | None = None) -> dict:
    """The LR finder at a stage; with `run`, starting from that run's fold-0 weights, and writing there."""
    from kit.device import device_name  # heavy (torch)

    if not 0 <= stage < len(config.stages):
        raise click.ClickException(f"--stage {stage}: {config.path} has stages 0..{len(config.stages) - 1}")
    weights = None
    if run is not None:
        run_dir = find_run(config, run)
        weights = Run(run_dir).fold(0).last
        if not weights.is_file():
            raise click.ClickException(
                f"--run {run}: {weights} not found (fold 0 not trained to the end); pick a finished run"
            )
    else:
        run_dir = new_run_dir(config, config.train.model, device_name())
    return _lr_find(config, load_labels(config), stage, run_dir, weights)


def submission_file(
    config: Config, run_dir: Path, summary: dict, remake: bool, overrides: tuple[str, ...] = ()
) -> Path:
    """The run's submission CSV: predicted (again) when `remake` or when the file is missing.

    The one way every command gets a run's submission. An ensemble has no weights: its file is rebuilt from
    its blended test probabilities.
    """
    record = Run(run_dir).submission_record_file
    existing = paths.submissions_dir() / read_json(record)["file"] if record.exists() else None
    if existing is not None and existing.exists() and not (remake and not is_ensemble(summary)):
        return existing
    if is_ensemble(summary):
        return _rebuild_ensemble_submission(config, run_dir, summary)
    from kit.predict.inference import predict_run  # heavy (torch, timm)

    return predict_run(config, run_dir, summary, overrides)


def _rebuild_ensemble_submission(config: Config, run_dir: Path, summary: dict) -> Path:
    from kit.predict import submission  # heavy (scikit-learn, through kit.metrics)

    probabilities = Run(run_dir).test_probabilities
    if not probabilities.exists():
        raise click.ClickException(f'{probabilities} is missing: blend again with `make ensemble RUNS="..."`')
    from kit.predict import calibrate  # heavy (scipy): only this rebuild needs it

    parts = {BLEND: np.load(probabilities)}  # an ensemble's one calibrated part
    blend = calibrate.apply_to_parts(parts, Run(run_dir).read_calibration())
    path = submission.write_for_run(config, load_test(config).ids, blend, summary)
    record = Run(run_dir).submission_record_file
    write_json(record, {**read_json(record), "file": path.name})
    return path


def predict(config: Config, run: str | None, overrides: tuple[str, ...] = ()) -> Path:
    """The run's test prediction and submission, with the settings it was trained with (plus `overrides`)."""
    run_dir = find_run(config, run)
    summary = run_summary(run_dir, "kit predict")
    if not is_ensemble(summary):  # its OOF calibrates the prediction: it must follow today's labels
        check_row_order(run_dir, load_labels(config).ids, f"train {run_dir.name} again, or restore them")
    path = submission_file(config, run_dir, summary, remake=True, overrides=overrides)
    kind = "ensemble run" if is_ensemble(summary) else "run"
    click.echo(f"submission {path.relative_to(path.parents[1])} from {kind} {run_dir.name}")
    return path


def submit(config: Config, run: str | None, message: str, dry_run: bool) -> dict:
    """Train and predict if needed, check the file, then upload it (or score it locally) and record it.

    Nothing is uploaded unless the file passes submission.check; the ledger row is written only once the
    upload (or local score, or dry run) has succeeded.
    """
    from kit.predict import submission  # heavy (scikit-learn, through kit.metrics)

    hooks = load_hooks(config)
    if config.competition.submission == "notebook" and "score" not in hooks:
        raise click.ClickException(
            f'{config.name} is a code competition (competition.submission = "notebook" in {config.path}): '
            f"Kaggle takes no file upload; enter it with `kit notebook {config.name} --submit -m MESSAGE`"
        )
    if "score" not in hooks and not dry_run:
        if not config.competition.kaggle:
            raise click.ClickException(
                f"{config.path}: set competition.kaggle (the Kaggle slug) to upload, or use --dry-run"
            )
        api = kaggle.authenticated_api(_notice)  # missing credentials stop here, before any training
        kaggle.require_submissions_left(api, config.competition.kaggle)  # and a spent day, too
    if run is None and not finished_runs(config):
        click.echo(f"no trained run of {config.name}: training one first")
        _train_in_new_run(load_for_training(config.name), load_labels(config), "0")
    if run is None:
        from kit.metrics import METRICS  # heavy (scikit-learn)

        run_dir, why = best_run(config, METRICS[config.competition.metric].higher_is_better)
        click.echo(f"submitting {why}")
    else:
        run_dir = find_run(config, run)
    summary = run_summary(run_dir, "kit submit")
    path = submission_file(config, run_dir, summary, remake=False)
    # Labels stay text ('007' is not 7); probabilities are read as numbers so that NaN is seen.
    frame = parse_csv(
        path,
        f"delete it, and `kit submit {config.name}` predicts it again",
        dtype=str if config.submission.format == "label" else {config.submission.id_column: str},
    )
    sample = submission.read_sample(config)
    submission.check(config, frame, sample, str(path), summary["classes"], tasks.from_record(summary["task"]))
    submission.check_unchanged(path)  # valid, but edited since `kit predict`: not under the run's CV
    frame = submission.clip(config, frame)
    row = _ledger_row(config, run_dir, summary, path.name, message)
    text = row["message"]
    if "score" in hooks:
        scores = hooks["score"](frame, paths.raw_dir(config.name))
        row.update(status="scored locally", public_score=f"{next(iter(scores.values())):.6f}")
        click.echo("local leaderboard: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))
    elif dry_run:
        row.update(status="dry run (not uploaded)")
    else:
        limits = kaggle.require_submissions_left(
            api, config.competition.kaggle
        )  # training may have crossed midnight
        if limits is not None:
            click.echo(f"{limits.left_today} submissions left today on Kaggle; uploading one")
        # The clipped copy keeps the file's name: Kaggle lists it, and `kit ledger` matches on it.
        with tempfile.TemporaryDirectory(prefix=".upload-", dir=path.parent) as folder:
            upload = Path(folder) / path.name
            frame.to_csv(upload, index=False)
            kaggle.submit(config.competition.kaggle, upload, text, api)
        row.update(status="uploaded")
    submission_ledger.append_ledger(row)
    click.echo(f"{row['status']}: {path.name} ({text})")
    return row


def _ledger_row(config: Config, run_dir: Path, summary: dict, file: str, message: str) -> dict:
    """A ledger row for a submission of a run (its status and scores are added by the caller)."""
    commit = read_json(Run(run_dir).provenance_file).get("commit", git_commit())
    text = (
        f"{message + ' | ' if message else ''}CV {summary['metric']} {summary['cv']:.4f} | "
        f"run {run_dir.name} | commit {commit}"
    )
    return {
        "time_utc": utc_stamp(),
        "competition": config.name,
        "file": file,
        "run": run_dir.name,
        "commit": commit,
        "metric": summary["metric"],
        "cv": f"{summary['cv']:.6f}",  # as submitted: calibrated, upload clip included
        "cv_uncalibrated": f"{summary.get('cv_uncalibrated', summary['cv']):.6f}",
        "message": text,
    }


def notebook(
    config: Config,
    run: str | None,
    gpu: bool | None,
    submit: bool,
    message: str,
    submit_only: bool = False,
    delete_old_versions: bool = False,
    local: bool = False,
    force: bool = False,
) -> dict:
    """A code competition, in one command: package the run as a private Kaggle dataset, write and push the
    notebook that predicts with it (internet off), follow it to the end, fetch its outputs, and with
    `submit`, make the code submission and record it in the ledger as `kit submit` does. With `submit`,
    Kaggle is asked first whether a submission can be made (joined, rules accepted, one left today), so
    nothing is built for nothing. `submit_only` submits the output of the run's notebook that completed
    already, without running it again. `delete_old_versions` drops the dataset's earlier versions.

    `local`: rehearse instead (kit.kaggle.rehearsal: built and executed here, offline, timed; nothing is
    pushed, no credentials asked for). Before a push, the last rehearsal's time budget is shown; above 80%
    of notebook.timeout_minutes the push is refused unless `force`."""
    from kit.kaggle import notebook as notebook_writer  # heavy (nbformat; torch through package)
    from kit.kaggle import package  # heavy (torch, timm: kit.predict.inference)

    slug = config.competition.kaggle or (config.name if local else "")  # a rehearsal names the folder
    if not slug:
        raise click.ClickException(
            f"{config.path}: set competition.kaggle (the Kaggle slug) for `kit notebook`, "
            "e.g. --set competition.kaggle=SLUG"
        )
    if (submit or submit_only) and config.competition.submission != "notebook":
        raise click.ClickException(
            f"{config.path}: competition.submission = {config.competition.submission!r}: Kaggle takes files, "
            f"not notebooks, for {slug}; use `kit submit {config.name}` "
            "(or set competition.submission = 'notebook')"
        )
    run_dir = find_run(config, run)
    summary = run_summary(run_dir, "kit notebook")
    if is_ensemble(summary):
        raise click.ClickException(
            f"{run_dir.name} is an ensemble (no weights of its own): package one of its runs with --run"
        )
    use_gpu = config.notebook.gpu if gpu is None else gpu
    accelerator = budget.default_accelerator(config.notebook.accelerator, use_gpu)
    if local:
        return _rehearse_notebook(config, run_dir, summary, slug, accelerator)
    rehearsed = submit_only or _check_budget(config, run_dir, accelerator, force)  # over the limit: stop
    api = kaggle.authenticated_api()  # missing credentials stop here, before anything is built
    if submit or submit_only:
        kernels.require_code_submission_possible(api, slug)  # so are rules, joining and today's limit
    owner = kernels.username(api)
    dataset_id = f"{owner}/{package.dataset_slug(config.name)}"
    base = Run(run_dir).kaggle_folder
    if submit_only:
        pushed = kernels.recorded_pushed(base, f"run `kit notebook {config.name} --submit` instead")
        kept_output = base / "output" / package.SUBMISSION_FILE
        package.check_submission(config, kept_output, summary["classes"], summary["task"])
        return _submit_notebook(config, run_dir, summary, api, pushed, message)
    built = package.build(config, run_dir, summary, dataset_id, base / "dataset")
    click.echo(
        f"package {dataset_id}: {built.size_bytes / package.MEGABYTE:.1f} MB "
        f"({len(built.manifest['weights'])} weight files, wheel {built.manifest['wheel']})"
    )
    notebook_path, metadata = notebook_writer.write_kernel(
        base / "notebook", built.manifest, owner, dataset_id, slug, use_gpu, accelerator
    )
    where = {"cpu": "CPU", "t4": "GPU T4", "t4x2": "GPU T4 x2"}[accelerator]
    if not rehearsed:
        click.echo(f"time budget: unknown (no rehearsal: `kit notebook {config.name} --local` measures it)")
    click.echo(f"notebook {notebook_path.relative_to(run_dir.parent)} ({where}, internet off)")
    timeout = config.notebook.timeout_minutes * 60
    outcome = kernels.publish_dataset(
        api, built.folder, dataset_id, f"run {run_dir.name}", delete_old_versions=delete_old_versions
    )
    kernels.wait_for_dataset(api, dataset_id, config.notebook.poll_seconds, timeout)
    click.echo(f"dataset {dataset_id}: {outcome}")
    pushed = kernels.push_kernel(api, base / "notebook")
    click.echo(f"pushed {pushed.ref} version {pushed.version} {pushed.url}".rstrip())
    finished = kernels.wait_for_kernel(api, pushed, config.notebook.poll_seconds, timeout)
    outputs, log = kernels.kernel_output(api, pushed, base / "output")
    if finished.status != "complete":
        for line in kernels.last_lines(log):
            click.echo(f"  | {line}", err=True)
        raise click.ClickException(
            f"the notebook {pushed.ref} version {pushed.version} ended {finished.status}"
            f"{': ' + finished.failure if finished.failure else ''} (its log's last lines are above; all of "
            f"it in {base / 'output'}): nothing was submitted"
        )
    produced = base / "output" / package.SUBMISSION_FILE
    if produced not in outputs:
        raise click.ClickException(
            f"the notebook {pushed.ref} version {pushed.version} wrote no {package.SUBMISSION_FILE}: "
            "nothing was submitted"
        )
    package.check_submission(config, produced, summary["classes"], summary["task"])
    click.echo(f"notebook {pushed.ref} v{pushed.version} complete; its {package.SUBMISSION_FILE} is valid")
    kernels.record_pushed(base, pushed)  # `--submit-only` can submit this output later
    if not submit:
        row = _ledger_row(config, run_dir, summary, f"{pushed.ref}@{pushed.version}", message)
        return {**row, "status": "notebook run (not submitted)"}
    return _submit_notebook(config, run_dir, summary, api, pushed, message)


def _submit_notebook(config: Config, run_dir: Path, summary: dict, api, pushed, message: str) -> dict:
    """The code submission of a notebook version whose output was checked, recorded in the ledger."""
    from kit.kaggle import package  # heavy

    row = _ledger_row(config, run_dir, summary, f"{pushed.ref}@{pushed.version}", message)
    kept = (
        f"the notebook's output is kept in {run_dir / 'kaggle' / 'output'}: submit it without running the "
        f"notebook again with `kit notebook {config.name} --run {run_dir.name} --submit-only`"
    )
    kernels.submit_code(api, config.competition.kaggle, pushed, package.SUBMISSION_FILE, row["message"], kept)
    row.update(status="uploaded")
    submission_ledger.append_ledger(row)
    click.echo(f"submitted: {pushed.ref} version {pushed.version} ({row['message']})")
    return row


def _rehearse_notebook(config: Config, run_dir: Path, summary: dict, slug: str, accelerator: str) -> dict:
    """`kit notebook --local`: the rehearsal, its phases, its submission against `kit predict`'s, and the
    time budget on Kaggle's `accelerator`."""
    from kit.kaggle import rehearsal  # heavy (nbclient; torch through the package)

    gpu = accelerator != "cpu"
    click.echo(
        f"rehearsing the notebook of run {run_dir.name} here: offline, {budget.KAGGLE_CORES} cores, "
        f"{'the GPU if any' if gpu else 'no GPU'}; nothing is pushed"
    )
    record = rehearsal.rehearse(config, run_dir, summary, slug, gpu)
    for cell in record["cells"]:
        click.echo(f"  {cell['seconds']:8.1f} s  {cell['cell']}")
    phases = record["phases"]
    click.echo(
        "  prediction: "
        + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in phases["seconds"].items())
        + f" ({phases['images']} images x {phases['weight_files']} weight files x {phases['views']} views on "
        f"{phases['device']}, {phases['precision']}, {phases['cores']} cores)"
    )
    expected = submission_file(config, run_dir, summary, remake=False)  # `kit predict`'s file for the run
    difference = rehearsal.largest_difference(Path(record["submission"]), expected)
    same = "identical to" if difference == 0 else f"largest difference {difference:.2g} from"
    click.echo(f"{record['submission']}: {same} `kit predict`'s {expected.name}")
    measured = budget.Rehearsal(**record["budget"])
    hidden, limit = config.notebook.hidden_test_images, config.notebook.timeout_minutes
    for line in budget.budget_lines(measured, accelerator, hidden, limit):
        click.echo(line)
    return {**record, "difference": difference}


def _check_budget(config: Config, run_dir: Path, accelerator: str, force: bool) -> bool:
    """The last rehearsal's time budget on Kaggle, shown before a push; above budget.REFUSE_ABOVE of
    notebook.timeout_minutes the push is refused unless `force`. Whether the run had a rehearsal."""
    from kit.kaggle import rehearsal  # heavy (torch through the package)

    record = rehearsal.read_rehearsal(run_dir)
    if record is None:
        return False
    measured = budget.Rehearsal(**record["budget"])
    hidden, limit = config.notebook.hidden_test_images, config.notebook.timeout_minutes
    for line in budget.budget_lines(measured, accelerator, hidden, limit):
        click.echo(line)
    estimate = budget.estimate(measured, accelerator, hidden)
    if budget.over_budget(estimate, limit) and not force:
        raise click.ClickException(
            f"the notebook is estimated at {estimate.minutes:.0f} min on Kaggle's {accelerator}, above "
            f"{budget.REFUSE_ABOVE:.0%} of notebook.timeout_minutes = {limit:g} ({config.path}): take the "
            "cut above, or push anyway with --force"
        )
    return True


def ledger(config: Config) -> pd.DataFrame:
    """Every submission of the competition, CV next to leaderboard.

    Public scores are refreshed from Kaggle first.
    """
    table = submission_ledger.read_ledger()
    strangers = []
    if config.competition.kaggle and "score" not in load_hooks(config):
        try:
            remote = kaggle.list_submissions(config.competition.kaggle)
        except click.ClickException as error:  # the local ledger is still worth showing
            click.echo(f"scores not refreshed: {error.message}", err=True)
        else:
            with submission_ledger.ledger_lock():  # a `kit submit` meanwhile keeps its row
                table, strangers = submission_ledger.merge_kaggle_scores(
                    submission_ledger.read_ledger(), remote, config.name
                )
                submission_ledger.write_ledger(table)
    columns = [
        "time_utc",
        "file",
        "run",
        "metric",
        "cv",
        "cv_uncalibrated",
        "public_score",
        "private_score",
        "status",
    ]
    shown = table.loc[table["competition"] == config.name, columns]
    outside = pd.DataFrame(
        [
            {
                "time_utc": datetime.fromisoformat(entry["date"]).strftime("%Y%m%d-%H%M%S")
                if entry["date"]
                else "",
                "file": entry["file_name"] or "",
                "run": "",
                "metric": config.competition.metric,
                "cv": "",
                "cv_uncalibrated": "",
                "public_score": entry["public_score"] or "",
                "private_score": entry["private_score"] or "",
                "status": f"{entry['status'] or 'unknown'} (not in ledger)",
            }
            for entry in strangers
        ],
        columns=columns,
    )
    result = (
        pd.concat([shown, outside], ignore_index=True)
        .sort_values("time_utc", kind="stable")
        .reset_index(drop=True)
    )
    if len(result):
        for line in _baseline_lines(config, list(result["metric"])):
            click.echo(line)
    click.echo(result.to_string(index=False) if len(result) else f"no submissions of {config.name} yet")
    points = submission_ledger.cv_and_public(result)
    line = submission_ledger.correlation_line(points)
    click.echo(line)
    if len(points) >= 2:
        from kit.report import plots  # heavy (matplotlib)

        target = paths.submissions_dir() / f"{config.name}-cv-vs-public.png"
        plots.plot_cv_against_public(
            points["cv"].to_numpy(), points["public"].to_numpy(), config.competition.metric, line, target
        )
        click.echo(f"plot: {target}")
    return result


def new_competition(
    name: str, slug: str, metric: str | None, from_raw: bool, like: str | None = None
) -> Path:
    """Fork: download SLUG into data/raw/NAME (once), infer its layout.

    Writes competitions/NAME/competition.toml: the kit's recipe with the defaults its measurements support
    for the metric and kind, or with `like`, the recipe of that shipped competition.
    """
    target = paths.competition_file(name)
    scaffold.check_name(name, target)
    like_path = paths.competition_file(resolve_name(like)) if like else None
    if metric is not None and metric not in typing.get_args(MetricName):
        raise click.ClickException(
            f"--metric {metric!r}: choose one of {', '.join(typing.get_args(MetricName))}"
        )
    target_raw = paths.raw_dir(name)
    marker = target_raw / DOWNLOAD_MARKER
    if from_raw:
        if not target_raw.is_dir() or not any(target_raw.iterdir()):
            raise click.ClickException(
                f"--from-raw: {target_raw} is empty; put the competition's files there first"
            )
        archives = sorted(path.name for path in target_raw.glob("*.zip"))
        folders = [path for path in target_raw.iterdir() if path.is_dir() and not path.name.startswith(".")]
        if archives and not folders:
            raise click.ClickException(
                f"--from-raw: {target_raw} holds {', '.join(archives)} not extracted: extract them there "
                f"(cd {target_raw} && unzip -q {archives[0]}), then run kit new again"
            )
    elif marker.is_file():
        slug = slug or marked_slug(target_raw)
        click.echo(f"{target_raw} is already downloaded: inspecting it")
    else:
        if not slug:
            raise click.ClickException(
                "kit new NAME needs --kaggle SLUG (from the competition's URL), or --from-raw"
            )
        if target_raw.is_dir() and any(target_raw.iterdir()):
            raise click.ClickException(
                f"{target_raw} holds files but no finished download: "
                "add --from-raw to use them, or move it away"
            )
        kaggle_download.download_competition(slug, target_raw, _notice)
    layout = scaffold.inspect(target_raw)
    metric = metric or scaffold.default_metric(layout.submission["format"], layout.task)
    code_competition = None
    if slug:
        code_competition = kernels.is_code_competition(slug)
    kind = "notebook" if code_competition else "csv"
    if like_path is not None:
        text = scaffold.render_like(name, slug or "", layout, metric, like_path.parent.name, like_path, kind)
    else:
        text = scaffold.render(name, slug or "", layout, metric, kind)
    config_from_dict(tomllib.loads(text), target)  # what is written must load: check first
    scaffold.write_new(target, text)
    if raw_state(target_raw) == "unmarked":  # put there by hand: now the competition's data
        mark_hand_filled(target_raw, slug or "")
    click.echo(scaffold.report(layout, metric, target))
    click.echo(scaffold.submission_note(code_competition))
    return target


def list_competitions() -> list[dict]:
    """Each competition with its slug and how far it has got (downloaded, runs, best CV)."""
    rows = []
    for name in competition_names():
        try:
            config = load_config(paths.competition_file(name))
        except KitError as error:  # one broken competition.toml is listed as such, the others still work
            rows.append({"competition": name, "kaggle": "", "status": f"config error: {error.message}"})
            continue
        scores = [read_json(Run(p).summary_file)["cv"] for p in finished_runs(config)]
        raw = paths.raw_dir(config.name)
        state = raw_state(raw)
        status = {
            "downloaded": "downloaded",
            HAND_FILLED: "downloaded (hand-filled)",
            "unmarked": f"files in data/raw/{name}, not marked: `kit download {name} --hand-filled`",
            "empty": "not downloaded",
        }[state]
        if scores:
            status += f", {len(scores)} runs, last CV {config.competition.metric} {scores[-1]:.4f}"
        rows.append({"competition": name, "kaggle": config.competition.kaggle or "(local)", "status": status})
    for row in rows:
        click.echo(f"{row['competition']:<20} {row['kaggle']:<40} {row['status']}")
    return rows


def report(config: Config, run: str | None) -> Path:
    """Write a run's self-contained HTML report (default: the newest finished run)."""
    from kit.report.report import write_report  # heavy (matplotlib, PIL)

    run_dir = find_run(config, run)
    labels = load_labels(config)
    check_row_order(run_dir, labels.ids, f"train {run_dir.name} again, or restore the labels file")
    path = write_report(config, labels, run_dir, run_summary(run_dir, "kit report"))
    click.echo(f"report {path}")
    return path


def _baseline_lines(config: Config, metrics: list[str]) -> list[str]:
    """'log_loss baseline 0.6931 (...)' for each metric shown, to read the CVs below against."""
    lines = []
    for metric in dict.fromkeys(metrics):
        text = baseline_text(config, metric) if isinstance(metric, str) else ""
        lines += [f"{metric} {text}"] if text else []
    return lines


def runs(config: Config) -> pd.DataFrame:
    table = runs_table(config)
    if len(table):
        for line in _baseline_lines(config, list(table["metric"])):
            click.echo(line)
    click.echo(table.to_string(index=False) if len(table) else "no runs yet")
    return table


def ensemble(config: Config, specs: list[str]) -> Path:
    """Blend runs (or kept variants of them) on OOF, calibrate, write the submission."""
    from kit.predict.ensemble import ensemble_runs  # heavy when a member must predict first (torch)

    run_dir = ensemble_runs(config, load_labels(config), specs)
    summary = Run(run_dir).read_summary()
    weights = ", ".join(
        f"{name} {weight:.3f}"
        for name, weight in zip(summary["ensemble"]["runs"], summary["ensemble"]["weights"], strict=True)
    )
    click.echo(
        f"ensemble {run_dir.name}: OOF {summary['metric']} {summary['cv']:.4f} (weights {weights}); "
        f"submission {read_json(run_dir / 'submission.json')['file']}"
    )
    if "cross_fitted" in summary["ensemble"]:  # the blend against its best member, on rows that chose nothing
        click.echo(summary["ensemble"]["cross_fitted"]["line"])
    for line in cv_honesty(summary):
        click.echo(line)
    return run_dir
