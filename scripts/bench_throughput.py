"""Benchmark: how close the kit's training and prediction come to the device's ceiling, in one run.

Same model, image size and batch throughout, on a temporary ImageFolder of synthetic ~500x375 JPEGs:
  (a) ceiling: training steps on synthetic uint8 batches already on the device
  (b) the kit end to end: decode-once cache -> kit.data.loader (augmented, this rank's shard)
      -> kit.train.stage.train_step
  (c) the kit's loader alone (batches copied to the device, no step)
  (d) the same steps fed by a plain torchvision ImageFolder + Pillow DataLoader (decode every epoch)
and, for prediction: the inference ceiling, kit.predict.inference from the cache, and the same with TTA.
Prints img/s for each, b/a and b/d, and the device.

    .venv/bin/python scripts/bench_throughput.py                       # CPU-sized defaults
    .venv/bin/python scripts/bench_throughput.py --model resnet50 --image-size 224 --batch-size 256 \\
        --images 20000 [--compile]                                     # a GPU
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from itertools import islice
from pathlib import Path

import click
import numpy as np
import torch
from PIL import Image

from kit import device, models
from kit.config_build import config_from_dict
from kit.data import augment, loader
from kit.data.images import image_cache
from kit.tasks import SINGLE_LABEL
from kit.train import stage
from kit.train.views import view_probabilities

CLASSES = 10


def write_jpegs(folder: Path, count: int, width: int, height: int) -> list[Path]:
    """An ImageFolder (class-K/N.jpg) of smooth random pictures with a little noise, JPEG quality 90."""

    def one(index: int) -> Path:
        generator = np.random.default_rng(index)
        coarse = Image.fromarray(generator.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize(
            (width, height), Image.Resampling.BICUBIC
        )
        noisy = np.asarray(coarse, dtype=np.int16) + generator.integers(-12, 13, (height, width, 3))
        path = folder / f"class-{index % CLASSES}" / f"{index}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(path, quality=90)
        return path

    with ThreadPoolExecutor() as pool:
        return list(pool.map(one, range(count)))


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed_steps(batches: Iterable, work: Callable, steps: int) -> Callable[[], int]:
    """A measurement: `work` on the next `steps` batches of a stream; returns the number of images."""
    stream = iter(batches)

    def run() -> int:
        seen = 0
        for inputs, labels in islice(stream, steps):
            work(inputs, labels)
            seen += len(labels)
        return seen

    return run


def best_rates(measurements: dict[str, Callable[[], int]], warmup: int, repeats: int) -> dict[str, float]:
    """Images per second of each measurement: the best of `repeats` timed rounds after `warmup` untimed ones.

    Rounds take every measurement in turn, so a busy spell on a shared machine slows one round of each
    rather than every timing of one; untimed rounds start workers and compile.
    """
    best = dict.fromkeys(measurements, 0.0)
    for round_number in range(warmup + repeats):
        for name, run in measurements.items():
            synchronize()
            started = time.perf_counter()
            seen = run()
            synchronize()
            if round_number >= warmup:
                best[name] = max(best[name], seen / (time.perf_counter() - started))
    return best


def forever(batches: Iterable) -> Iterable:
    """Epoch after epoch of a loader (or a list of batches), as training reads it."""
    while True:
        yield from batches


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


@click.command()
@click.option(
    "--model", "model_name", default="resnet18", show_default=True, help="timm model (trained from scratch)."
)
@click.option("--image-size", default=64, show_default=True, help="Training size in pixels (square).")
@click.option("--batch-size", default=64, show_default=True)
@click.option(
    "--images", default=512, show_default=True, help="Synthetic JPEGs written to a temporary ImageFolder."
)
@click.option(
    "--source-size", default=(500, 375), type=(int, int), show_default=True, help="JPEG width and height."
)
@click.option("--steps", default=0, help="Steps per round of a measurement (0: one pass over the images).")
@click.option(
    "--warmup", default=1, show_default=True, help="Untimed rounds first (worker start-up, compilation)."
)
@click.option(
    "--workers", default=-1, show_default=True, help="DataLoader workers for (b)-(d); -1: the kit's rule."
)
@click.option(
    "--repeats", default=3, show_default=True, help="Timed rounds; the best of each measurement is shown."
)
@click.option("--tta", default=2, show_default=True, help="Augmented views added in the TTA measurement.")
@click.option(
    "--compile", "compiled", is_flag=True, help="torch.compile the model (GPU only, as train.compile)."
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the figures here.",
)
def main(
    model_name,
    image_size,
    batch_size,
    images,
    source_size,
    steps,
    warmup,
    workers,
    repeats,
    tta,
    compiled,
    json_path,
) -> None:
    target = device.device()
    config = config_from_dict(
        {
            "train": {
                "model": model_name,
                "pretrained": False,
                "image_size": image_size,
                "batch_size": batch_size,
            },
            "augment": {"preset": "side_on"},
        },
        Path("bench-throughput/competition.toml"),
    )
    workers = loader.worker_count(workers)
    steps = steps or max(1, images // batch_size)
    model = device.place(models.create_model(model_name, CLASSES, pretrained=False))
    compiled = compiled and device.gpu_paths(target)  # as train.compile
    forward = torch.compile(model) if compiled else model
    optimizer = stage.make_optimizer(config, models.parameter_groups(model, [config.train.lr] * 3))
    mean, std = model.pretrained_cfg["mean"], model.pretrained_cfg["std"]

    def stage_data(raw: bool) -> stage.PreparedStage:
        """What kit.train.stage.train_step needs: uint8 images (raw) or already-normalised float batches."""
        return stage.PreparedStage(
            forward,
            optimizer,
            [config.train.lr] * 3,
            None,
            None,
            None,
            image_size,
            batch_size,
            raw,
            torch.Generator(),
        )

    raw_stage, float_stage = stage_data(True), stage_data(False)
    models.train_mode(model)
    with tempfile.TemporaryDirectory(prefix="bench-throughput-") as scratch:
        folder = Path(scratch) / "images"
        started = time.perf_counter()
        paths = write_jpegs(folder, images, *source_size)
        written = time.perf_counter() - started
        started = time.perf_counter()
        cached, _ = image_cache(paths, image_size, Path(scratch) / "cache", "bench")
        cache_rate = images / (time.perf_counter() - started)
        targets = np.array([int(path.parent.name.split("-")[1]) for path in paths], dtype=np.int64)

        # (a) The ceiling: the same step on a batch that is already on the device.
        synthetic = torch.randint(
            0, 256, (batch_size, image_size, image_size, 3), dtype=torch.uint8, device=target
        )
        synthetic_targets = torch.randint(0, CLASSES, (batch_size,), device=target)

        def step(data: stage.PreparedStage) -> Callable:
            def work(inputs, labels):
                models.train_mode(model)
                stage.train_step(data, model, inputs, labels)

            return work

        # (b) The kit: cache -> augmented batches (workers, pinned memory) -> the step; (c) its loader alone.
        dataset = loader.BatchDataset(
            cached, targets, np.arange(images), augment.train_transform(config, image_size)
        )
        kit_batches = lambda: loader.make_loader(
            dataset, batch_size, True, torch.Generator().manual_seed(0), workers
        )
        copy = lambda inputs, labels: (
            inputs.to(target, non_blocking=True),
            labels.to(target, non_blocking=True),
        )

        # (d) What most people write: decode and augment the JPEGs every epoch with torchvision and Pillow.
        from torchvision import datasets, transforms

        pipeline = transforms.Compose(
            [
                transforms.RandomResizedCrop(image_size, scale=(0.35, 1.0)),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                transforms.Normalize(mean, std),
            ]
        )
        plain = torch.utils.data.DataLoader(
            datasets.ImageFolder(folder, pipeline),
            batch_size=batch_size,
            shuffle=True,
            num_workers=workers,
            pin_memory=target.type == "cuda",
            persistent_workers=workers > 0,
            drop_last=True,
        )
        layout = device.memory_format(target)
        float_step = step(float_stage)
        to_device = lambda inputs, labels: float_step(
            inputs.to(target, non_blocking=True).contiguous(memory_format=layout), labels
        )

        # Prediction: the forward pass alone on device batches, then kit.predict.inference from the cache,
        # plain and with TTA.
        inference_batch = batch_size * 2  # as the kit predicts

        @torch.inference_mode()
        def infer(inputs, labels):
            model.eval()
            with device.autocast(target):
                forward(device.to_input(inputs, mean, std, target)).float().softmax(1)

        big = torch.randint(
            0, 256, (inference_batch, image_size, image_size, 3), dtype=torch.uint8, device=target
        )

        def kit_predict(views: int) -> Callable[[], int]:
            def run() -> int:
                view_probabilities(forward, cached, inference_batch, "side_on", views, task=SINGLE_LABEL)
                return images * (1 + views)  # forward passes: one per image and view

            return run

        rates = best_rates(
            {
                "ceiling": timed_steps(forever([(synthetic, synthetic_targets)]), step(raw_stage), steps),
                "kit": timed_steps(forever(kit_batches()), step(raw_stage), steps),
                "loader": timed_steps(forever(kit_batches()), copy, steps),
                "folder": timed_steps(forever(plain), to_device, steps),
                "inference ceiling": timed_steps(
                    forever([(big, big[:, 0, 0, 0])]), infer, max(1, images // inference_batch)
                ),
                "inference": kit_predict(0),
                "tta": kit_predict(tta),
            },
            warmup,
            repeats,
        )

    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    mode = "compiled" if compiled else "eager"
    precision = "bf16 autocast, channels_last" if device.gpu_paths(target) else "float32"
    click.echo(f"{stamp} | {device_name()} | torch {torch.__version__} | {mode}, {precision}")
    click.echo(
        f"{model_name} at {image_size}px, batch {batch_size}, "
        f"{images} JPEGs of {source_size[0]}x{source_size[1]}, "
        f"{workers} loader workers; best of {repeats} rounds of {steps} steps, after {warmup} untimed"
    )
    click.echo(
        f"writing the JPEGs: {written:.1f} s; "
        f"decode-once cache: {cache_rate:,.0f} img/s (once per image size)"
    )
    ceiling, kit, folder_rate, inference = (
        rates["ceiling"],
        rates["kit"],
        rates["folder"],
        rates["inference ceiling"],
    )
    lines = [
        ("train (a) ceiling: synthetic batches on the device", ceiling, "img/s", ""),
        ("train (b) kit end to end from the cache", kit, "img/s", f"b/a = {kit / ceiling:.2f}"),
        ("train (c) kit loader alone", rates["loader"], "img/s", ""),
        ("train (d) ImageFolder + Pillow DataLoader", folder_rate, "img/s", f"b/d = {kit / folder_rate:.2f}"),
        ("inference ceiling: synthetic batches on the device", inference, "img/s", ""),
        (
            "inference: kit.predict from the cache",
            rates["inference"],
            "img/s",
            f"/ ceiling = {rates['inference'] / inference:.2f}",
        ),
        (
            f"TTA: kit.predict, plain + {tta} views",
            rates["tta"],
            "views/s",
            f"/ ceiling = {rates['tta'] / inference:.2f}",
        ),
    ]
    for label, rate, unit, ratio in lines:
        click.echo(f"{label:<52} {rate:10,.0f} {unit:<8} {ratio}".rstrip())
    if json_path is not None:  # for scripts/gpu_check.sh's summary
        figures = {
            "date": stamp,
            "device": device_name(),
            "torch": torch.__version__,
            "model": model_name,
            "image_size": image_size,
            "batch_size": batch_size,
            "mode": mode,
            "precision": precision,
            "images_per_second": rates,
            "train_over_ceiling": kit / ceiling,
            "inference_over_ceiling": rates["inference"] / inference,
            "tta_over_ceiling": rates["tta"] / inference,
        }
        json_path.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
