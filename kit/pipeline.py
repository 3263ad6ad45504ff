"""The steps a user runs, in order: download, folds, train, predict, submit. The CLI calls these."""

from __future__ import annotations

from pathlib import Path

import click
import pandas as pd

from kit import data, distributed, predict, submission, train
from kit.config import Config, competition_names, config_from_dict, load_competition
from kit.hooks import load_hooks
from kit.runs import (
    DOWNLOAD_MARKER,
    filling_folder,
    find_run,
    git_commit,
    list_runs,
    new_run,
    raw_dir,
    read_json,
    utc_stamp,
)


def download(config: Config) -> bool:
    """Fill data/raw/<name> (once): from hooks.download when the competition has one, else from Kaggle."""
    target = raw_dir(config)
    hooks = load_hooks(config)
    if "download" in hooks:
        if (target / DOWNLOAD_MARKER).exists():
            return False
        with filling_folder(target) as partial:
            hooks["download"](partial)
        return True
    if not config.competition.kaggle:
        raise click.ClickException(f"{config.path}: set competition.kaggle (the Kaggle slug) or add a download hook")
    from kit import kaggle

    return kaggle.download_competition(config.competition.kaggle, target)


def folds(config: Config) -> pd.DataFrame:
    labels = data.load_labels(config)
    assigned = data.load_folds(config, labels)
    return pd.crosstab(pd.Series([labels.classes[t] for t in labels.targets], name="class"), pd.Series(assigned, name="fold"))


def train_run(config: Config, fold: str) -> Path:
    """A new run folder, then training. Under torchrun: one process per GPU, rank 0 makes the folder and prints."""
    train.fold_numbers_of(config, fold)  # a bad --fold or label table is refused before a run folder is made
    data.load_labels(config)
    distributed.setup()
    main = distributed.is_main()
    run_dir = distributed.broadcast_object(new_run(config) if main else None)
    if main:
        click.echo(f"run {run_dir.relative_to(run_dir.parents[2])}")
    if config.train.lr_find:
        if distributed.world_size() == 1:
            find_learning_rate(config, 0, run_dir)
        elif main:
            click.echo("train.lr_find: skipped with several processes; run `make lr-find` on one GPU")
    summary = train.train(config, fold, run_dir)
    if main:
        click.echo(f"CV {summary['metric']}: {summary['cv']:.4f} (folds {summary['folds_trained']})")
    distributed.teardown()
    return run_dir


def resume_run(config: Config, run: str | None) -> Path:
    """Continue an interrupted run (default: the newest) with its own config, from its last completed epoch."""
    distributed.setup()
    plan = None
    if distributed.is_main():  # rank 0 chooses the run and reads its folder; the other ranks are told
        if run is None:
            unfinished = [p for p in list_runs(config) if not (p / "metrics.json").exists() and (p / "plan.json").exists()]
            if not unfinished:
                raise click.ClickException(f"no interrupted run of {config.name} to resume; start one with `make train`")
            run_dir = unfinished[-1]
        else:
            run_dir = find_run(config, run)
        click.echo(f"resuming run {run_dir.name}")
        plan = (run_dir, run_config(run_dir), read_json(run_dir / "plan.json")["fold"])
    run_dir, saved_config, fold = distributed.broadcast_object(plan)
    summary = train.train(saved_config, fold, run_dir)
    if distributed.is_main():
        click.echo(f"CV {summary['metric']}: {summary['cv']:.4f} (folds {summary['folds_trained']})")
    distributed.teardown()
    return run_dir


def find_learning_rate(config: Config, stage: int, run_dir: Path | None = None, run: str | None = None) -> dict:
    """The LR finder at a stage; with `run`, starting from that run's fold-0 weights, and writing there."""
    from kit.lr_find import lr_find

    if not 0 <= stage < len(config.stages):
        raise click.ClickException(f"--stage {stage}: {config.path} has stages 0..{len(config.stages) - 1}")
    weights = None
    if run is not None:
        run_dir = find_run(config, run)
        weights = run_dir / "fold-0" / "last.pt"
        if not weights.is_file():
            raise click.ClickException(f"--run {run}: {weights} not found (fold 0 not trained to the end); pick a finished run")
    run_dir = run_dir or new_run(config)
    result = lr_find(config, stage, run_dir, weights)
    click.echo(
        f"LR finder, stage {stage} ({result['stage']}): suggested lr {result['suggestion']:.3g}: {result['reason']}; "
        f"plot in {run_dir / f'lr-find-stage{stage}.png'}"
    )
    return result


def run_config(run_dir: Path) -> Config:
    """The config a run was trained with (its saved copy), so prediction matches training."""
    saved = read_json(run_dir / "config.json")
    return config_from_dict(saved, Path(saved["path"]))


def predict_run(config: Config, run: str | None) -> Path:
    run_dir = find_run(config, run)
    if "ensemble" in read_json(run_dir / "metrics.json"):  # a blend has no weights: its submission is made
        path = submission.SUBMISSIONS_DIR / read_json(run_dir / "submission.json")["file"]
        click.echo(f"submission {path.name} from ensemble run {run_dir.name}")
        return path
    path = predict.predict_run(run_config(run_dir), run_dir)
    click.echo(f"submission {path.relative_to(path.parents[1])} from run {run_dir.name}")
    return path


def submit(config: Config, run: str | None, message: str, dry_run: bool) -> dict:
    """Train and predict if needed, check the file, then upload it (or score it locally) and record it.

    Nothing is uploaded unless the file passes submission.check; the ledger row is written only once the
    upload (or local score, or dry run) has succeeded.
    """
    from kit import kaggle

    hooks = load_hooks(config)
    if "score" not in hooks and not dry_run:
        if not config.competition.kaggle:
            raise click.ClickException(f"{config.path}: set competition.kaggle (the Kaggle slug) to upload, or use --dry-run")
        kaggle.authenticated_api()  # missing credentials stop here, before any training
    if run is None and not [p for p in list_runs(config) if (p / "metrics.json").exists()]:
        click.echo(f"no trained run of {config.name}: training one first")
        train_run(config, "0")
    run_dir = find_run(config, run)
    summary = read_json(run_dir / "metrics.json")
    if not (run_dir / "submission.json").exists() or not (submission.SUBMISSIONS_DIR / read_json(run_dir / "submission.json")["file"]).exists():
        predict.predict_run(run_config(run_dir), run_dir)
    path = submission.SUBMISSIONS_DIR / read_json(run_dir / "submission.json")["file"]
    # Labels stay text ('007' is not 7); probabilities are read as numbers so that NaN is seen.
    frame = data.parse_csv(
        path, f"delete it, and `kit submit {config.name}` predicts it again",
        dtype=str if config.submission.format == "label" else {config.submission.id_column: str},
    )
    sample = submission.read_sample(config)
    submission.check(config, frame, sample, str(path), summary["classes"])
    frame = submission.clip(config, frame)
    commit = read_json(run_dir / "provenance.json").get("commit", git_commit())
    text = f"{message + ' | ' if message else ''}CV {summary['metric']} {summary['cv']:.4f} | run {run_dir.name} | commit {commit}"
    row = {"time_utc": utc_stamp(), "competition": config.name, "file": path.name, "run": run_dir.name,
           "commit": commit, "metric": summary["metric"], "cv": f"{summary['cv']:.6f}", "message": text}
    if "score" in hooks:
        scores = hooks["score"](frame, raw_dir(config))
        row.update(status="scored locally", public_score=f"{next(iter(scores.values())):.6f}")
        click.echo("local leaderboard: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))
    elif dry_run:
        row.update(status="dry run (not uploaded)")
    else:
        import tempfile

        # The clipped copy keeps the file's name: Kaggle lists it, and `kit ledger` matches on it.
        with tempfile.TemporaryDirectory(prefix=".upload-", dir=path.parent) as folder:
            upload = Path(folder) / path.name
            frame.to_csv(upload, index=False)
            kaggle.submit(config.competition.kaggle, upload, text)
        row.update(status="uploaded")
    submission.append_ledger(row)
    click.echo(f"{row['status']}: {path.name} ({text})")
    return row


def ledger(config: Config) -> pd.DataFrame:
    """Every submission of the competition, CV next to leaderboard; public scores refreshed from Kaggle first."""
    from datetime import datetime

    table = submission.read_ledger()
    strangers = []
    if config.competition.kaggle and "score" not in load_hooks(config):
        from kit import kaggle

        try:
            remote = kaggle.list_submissions(config.competition.kaggle)
        except click.ClickException as error:  # the local ledger is still worth showing
            click.echo(f"scores not refreshed: {error.message}", err=True)
        else:
            table, strangers = submission.merge_kaggle_scores(table, remote, config.name)
            submission.write_ledger(table)
    columns = ["time_utc", "file", "run", "metric", "cv", "public_score", "private_score", "status"]
    shown = table.loc[table["competition"] == config.name, columns]
    outside = pd.DataFrame(
        [{"time_utc": datetime.fromisoformat(entry["date"]).strftime("%Y%m%d-%H%M%S") if entry["date"] else "",
          "file": entry["file_name"] or "", "run": "", "metric": config.competition.metric, "cv": "",
          "public_score": entry["public_score"] or "", "private_score": entry["private_score"] or "",
          "status": f"{entry['status'] or 'unknown'} (not in ledger)"} for entry in strangers],
        columns=columns,
    )
    return pd.concat([shown, outside], ignore_index=True).sort_values("time_utc", kind="stable").reset_index(drop=True)


def new_competition(name: str, slug: str, metric: str | None, from_raw: bool) -> Path:
    """Fork: download SLUG into data/raw/NAME (once), infer its layout, write competitions/NAME/competition.toml."""
    import tomllib

    from kit import config as configuration
    from kit import kaggle, metrics, runs, scaffold

    # Module attributes read at call time (not imported names), so a test's temporary tree is honoured.
    target = configuration.COMPETITIONS_DIR / name / "competition.toml"
    scaffold.check_name(name, target)
    if metric is not None and metric not in metrics.METRICS:
        raise click.ClickException(f"--metric {metric!r}: choose one of {', '.join(metrics.METRICS)}")
    target_raw = runs.DATA_DIR / "raw" / name
    marker = target_raw / runs.DOWNLOAD_MARKER
    if from_raw:
        if not target_raw.is_dir() or not any(target_raw.iterdir()):
            raise click.ClickException(f"--from-raw: {target_raw} is empty; put the competition's files there first")
    elif marker.is_file():
        slug = slug or marker.read_text().strip()
        click.echo(f"{target_raw} is already downloaded: inspecting it")
    else:
        if not slug:
            raise click.ClickException("kit new NAME needs --kaggle SLUG (from the competition's URL), or --from-raw")
        if target_raw.is_dir() and any(target_raw.iterdir()):
            raise click.ClickException(f"{target_raw} holds files but no finished download: add --from-raw to use them, or move it away")
        kaggle.download_competition(slug, target_raw)
    layout = scaffold.inspect(target_raw)
    metric = metric or scaffold.default_metric(layout.submission["format"])
    text = scaffold.render(name, slug or "", layout, metric)
    config_from_dict(tomllib.loads(text), target)  # what is written must load: check first
    scaffold.write_new(target, text)
    click.echo(scaffold.report(layout, metric, target))
    return target


def list_competitions() -> list[dict]:
    """Each competition with its slug and how far it has got (downloaded, runs, best CV)."""
    rows = []
    for name in competition_names():
        try:
            config = load_competition(name)
        except click.ClickException as error:
            rows.append({"competition": name, "kaggle": "", "status": f"config error: {error.message}"})
            continue
        runs = [p for p in list_runs(config) if (p / "metrics.json").exists()]
        scores = [read_json(p / "metrics.json")["cv"] for p in runs]
        downloaded = raw_dir(config).is_dir() and any(raw_dir(config).iterdir())
        status = "downloaded" if downloaded else "not downloaded"
        if runs:
            status += f", {len(runs)} runs, last CV {config.competition.metric} {scores[-1]:.4f}"
        rows.append({"competition": name, "kaggle": config.competition.kaggle or "(local)", "status": status})
    return rows

