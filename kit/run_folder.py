"""Run folders: runs/<name>/<run-id>/ made once with a unique name, found again by id, and the config a
run was trained with read back, so that prediction, reports and ensembles see what training saw.
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

from kit import paths
from kit.config import Config
from kit.config_build import config_from_dict
from kit.config_overrides import with_overrides
from kit.config_sources import flatten
from kit.errors import KitError
from kit.files import git_commit, make_folder, not_writable, read_json, utc_stamp, write_json
from kit.run import Run, Summary


def new_run_dir(config: Config, kind: str, device: str = "cpu") -> Path:
    """Create runs/<name>/<time>-<kind>[-N]/ and record the resolved config and provenance in it.

    `kind` is the model name for a trained run, "ensemble" for a blend; `device` names where it runs.
    """
    base = make_folder(paths.runs_dir(config.name))
    run_id = f"{utc_stamp()}-{kind}"
    run_dir, suffix = base / run_id, 1
    while True:  # mkdir itself claims the name: two commands started in the same second get -1 and -2
        try:
            run_dir.mkdir()
            break
        except FileExistsError:
            suffix += 1
            run_dir = base / f"{run_id}-{suffix}"
        except PermissionError:
            raise not_writable(base, f"making the run folder {run_dir.name}") from None
    with removed_unless_trained(run_dir):  # a full disk here leaves no half-made run
        _record(run_dir, config, device)
    return run_dir


def _record(run_dir: Path, config: Config, device: str) -> None:
    write_json(Run(run_dir).config_file, config.to_dict())
    write_json(
        Run(run_dir).provenance_file,
        {
            "commit": git_commit(),
            "command": " ".join(sys.argv),
            "started_utc": utc_stamp(),
            "host": platform.node(),
            "python": platform.python_version(),
            "torch": _version("torch"),
            "device": device,
            "processes": int(
                os.environ.get("WORLD_SIZE", "1")
            ),  # torchrun: one per GPU, each with train.batch_size
        },
    )


def trained_anything(run_dir: Path) -> bool:
    """Whether a run holds a completed epoch (a resume point, weights) or a finished fold."""
    return Run(run_dir).holds_training()


@contextmanager
def removed_unless_trained(run_dir: Path) -> Iterator[Path]:
    """A new run that stops before its first epoch completes (bad data, a setting, out of memory, Ctrl-C)
    has nothing to resume or read: its folder is removed, so `kit runs` and `--resume` never meet it."""
    try:
        yield run_dir
    except BaseException:
        if not trained_anything(run_dir):
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def list_runs(config: Config) -> list[Path]:
    """Runs of a competition, oldest first."""
    base = paths.runs_dir(config.name)
    if not base.exists():
        return []
    return sorted((p for p in base.iterdir() if Run(p).config_file.exists()), key=lambda p: p.name)


def finished_runs(config: Config) -> list[Path]:
    """Runs with metrics.json (training or blending completed), oldest first."""
    return [p for p in list_runs(config) if Run(p).summary_file.exists()]


def find_run(config: Config, run: str | None) -> Path:
    """A run folder by id (or unique prefix); None: the newest run with metrics."""
    runs = list_runs(config)
    if run is None:
        finished = finished_runs(config)
        if not finished:
            raise KitError(f"no finished run of {config.name}: run `make train COMP={config.name}`")
        return finished[-1]
    matches = [p for p in runs if p.name == run] or [p for p in runs if p.name.startswith(run)]
    if len(matches) != 1:
        known = ", ".join(p.name for p in runs[-5:]) or "(none)"
        raise KitError(f"run '{run}' of {config.name} not found or ambiguous; recent: {known}")
    return matches[0]


def best_run(config: Config, higher_is_better: bool) -> tuple[Path, str]:
    """The finished run or blend with the best CV of the competition's metric (the newest among equals),
    and one line saying which and why; runs without a CV in that metric are left out."""
    scored = []
    for run_dir in finished_runs(config):
        summary = Run(run_dir).summary()  # another kit's layout: one line, retrain it
        if summary.metric == config.competition.metric and isinstance(summary.cv, int | float):
            scored.append((run_dir, float(summary.cv), summary.folds_trained))
    if not scored:
        return find_run(config, None), f"no finished run has a CV in {config.competition.metric}: the newest"
    best = 0
    for index, (_, cv, _) in enumerate(scored):
        if (cv >= scored[best][1]) if higher_is_better else (cv <= scored[best][1]):  # ties: the newer
            best = index
    run_dir, cv, folds = scored[best]
    newest = scored[-1]
    why = f"{run_dir.name}: the best CV {config.competition.metric} {cv:.4f} of {len(scored)} finished runs"
    if newest[0] != run_dir:
        why += f" (the newest, {newest[0].name}, {newest[1]:.4f})"
    if len({str(item[2]) for item in scored}) > 1:
        why += f"; its CV is on folds {folds}, and runs on other folds are compared as they are"
    return run_dir, why + "; --run RUN picks another"


def run_config(run_dir: Path, overrides: Sequence[str] = ()) -> Config:
    """The config a run was trained with (its saved copy), so prediction matches training; `overrides`
    (`kit predict --set`) change it for this prediction only."""
    path = Run(run_dir).config_file
    saved = read_json(path)
    return config_from_dict(with_overrides(saved, overrides, path), Path(saved["path"]))


def saved_settings_note(config: Config, run_dir: Path, settings: Sequence[str]) -> str:
    """'' unless one of `settings` (an error's keys: kit.errors.KitError.settings) has another value in the
    run's saved config than in the competition.toml now: then where that value came from and the two
    ways to apply the fix."""
    saved, now = flatten(run_config(run_dir).to_dict()), flatten(config.to_dict())
    named = [key for key in settings if key in saved and saved[key] != now.get(key)]
    if not named:
        return ""
    values = ", ".join(f"{key} = {saved[key]!r} (competition.toml now: {now.get(key)!r})" for key in named)
    overrides = " ".join(f"--set {key}={now.get(key)}" for key in named)
    return (
        f"the run {run_dir.name} was trained with {Run(run_dir).config_file}: {values}; to apply the fix, "
        f"retrain (`make train COMP={config.name}`), or predict with "
        f"`kit predict {config.name} {run_dir.name} {overrides}`"
    )


def run_summary(run_dir: Path, command: str) -> Summary:
    """metrics.json of a finished run; an unfinished one is refused in one line naming `command`."""
    path = Run(run_dir).summary_file
    if not path.exists():
        raise KitError(
            f"{run_dir.name} has not finished training (no {path.name}): "
            f"finish it with `make resume RUN={run_dir.name}`"
            f" before `{command}`, or pick a finished run"
        )
    return Run(run_dir).summary()  # another kit's layout: one line, retrain it
