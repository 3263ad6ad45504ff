"""Benchmark: the kit's Pillow decoder against kit.data.gpu_decode's batched decode_jpeg path, on a folder of
JPEGs: pixel differences per image (mean and largest absolute difference, levels of 255) and images/s.

On a machine without a GPU the second path is its CPU twin (torchvision's libjpeg-turbo decoder and the
same resize); with one, `--device cuda` runs nvjpeg. Both arms decode the same files into squares of
--side pixels; Pillow uses one thread per usable core, as the cache build does.

    .venv/bin/python scripts/bench_gpu_decode.py ../shared/data/cats-vs-dogs-dev/test --images 40
    .venv/bin/python scripts/bench_gpu_decode.py DIR --device cuda --images 2000   # on a GPU machine
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click
import numpy as np


@click.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--images", default=40, show_default=True, help="JPEGs taken from the folder (sorted)")
@click.option("--side", default=256, show_default=True, help="the cached square's side, pixels")
@click.option("--max-aspect", default=0.0, show_default=True, help="data.max_aspect (0: none)")
@click.option("--device", "device_name", default="cpu", show_default=True, help="cpu (the twin) or cuda")
@click.option("--repeats", default=2, show_default=True)
def main(folder: Path, images: int, side: int, max_aspect: float, device_name: str, repeats: int) -> None:
    import torch

    from kit.data import gpu_decode
    from kit.data.images import decode, usable_cores

    paths = sorted(folder.glob("*.jpg"))[:images]
    compute = torch.device(device_name)
    cores = usable_cores()

    def pillow() -> np.ndarray:
        with ThreadPoolExecutor(cores) as pool:
            return np.stack(list(pool.map(lambda path: decode(path, side, max_aspect), paths)))

    def batched() -> np.ndarray:
        parts = [
            gpu_decode.decode_batch(paths[start : start + gpu_decode.GPU_BATCH], side, max_aspect, compute)
            for start in range(0, len(paths), gpu_decode.GPU_BATCH)
        ]
        if compute.type == "cuda":
            torch.cuda.synchronize()
        return np.concatenate(parts)

    seconds: dict[str, list[float]] = {"pillow": [], "decode_jpeg": []}
    results = {}
    for _ in range(repeats):  # the arms alternate: a change of load on the machine hits both
        for name, function in (("pillow", pillow), ("decode_jpeg", batched)):
            started = time.perf_counter()
            results[name] = function()
            seconds[name].append(time.perf_counter() - started)
    difference = np.abs(results["pillow"].astype(int) - results["decode_jpeg"].astype(int))
    means = difference.reshape(len(paths), -1).mean(1)
    largest = difference.reshape(len(paths), -1).max(1)
    click.echo(f"{len(paths)} JPEGs from {folder} at {side} px (max_aspect {max_aspect:g})")
    for name, timings in seconds.items():
        where = f"{cores} threads" if name == "pillow" else f"on {compute}"
        click.echo(f"  {name:12s} {len(paths) / min(timings):8.1f} images/s ({where}, best of {repeats})")
    click.echo(
        f"  per image: mean absolute difference {means.mean():.3f} (largest {means.max():.3f}), "
        f"largest pixel difference {int(largest.max())} (median {int(np.median(largest))}) levels of 255"
    )


if __name__ == "__main__":
    main()
