"""Benchmark: CPU training steps with glibc's default allocator against kit.device.keep_freed_memory.

By default glibc serves every block over 32 MiB with mmap and unmaps it when freed, so each training step
maps a batch's activations again and the kernel zeroes every page on first touch; the kit tells glibc to
keep freed memory instead (kit.device.place does, on a CPU). An allocator setting cannot be undone inside a
process, so each arm runs in its own child process, the two arms alternating, best of --repeats rounds.
Prints seconds per step of each, the ratio, the minor page faults per step and the machine.

    .venv/bin/python scripts/bench_allocator.py                   # efficientnet_lite0, 224 px, batch 64
    .venv/bin/python scripts/bench_allocator.py --image-size 128 --steps 4   # quicker
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime

import click

ARMS = {"default": "glibc as it starts", "keep": "kit.device.keep_freed_memory()"}


def child(arm: str, model_name: str, image_size: int, batch_size: int, steps: int) -> dict:
    """Training steps of `model_name` (random weights: the cost is the same) on random batches."""
    import torch

    from kit import device, models

    if arm == "keep":
        device.keep_freed_memory()
    model = models.create_model(model_name, 2, pretrained=False)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(batch_size, 3, image_size, image_size, generator=generator)
    targets = torch.randint(0, 2, (batch_size,), generator=generator)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)  # as kit.train.stage.train_step: the gradients freed first
        torch.nn.functional.cross_entropy(model(inputs), targets).backward()
        optimizer.step()

    step()  # the first step allocates what later ones reuse (or map again)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    started = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = (time.perf_counter() - started) / steps
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / steps
    return {"seconds_per_step": seconds, "page_faults_per_step": faults, "threads": torch.get_num_threads()}


@click.command()
@click.option("--model", "model_name", default="efficientnet_lite0", show_default=True, help="timm model.")
@click.option("--image-size", default=224, show_default=True)
@click.option("--batch-size", default=64, show_default=True)
@click.option("--steps", default=5, show_default=True, help="Timed training steps per round.")
@click.option("--repeats", default=2, show_default=True, help="Rounds of both arms; the best counts.")
@click.option("--child", "child_arm", type=click.Choice(sorted(ARMS)), default=None, hidden=True)
def main(model_name, image_size, batch_size, steps, repeats, child_arm) -> None:
    if child_arm:
        click.echo(json.dumps(child(child_arm, model_name, image_size, batch_size, steps)))
        return
    if not sys.platform.startswith("linux"):
        raise click.ClickException("glibc's allocator is Linux's: nothing to compare on this system")
    best: dict[str, dict] = {}
    arguments = [f"--model={model_name}", f"--image-size={image_size}", f"--batch-size={batch_size}"]
    for _ in range(repeats):
        for arm in ARMS:
            output = subprocess.run(
                [sys.executable, __file__, *arguments, f"--steps={steps}", f"--child={arm}"],
                check=True, capture_output=True, text=True,
            ).stdout  # fmt: skip
            result = json.loads(output.strip().splitlines()[-1])
            if arm not in best or result["seconds_per_step"] < best[arm]["seconds_per_step"]:
                best[arm] = result
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = f"CPU {platform.machine()}, {os.cpu_count()} cores, {best['keep']['threads']} torch threads"
    click.echo(f"{stamp}; {machine}; {model_name} {image_size} px, batch {batch_size}, best of {repeats}")
    for arm, label in ARMS.items():
        click.echo(
            f"{arm:<8}{best[arm]['seconds_per_step']:>8.2f} s/step{best[arm]['page_faults_per_step']:>10.0f} "
            f"page faults/step  ({label})"
        )
    ratio = best["keep"]["seconds_per_step"] / best["default"]["seconds_per_step"]
    click.echo(f"keep / default: {ratio:.2f}x the time per step")


if __name__ == "__main__":
    main()
