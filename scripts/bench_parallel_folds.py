"""Benchmark: `kit train digits --fold all` with the folds one after the other, against `--parallel folds`
under torchrun with 2 processes (CPU, gloo), on this machine.

The same recipe, seed and threads in all (the sequential run gets every thread, each parallel process its
share), in a temporary project with its own download of digits; the photo caches and folds.csv are built
before either arm, so both time training alone. Prints the wall time and the CPU time (user + system of
every process, torchrun's workers included) of each, their ratios, and the machine. The folds in turn
run twice: with every thread, and with one.

    .venv/bin/python scripts/bench_parallel_folds.py                  # 4 folds, 3 tiny epochs, 32 px
    .venv/bin/python scripts/bench_parallel_folds.py --folds 2 --epochs 1   # quicker
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

REPO = Path(__file__).resolve().parent.parent


def settings(folds: int, epochs: int, image_size: int, model: str) -> list[str]:
    """A small plain recipe (one stage, no LR finder, no TTA): the folds' training is what is timed."""
    values = [
        f"train.model={model}",
        "train.pretrained=false",
        f"train.image_size={image_size}",
        "train.batch_size=64",
        f"train.epochs={epochs}",
        "train.lr=3e-3",
        "stages=[{}]",
        "train.lr_find=false",
        "train.stop_when_worse=false",
        f"train.folds={folds}",
        "predict.tta=0",
    ]
    return [part for value in values for part in ("--set", value)]


def timed(command: list[str], environment: dict) -> dict:
    """Wall seconds and CPU seconds (user + system of the command and every process it waited for)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    finished = subprocess.run(command, env=environment, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if finished.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{finished.stdout}\n{finished.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    cv = [line for line in finished.stdout.splitlines() if line.startswith("CV ")]
    return {"wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1), "cv_line": cv[0] if cv else ""}


def warm_caches(folds: int, image_size: int, model: str) -> None:
    """folds.csv and the photo caches both arms read (run in a child: the project root is its own)."""
    from kit.competitions import load_competition
    from kit.data.folds import load_folds
    from kit.data.images import cache_side
    from kit.data.labels import load_labels
    from kit.train.stage import training_images
    from kit.train.views import prediction_cache_side

    overrides = settings(folds, 1, image_size, model)[1::2]
    config = load_competition("digits", overrides)
    labels = load_labels(config)
    load_folds(config, labels)
    for side in {cache_side(config.train.image_size), prediction_cache_side(config)}:
        training_images(config, labels, side)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@click.command()
@click.option("--folds", default=4, show_default=True, help="Folds trained by each arm.")
@click.option("--epochs", default=3, show_default=True, help="Epochs per fold.")
@click.option("--image-size", default=32, show_default=True, help="Training size in pixels.")
@click.option("--model", default="test_efficientnet", show_default=True, help="timm model (random weights).")
@click.option("--processes", default=2, show_default=True, help="torchrun processes in the parallel arm.")
@click.option(
    "--threads", default=2, show_default=True, help="Threads in all: each parallel process a share."
)
@click.option("--warm", is_flag=True, hidden=True, help="Internal: build the caches, in the child.")
def main(
    folds: int, epochs: int, image_size: int, model: str, processes: int, threads: int, warm: bool
) -> None:
    if warm:
        warm_caches(folds, image_size, model)
        return
    project = Path(tempfile.mkdtemp(prefix="bench-parallel-folds-"))
    try:
        shutil.copytree(REPO / "competitions", project / "competitions")
        environment = {**os.environ, "KIT_PROJECT_ROOT": str(project)}
        for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
            environment.pop(name, None)
        subprocess.run([sys.executable, "-m", "kit", "download", "digits"], env=environment, check=True)
        subprocess.run(
            [
                sys.executable,
                __file__,
                "--warm",
                "--folds",
                str(folds),
                "--image-size",
                str(image_size),
                "--model",
                model,
            ],
            env=environment,
            check=True,
        )
        arguments = ["train", "digits", "--fold", "all", *settings(folds, epochs, image_size, model)]
        sequential = timed(
            [sys.executable, "-m", "kit", *arguments], {**environment, "OMP_NUM_THREADS": str(threads)}
        )
        # The folds in turn on one thread too: on a small model a second thread adds little but overhead,
        # so this arm tells the gain of parallel folds from the cost of threads.
        one_thread = timed([sys.executable, "-m", "kit", *arguments], {**environment, "OMP_NUM_THREADS": "1"})
        share = max(threads // processes, 1)
        parallel = timed(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes",
                "1",
                "--nproc-per-node",
                str(processes),
                "--rdzv-backend",
                "c10d",
                "--rdzv-endpoint",
                f"127.0.0.1:{free_port()}",
                "-m",
                "kit",
                *arguments,
                "--parallel",
                "folds",
            ],
            {**environment, "OMP_NUM_THREADS": str(share)},
        )
    finally:
        shutil.rmtree(project, ignore_errors=True)
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}",
        "recipe": f"digits, {model} from scratch, {image_size} px, {epochs} epoch(s) per fold, {folds} folds",
        "sequential": {**sequential, "threads": threads},
        "sequential_one_thread": {**one_thread, "threads": 1},
        "parallel": {**parallel, "processes": processes, "threads_per_process": share},
        "wall_ratio_sequential_over_parallel": round(
            sequential["wall_seconds"] / parallel["wall_seconds"], 2
        ),
        "cpu_ratio_parallel_over_sequential": round(parallel["cpu_seconds"] / sequential["cpu_seconds"], 2),
        "wall_ratio_one_thread_over_parallel": round(
            one_thread["wall_seconds"] / parallel["wall_seconds"], 2
        ),
        "cpu_ratio_parallel_over_one_thread": round(parallel["cpu_seconds"] / one_thread["cpu_seconds"], 2),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
