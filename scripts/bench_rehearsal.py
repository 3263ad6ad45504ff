"""Benchmark: a run's test prediction at home against the `kit notebook --local` rehearsal of it.

Both arms run the code the Kaggle notebook runs (kit.kaggle.package.predict_in_notebook: the package
unpacked, the test images decoded once, the forward passes) on the same package and inputs, from a fresh
scratch folder each time (no cache carried over):
- home: in this process, on every core and device here;
- rehearsal: kit.kaggle.rehearsal.rehearse, a fresh Jupyter kernel with the network off, held to Kaggle's
  2 cores, the kit installed from the packaged wheel.
The arms alternate, best of --repeats. Prints images/s of decoding and of the forward passes for each, their
ratio, the rehearsal's fixed cost (kernel, install, imports) and the machine.

    KIT_PROJECT_ROOT=/tmp/proj .venv/bin/python scripts/bench_rehearsal.py digits --repeats 2
"""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
from pathlib import Path

import click


@click.command()
@click.argument("competition")
@click.option("--run", default=None, help="Run id (default: the newest finished run).")
@click.option("--repeats", default=2, show_default=True)
@click.option("--gpu/--no-gpu", default=False, show_default=True, help="Let the rehearsal's kernel see GPUs.")
def main(competition: str, run: str | None, repeats: int, gpu: bool) -> None:
    from kit.competitions import load_competition
    from kit.files import read_json
    from kit.kaggle import package, rehearsal
    from kit.run_folder import find_run, run_summary

    config = load_competition(competition)
    run_dir = find_run(config, run)
    summary = run_summary(run_dir, "bench_rehearsal")
    slug = config.competition.kaggle or config.name
    dataset_id = f"{rehearsal.LOCAL_OWNER}/{package.dataset_slug(config.name)}"
    inputs = run_dir / "kaggle" / "local" / "input"
    home, rehearsed = [], []
    for _ in range(repeats):
        record = rehearsal.rehearse(config, run_dir, summary, slug, gpu)  # lays out `inputs` too
        rehearsed.append(record)
        with tempfile.TemporaryDirectory(prefix="bench-rehearsal-") as scratch:
            working = Path(scratch) / "working"
            saved_root = os.environ.get("KIT_PROJECT_ROOT")
            package.predict_in_notebook(
                str(inputs), dataset_id, slug, str(working), str(Path(scratch) / "tmp")
            )
            if saved_root is not None:
                os.environ["KIT_PROJECT_ROOT"] = saved_root
            home.append(read_json(working / package.TIMINGS_FILE))
            shutil.rmtree(working)

    def best(records: list[dict], phase: str) -> float:
        return min(record["seconds"][phase] for record in records)

    kernel_phases = [record["phases"] for record in rehearsed]
    images = home[0]["images"]
    passes = home[0]["forward_passes"]
    click.echo(
        f"{competition} run {run_dir.name}: {images} test images, {home[0]['weight_files']} weight files x "
        f"{home[0]['views']} views = {passes} forward passes ({home[0]['device']}, {home[0]['precision']})"
    )
    for phase, count, unit in (("decode", images, "images/s"), ("predict", passes, "forward passes/s")):
        at_home, in_kernel = count / best(home, phase), count / best(kernel_phases, phase)
        click.echo(
            f"  {phase:8s} home {at_home:8.1f} {unit} ({home[0]['cores']} cores), rehearsal {in_kernel:8.1f} "
            f"({kernel_phases[0]['cores']} cores): rehearsal / home {in_kernel / at_home:.2f}x"
        )
    fixed = min(record["budget"]["fixed_seconds"] for record in rehearsed)
    click.echo(f"  rehearsal's fixed cost (kernel start, install, imports): {fixed:.1f} s")
    click.echo(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
