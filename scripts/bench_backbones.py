"""The backbone ladder's cost: parameters and seconds per training step of each offline backbone, with the
body frozen (the quick recipe's head-augmented stage) and trained (the unfrozen stage), measured in one
run, interleaved, on the same random batch; the ratio of the two is what an unfrozen epoch costs against a
frozen-body one (kit.commands.training.UNFROZEN_EPOCH_COST).

    .venv/bin/python scripts/bench_backbones.py                        # lite0-2 at 224 px, batch 32
    .venv/bin/python scripts/bench_backbones.py --steps 2 --repeats 2  # shorter, for a loaded CPU

Steps are timed as the training loop runs them: train mode (frozen BatchNorm layers kept in eval), AdamW
over the parameters that train, cross-entropy on two classes. Per image at prediction: a forward pass at
the prediction size (256 px after 224) in inference mode. Each figure is the best of --repeats rounds of
--steps steps, after one untimed step.
"""

from __future__ import annotations

import os
import platform
import time
from datetime import UTC, datetime

import click
import torch

from kit import models

LADDER = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


def step_seconds(
    model: torch.nn.Module, frozen: bool, batch: torch.Tensor, steps: int, repeats: int
) -> tuple[float, float]:
    """(wall, CPU) seconds per training step with the body frozen (head only) or trained, the round with
    the least CPU time of `repeats`. CPU seconds (this process's user + system) hardly change with other
    work on a shared machine; wall seconds do."""
    models.freeze_to(model, -1 if frozen else 0)
    models.train_mode(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    targets = torch.zeros(len(batch), dtype=torch.long)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(batch), targets).backward()
        optimizer.step()

    step()  # untimed: allocations, first-call overheads
    best = (float("inf"), float("inf"))
    for _ in range(repeats):
        started, cpu_started = time.perf_counter(), time.process_time()
        for _ in range(steps):
            step()
        took = ((time.perf_counter() - started) / steps, (time.process_time() - cpu_started) / steps)
        best = min(best, took, key=lambda pair: pair[1])
    return best


def inference_seconds(model: torch.nn.Module, batch: torch.Tensor, repeats: int) -> float:
    """Best-of-repeats CPU seconds per image of a forward pass in inference mode."""
    model.eval()
    with torch.inference_mode():
        model(batch)
        best = float("inf")
        for _ in range(repeats):
            started = time.process_time()
            model(batch)
            best = min(best, (time.process_time() - started) / len(batch))
    return best


@click.command()
@click.option("--image-size", default=224, show_default=True, help="Training size (pixels).")
@click.option("--predict-size", default=256, show_default=True, help="Prediction size (pixels).")
@click.option("--batch-size", default=32, show_default=True)
@click.option("--steps", default=3, show_default=True, help="Timed steps per round.")
@click.option("--repeats", default=3, show_default=True, help="Rounds; the best is kept.")
@click.option("--models", "names", default=",".join(LADDER), show_default=True)
def main(image_size, predict_size, batch_size, steps, repeats, names) -> None:
    torch.manual_seed(0)
    batch = torch.randn(batch_size, 3, image_size, image_size)
    views = torch.randn(batch_size, 3, predict_size, predict_size)
    load = os.getloadavg()
    click.echo(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M UTC} | CPU {platform.machine()}, {os.cpu_count()} cores, "
        f"{torch.get_num_threads()} torch threads (load {load[0]:.1f}, {load[1]:.1f}, {load[2]:.1f}) | "
        f"torch {torch.__version__}"
    )
    click.echo(
        f"train at {image_size} px, batch {batch_size}, best of {repeats} rounds of {steps} steps; "
        f"inference at {predict_size} px"
    )
    click.echo("seconds per step: wall / CPU (this process's user + system); the ratio is of CPU seconds")
    click.echo(
        f"{'model':<20}{'params (M)':>11}{'frozen s/step':>16}{'unfrozen s/step':>18}{'unfrozen/frozen':>17}"
        f"{'predict CPU ms/img':>20}"
    )
    for name in names.split(","):
        model = models.create_model(name, 2, pretrained=True)
        parameters = sum(p.numel() for p in model.parameters()) / 1e6
        frozen = step_seconds(model, True, batch, steps, repeats)
        unfrozen = step_seconds(model, False, batch, steps, repeats)
        predict = inference_seconds(model, views, repeats)
        click.echo(
            f"{name:<20}{parameters:>11.2f}{frozen[0]:>8.2f} /{frozen[1]:>6.2f}"
            f"{unfrozen[0]:>10.2f} /{unfrozen[1]:>6.2f}{unfrozen[1] / frozen[1]:>17.2f}"
            f"{predict * 1000:>20.1f}"
        )


if __name__ == "__main__":
    main()
