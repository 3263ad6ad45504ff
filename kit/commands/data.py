"""The commands before training: download (or mark hand-filled data), files, leaderboard, folds,
duplicates, config, new (a fork) and list."""

from __future__ import annotations

import typing
from pathlib import Path

import click
import pandas as pd
import tomllib

from kit import paths
from kit.commands.common import kaggle_slug, notice
from kit.competitions import competition_names, resolve_name
from kit.config import Config, MetricName
from kit.config_build import config_from_dict, load_config
from kit.config_sources import value_sources
from kit.data import duplicates as near_duplicates
from kit.data.labels import load_labels, load_test
from kit.errors import KitError
from kit.files import (
    DOWNLOAD_MARKER,
    HAND_FILLED,
    filling_folder,
    human_size,
    mark_hand_filled,
    marked_slug,
    raw_state,
    read_json,
)
from kit.hooks import load_hooks
from kit.kaggle import client as kaggle
from kit.kaggle import download as kaggle_download
from kit.kaggle import kernels, raw_layout, scaffold
from kit.run import Run
from kit.run_folder import (
    finished_runs,
)


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
        path = kaggle_download.download_file(config.competition.kaggle, file, target, notice)
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
        fetched = kaggle_download.download_competition(config.competition.kaggle, target, notice)
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


def files(config: Config) -> None:
    """`kit files`: the competition's files on Kaggle and their sizes."""
    listed = kaggle.list_files(kaggle_slug(config), notice)
    width = max((len(item.name) for item in listed), default=4)
    for item in listed:
        click.echo(f"{item.name:<{width}}  {human_size(item.size):>10}")
    total = sum(item.size for item in listed)
    click.echo(f"{len(listed)} files, {human_size(total)}")


def leaderboard(config: Config, top: int) -> None:
    """`kit leaderboard`: the top of the public leaderboard and your team's position."""
    standing = kaggle.leaderboard(kaggle_slug(config), top, notice)
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
        kaggle_download.download_competition(slug, target_raw, notice)
    layout = raw_layout.inspect(target_raw)
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
