"""Benchmark: how long `kit --help` and `kit list` take to start, this tree against an older commit.

The baseline (default 65f01bd, the last commit before kit/ was split into subpackages, when every command
imported torch) is checked out with `git worktree add` into a temporary folder and run from there with
PYTHONPATH pointing at it; this tree runs the same way. Each tree gets its own temporary project (a copy of
its competitions/, no data, no runs: KIT_PROJECT_ROOT), so only start-up and the command itself are timed.
Runs alternate between the two trees, so a busy machine slows both alike. Prints the median wall and CPU
seconds (user + system, of the child process) per command and tree, the ratio, and the machine.

    .venv/bin/python scripts/bench_startup.py [--baseline 65f01bd] [--repeats 5]
"""

from __future__ import annotations

import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import click

REPO = Path(__file__).resolve().parent.parent
COMMANDS = [["--help"], ["list"]]


def timed(tree: Path, project: Path, arguments: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one `python -m kit ARGUMENTS` run from `tree`."""
    environment = {**os.environ, "PYTHONPATH": str(tree), "KIT_PROJECT_ROOT": str(project)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    finished = subprocess.run(
        [sys.executable, "-m", "kit", *arguments],
        env=environment,
        cwd=project,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if finished.returncode != 0:
        raise click.ClickException(f"kit {' '.join(arguments)} from {tree} failed:\n{finished.stderr}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def project_for(tree: Path, folder: Path) -> Path:
    shutil.copytree(
        tree / "competitions", folder / "competitions", ignore=shutil.ignore_patterns("__pycache__")
    )
    return folder


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        names = [
            line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")
        ]
        cpu = names[0].split(":", 1)[1].strip() if names else cpu
    except OSError:
        pass
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    return (
        f"{platform.node()} | {cpu} | {os.cpu_count()} cores (load {load}) "
        f"| Python {platform.python_version()} | torch {metadata.version('torch')}"
    )


@click.command()
@click.option("--baseline", default="65f01bd", show_default=True, help="The commit to compare against.")
@click.option("--repeats", default=5, show_default=True, help="Runs per command and tree (median shown).")
def main(baseline: str, repeats: int) -> None:
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as folder:
        old_tree = Path(folder) / "baseline"
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "add", "--detach", "--quiet", str(old_tree), baseline],
            check=True,
        )
        try:
            trees = {
                f"baseline {baseline}": (old_tree, project_for(old_tree, Path(folder) / "old-project")),
                f"this tree ({commit})": (REPO, project_for(REPO, Path(folder) / "new-project")),
            }
            times = {(label, " ".join(a)): [] for label in trees for a in COMMANDS}
            for tree, project in trees.values():  # once untimed: .pyc files written, disk cache warm
                for arguments in COMMANDS:
                    timed(tree, project, arguments)
            for _ in range(repeats):
                for arguments in COMMANDS:
                    for label, (tree, project) in trees.items():
                        times[label, " ".join(arguments)].append(timed(tree, project, arguments))
        finally:
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "remove", "--force", str(old_tree)], check=True
            )

    click.echo(f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC | {machine()}")
    click.echo(f"median of {repeats} runs each, seconds (wall / CPU = user + system of the process)")
    (old_label, new_label) = trees
    for arguments in COMMANDS:
        command = " ".join(arguments)
        old = [statistics.median(values) for values in zip(*times[old_label, command], strict=True)]
        new = [statistics.median(values) for values in zip(*times[new_label, command], strict=True)]
        click.echo(
            f"kit {command:<7} {old_label}: {old[0]:.2f} / {old[1]:.2f}   "
            f"{new_label}: {new[0]:.2f} / {new[1]:.2f}   "
            f"-> {old[0] / new[0]:.1f}x faster (wall), {old[1] / new[1]:.1f}x less CPU"
        )


if __name__ == "__main__":
    main()
