"""The commands after training: predict, submit, the ledger, the report, the runs table and ensembles."""

from __future__ import annotations

import tempfile
from datetime import datetime
from pathlib import Path

import click
import numpy as np
import pandas as pd

from kit import ledger as submission_ledger
from kit import paths, tasks
from kit.commands.common import baseline_text, notice
from kit.commands.training import cv_honesty, load_for_training, train_in_new_run
from kit.config import Config
from kit.data.labels import check_row_order, load_labels, load_test, parse_csv
from kit.errors import KitError
from kit.files import (
    git_commit,
    read_json,
    utc_stamp,
    write_json,
)
from kit.hooks import load_hooks
from kit.kaggle import client as kaggle
from kit.report.runs_table import runs_table
from kit.run import BLEND, Run, Summary
from kit.run_folder import (
    best_run,
    find_run,
    finished_runs,
    run_summary,
)


def submission_file(
    config: Config, run_dir: Path, summary: Summary, remake: bool, overrides: tuple[str, ...] = ()
) -> Path:
    """The run's submission CSV: predicted (again) when `remake` or when the file is missing.

    The one way every command gets a run's submission. An ensemble has no weights: its file is rebuilt from
    its blended test probabilities.
    """
    record = Run(run_dir).submission_record_file
    existing = paths.submissions_dir() / read_json(record)["file"] if record.exists() else None
    if existing is not None and existing.exists() and not (remake and not summary.is_ensemble):
        return existing
    if summary.is_ensemble:
        return _rebuild_ensemble_submission(config, run_dir, summary)
    from kit.predict.inference import predict_run  # heavy (torch, timm)

    return predict_run(config, run_dir, summary, overrides)


def _rebuild_ensemble_submission(config: Config, run_dir: Path, summary: Summary) -> Path:
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
    if not summary.is_ensemble:  # its OOF calibrates the prediction: it must follow today's labels
        check_row_order(run_dir, load_labels(config).ids, f"train {run_dir.name} again, or restore them")
    path = submission_file(config, run_dir, summary, remake=True, overrides=overrides)
    kind = "ensemble run" if summary.is_ensemble else "run"
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
        api = kaggle.authenticated_api(notice)  # missing credentials stop here, before any training
        kaggle.require_submissions_left(api, config.competition.kaggle)  # and a spent day, too
    if run is None and not finished_runs(config):
        click.echo(f"no trained run of {config.name}: training one first")
        train_in_new_run(load_for_training(config.name), load_labels(config), "0")
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
    task = tasks.from_record(summary.task_record)
    submission.check(config, frame, sample, str(path), summary.classes, task)
    submission.check_unchanged(path)  # valid, but edited since `kit predict`: not under the run's CV
    frame = submission.clip(config, frame)
    row = ledger_row(config, run_dir, summary, path.name, message)
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


def ledger_row(config: Config, run_dir: Path, summary: Summary, file: str, message: str) -> dict:
    """A ledger row for a submission of a run (its status and scores are added by the caller)."""
    commit = read_json(Run(run_dir).provenance_file).get("commit", git_commit())
    text = (
        f"{message + ' | ' if message else ''}CV {summary.metric} {summary.cv:.4f} | "
        f"run {run_dir.name} | commit {commit}"
    )
    return {
        "time_utc": utc_stamp(),
        "competition": config.name,
        "file": file,
        "run": run_dir.name,
        "commit": commit,
        "metric": summary.metric,
        "cv": f"{summary.cv:.6f}",  # as submitted: calibrated, upload clip included
        "cv_uncalibrated": f"{summary.cv_uncalibrated:.6f}",
        "message": text,
    }


def ledger(config: Config) -> pd.DataFrame:
    """Every submission of the competition, CV next to leaderboard.

    Public scores are refreshed from Kaggle first.
    """
    table = submission_ledger.read_ledger()
    strangers = []
    if config.competition.kaggle and "score" not in load_hooks(config):
        try:
            remote = kaggle.list_submissions(config.competition.kaggle)
        except KitError as error:  # the local ledger is still worth showing
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
    summary = Run(run_dir).summary()
    weights = ", ".join(
        f"{name} {weight:.3f}"
        for name, weight in zip(summary.members, summary.ensemble["weights"], strict=True)
    )
    click.echo(
        f"ensemble {run_dir.name}: OOF {summary.metric} {summary.cv:.4f} (weights {weights}); "
        f"submission {read_json(Run(run_dir).submission_record_file)['file']}"
    )
    click.echo(summary.ensemble["cross_fitted"]["line"])  # the blend against its best member, cross-fitted
    for line in cv_honesty(summary):
        click.echo(line)
    return run_dir
