"""`kit train`, `kit train --resume` and `kit lr-find`: a new run folder, training, then the one step
after it (kit.predict.summary.settle) that chooses, calibrates and reports the CV."""

from __future__ import annotations

import os
import time
import typing
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import click

from kit.commands.common import baseline_text
from kit.competitions import load_competition
from kit.config import Config
from kit.config_build import load_config
from kit.data.labels import LabelTable, check_row_order, load_labels, record_row_order
from kit.errors import KitError
from kit.files import (
    read_json,
    write_json,
)
from kit.predict import refit
from kit.run import CONFIG_FILE, Run, RunError, Summary
from kit.run_folder import (
    find_run,
    list_runs,
    new_run_dir,
    removed_unless_trained,
    run_config,
)
from kit.train.seeds import check_seeds  # light (numpy): refuses before anything heavy loads


def load_for_training(query: str, overrides: tuple[str, ...] = ()) -> Config:
    """The config, with the parts only training needs checked too (albumentations transforms)."""
    from kit.data import augment  # heavy (albumentations, cv2): only commands that train pay for it

    config = load_competition(query, overrides)
    augment.check_transforms(config)
    return config


def train_in_new_run(
    config: Config, labels: LabelTable, fold: str, parallel: str | None = None, seeds: int = 1
) -> Path:
    """A new run folder, the LR finder if asked, then training (`parallel` "folds": each process its own
    folds, kit.train.parallel_folds; `seeds`: each fold trained with that many seeds, averaged).

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
        summary = _train_and_settle(config, labels, fold, run_dir, parallel, seeds)
    if main:
        baseline = baseline_text(config, summary.metric, labels)
        click.echo(cv_line(summary, baseline, quick=_is_quick(config)))
        if _is_quick(config):
            click.echo(full_recipe_note(config, summary, list_runs(config)))
    distributed.teardown()
    return run_dir


def _is_quick(config: Config) -> bool:
    return config.train.recipe == "quick"


def cv_honesty(summary: Summary) -> list[str]:
    """How far the CV can be trusted (kit.predict.crossfit): how it was cross-fitted, the in-sample figure
    beside it (named so), a calibration that did not pay, a small fold's bootstrap interval. None of it
    where the CV was not cross-fitted (a full-data refit reports its fold run's)."""
    if summary.cross_fitted_by is None or summary.cv_in_sample is None:
        return []
    how = {
        "halves": "each half of the one fold scored with what the other half chose",
        "folds": "each fold scored with what the other folds chose",
    }[summary.cross_fitted_by]
    lines = [
        f"cross-fitted: {how}; in sample (fitted and scored on the same rows, not a CV) "
        f"{summary.cv_in_sample:.4f}"
    ]
    if summary.calibration_pays is False:
        lines.append(
            "calibration not applied: fitted on other rows it did not lower the log loss (cross-fitted "
            f"{summary.cv_uncalibrated_cross_fitted:.4f} without it)"
        )
    if summary.cv_interval is not None:
        low, high = summary.cv_interval
        lines.append(
            f"{summary.cv_rows} validation rows: the CV's 95% bootstrap interval is {low:.4f}-{high:.4f} "
            "(under 200 rows: differences inside it are noise; train more folds to narrow it)"
        )
    return lines


def cv_line(summary: Summary, baseline: str = "", quick: bool = False) -> str:
    """'CV log_loss: 0.1120 (uncalibrated 0.1447; folds [0]); baseline 0.6931 (...)', and the stages that
    made the loss worse (a quick run is not told to use the quick recipe)."""
    raw = summary.cv_uncalibrated
    if summary.cross_fitted_by is not None and summary.cv_in_sample is not None:
        # cv_uncalibrated is scored on the rows that chose the views and weights: beside a cross-fitted CV,
        # only the cross-fitted figure without calibration compares (and only where calibration applies)
        raw = summary.cv_uncalibrated_cross_fitted if summary.calibration_pays else None
    uncalibrated = f"{raw:.4f}" if raw is not None else None
    beside = f"uncalibrated {uncalibrated}; " if uncalibrated not in (None, f"{summary.cv:.4f}") else ""
    line = f"CV {summary.metric}: {summary.cv:.4f} ({beside}folds {summary.folds_trained})"
    line += f"; {baseline}" if baseline else ""
    line += "".join(f"\n{said}" for said in cv_honesty(summary))
    if len(summary.folds_trained) > 1 and not summary.is_full_refit:  # kit.predict.fold_average
        line += (
            f"\nthe submission averages {len(summary.folds_trained)} fold models; CV scores one per row: "
            "`kit predict` estimates how much better the leaderboard should be"
        )
    worse = [
        f"'{item['stage']}' {item['start']:.4f} -> {item['end']:.4f} (fold {fold})"
        for fold, items in summary.worse_stages.items()
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


def _epoch_seconds(summary: Summary) -> dict[str, list[float]]:
    """Seconds of every trained epoch, by stage name, over the run's folds (its history)."""
    seconds: dict[str, list[float]] = {}
    for result in summary.folds.values():
        for record in result.get("history", []):
            seconds.setdefault(record["stage"], []).append(record["seconds"])
    return seconds


def full_recipe_note(config: Config, summary: Summary, runs: list[Path]) -> str:
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
            try:
                seconds = _epoch_seconds(Run(run_dir).summary())
            except RunError:  # another kit's run: no measurement to take from it
                continue
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
    seconds = sum(measured[name] * count for name, count in epochs.items())
    cost = f"{seconds:.0f} s" if seconds < 60 else f"{seconds / 60:.0f} min"  # "about 0 min" said nothing
    return (
        f"quick recipe: the full recipe adds {names}: about {cost} per fold here ({source}); "
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


def train(
    config: Config,
    fold: str | None = None,
    seeds: int = 1,
    chosen_on: str | None = None,
    parallel: str | None = None,
    overrides: typing.Sequence[str] = (),
) -> Path:
    """Train in a new run folder; `fold` a number or "all" (None: fold 0), each fold `seeds` times with
    the seeds averaged (kit.train.seeds), or "full" (every row, `seeds` seeds, reusing what the fold run
    `chosen_on` (default: the newest) chose, trained with that run's settings plus `overrides`, the
    command's --set). `parallel` "folds": under torchrun each process trains its own folds (fold k on
    process k mod N) instead of DDP inside a fold."""
    parallel = parallel_mode(parallel, fold, int(os.environ.get("WORLD_SIZE", "1")))
    if fold == "full":
        with resume_hint(config, set(list_runs(config))):
            return _train_full(config, seeds, chosen_on, overrides)
    stop_note = check_seeds(config, seeds)  # seeds of a fold: averaged like snapshots (kit.train.seeds)
    if chosen_on is not None:
        raise KitError("--chosen-on: only with --fold full (a fold run chooses on its own OOF)")
    if stop_note and os.environ.get("RANK", "0") == "0":
        click.echo(stop_note)
    with resume_hint(config, set(list_runs(config))):
        return train_in_new_run(config, load_labels(config), "0" if fold is None else fold, parallel, seeds)


def parallel_mode(parallel: str | None, fold: str | None, processes: int) -> str | None:
    """--parallel folds as it applies: refused in one line with --fold full or one fold under torchrun;
    with one process (not under torchrun) the folds train one after the other, said in one line."""
    if parallel is None:
        return None
    if parallel != "folds":
        raise KitError(f"--parallel {parallel}: the one mode is 'folds' (each process trains its own folds)")
    if fold == "full":
        raise KitError(
            "--parallel folds: --fold full trains its seeds in one process; drop --parallel (and torchrun)"
        )
    if processes <= 1:
        click.echo("--parallel folds: one process (not under torchrun): the folds train one after the other")
        return None
    if fold != "all":
        raise KitError(
            f"--parallel folds with --fold {'0' if fold is None else fold}: one fold cannot be split by "
            "folds; use --fold all, or drop --parallel to train that fold with DDP across the processes"
        )
    return parallel


def _train_full(config: Config, seeds: int, chosen_on: str | None, overrides: typing.Sequence[str]) -> Path:
    """A full-data refit (kit.train.full_data, then kit.predict.refit): every training row, `seeds` seeds,
    the prediction choice, views and temperatures of the fold run it reuses; its CV is that run's.

    It trains the fold run's settings (its config.json) plus `overrides`, not competition.toml's: what it
    reuses was chosen on that recipe. Where the TOML now trains otherwise, one line says so."""
    from kit.data import augment  # heavy (albumentations, cv2)
    from kit.device import device_name  # heavy (torch)

    if seeds < 1:
        raise KitError(f"--seeds {seeds}: give 1 or more")
    source = refit.chosen_on(config, chosen_on)
    recorded = run_config(source, overrides)  # the recipe the fold run was chosen on, plus this --set
    note = refit.settings_note(source.name, recorded, config)
    if note:
        click.echo(note)
    config = recorded
    augment.check_transforms(config)
    labels = load_labels(config)
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
    summary = Summary(refit.settle_full(config, labels, run_dir, source, parts, time.time() - started))
    click.echo(
        f"CV {summary.metric}: {summary.cv:.4f}, reported from {source.name}, the fold run this refit "
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
            f"--resume continues a run with the settings and folds it started with (its {CONFIG_FILE}): "
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
            if Run(run_dir).summary_file.exists():  # settled: resuming it would only redo its prediction
                raise KitError(
                    f"run {run_dir.name} is finished (its {Run(run_dir).summary_file.name} is written): "
                    f"nothing to resume; `kit predict {config.name} {run_dir.name}` predicts with it, "
                    f"`kit train {config.name}` starts a new run"
                )
        click.echo(f"resuming run {run_dir.name}")
        recorded = read_json(Run(run_dir).plan_file)
        if recorded["fold"] == "full":  # a full-data refit: one process, its seeds then the refit step
            saved = run_config(run_dir)
            labels = load_labels(saved)
            check_row_order(run_dir, labels.ids, "start a new run: a run resumes on its own rows")
            source = find_run(saved, recorded["chosen_on"])
            return _train_full_and_settle(saved, labels, recorded["seeds"], run_dir, source)
        plan = (
            run_dir,
            run_config(run_dir),
            recorded["fold"],
            recorded.get("parallel"),
            recorded.get("seeds", 1),
        )
    run_dir, saved_config, fold, parallel, seeds = distributed.broadcast_object(plan)
    if parallel is not None and distributed.world_size() == 1:  # a fold-parallel run resumed in one process
        click.echo("--parallel folds: one process (not under torchrun): the folds left train in turn")
        parallel = None
    check_row_order(run_dir, load_labels(saved_config).ids, "start a new run: a run resumes on its own rows")
    summary = _train_and_settle(saved_config, load_labels(saved_config), fold, run_dir, parallel, seeds)
    if distributed.is_main():
        click.echo(cv_line(summary, baseline_text(saved_config, summary.metric)))
    distributed.teardown()
    return run_dir


def _train_and_settle(
    config: Config, labels: LabelTable, fold: str, run_dir: Path, parallel: str | None = None, seeds: int = 1
) -> Summary | None:
    """Training (kit.train: each fold's weight files and kept views, its `seeds` averaged; with `parallel`
    "folds", each process its own folds, every process's success gathered first), then, on rank 0, the
    one step after it (kit.predict.summary): the prediction choice, calibration and CV summary, fitted and
    written once.
    Returns the summary; None on the other ranks."""
    from kit import distributed  # heavy (torch)
    from kit.predict import summary as after_training  # heavy (torch, timm, scikit-learn)
    from kit.train import cross_validation, parallel_folds  # heavy (torch, timm, albumentations)

    started = time.time()
    trainer = parallel_folds.train if parallel == "folds" else cross_validation.train
    fold_numbers = trainer(config, labels, fold, run_dir, seeds)
    if not distributed.is_main():
        return None
    return Summary(after_training.settle(config, labels, run_dir, fold_numbers, time.time() - started))


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


def find_learning_rate(
    config: Config, stage: int, run: str | None = None, overrides: tuple[str, ...] = ()
) -> dict:
    """The LR finder at a stage; with `run`, starting from that run's fold-0 weights, with the settings it
    trained with (its image size, stages; plus `overrides`), and writing there."""
    from kit.device import device_name  # heavy (torch)

    if not 0 <= stage < len(config.stages):
        raise click.ClickException(f"--stage {stage}: {config.path} has stages 0..{len(config.stages) - 1}")
    weights = None
    if run is not None:
        run_dir = find_run(config, run)
        config = run_config(run_dir, overrides)  # a run trained at 96 px is tested at 96 px, not at 224
        weights = Run(run_dir).fold(0).last
        if not weights.is_file():
            raise click.ClickException(
                f"--run {run}: {weights} not found (fold 0 not trained to the end); pick a finished run"
            )
    else:
        run_dir = new_run_dir(config, config.train.model, device_name())
    return _lr_find(config, load_labels(config), stage, run_dir, weights)
