"""Benchmark: CPU prediction with torch (eager) against onnxruntime, for CPU-only Kaggle notebooks.

The same weights (a timm model, its head re-made for `--classes`; the kit's offline ImageNet body where it
has one), the same views (plain and mirror, as a photo competition's TTA), the same normalised float
batches, on this CPU held to `--threads` threads (a Kaggle notebook has 2 cores). The model is exported to
ONNX once (torch.onnx.export, dynamic batch); onnxruntime runs it with every graph optimisation. Prints
images/s of each (best of --repeats), the ratio, the largest difference of the class probabilities (the
two must agree within 1e-4) and the machine.

    .venv/bin/python scripts/bench_onnx.py                              # efficientnet_lite0, 224 px
    .venv/bin/python scripts/bench_onnx.py --image-size 128 --images 32  # quicker
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from pathlib import Path

import click
import numpy as np


@click.command()
@click.option("--model", "model_name", default="efficientnet_lite0", show_default=True)
@click.option("--classes", default=2, show_default=True)
@click.option("--image-size", default=224, show_default=True, help="pixels, square")
@click.option("--images", default=64, show_default=True, help="test images per timed pass")
@click.option("--batch-size", default=32, show_default=True)
@click.option("--threads", default=2, show_default=True, help="a Kaggle notebook's cores")
@click.option("--repeats", default=3, show_default=True)
def main(model_name, classes, image_size, images, batch_size, threads, repeats):
    import onnxruntime
    import torch

    from kit import models

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = models.create_model(model_name, classes, pretrained=model_name in models.OFFLINE_WEIGHTS).eval()
    generator = np.random.default_rng(0)
    inputs = generator.standard_normal((images, 3, image_size, image_size)).astype(np.float32)

    def views(batch: np.ndarray) -> list[np.ndarray]:
        return [batch, np.ascontiguousarray(batch[..., ::-1])]  # plain, mirror

    def torch_probabilities() -> np.ndarray:
        out = []
        with torch.inference_mode():
            for start in range(0, images, batch_size):
                batch = inputs[start : start + batch_size]
                out.append(np.mean([model(torch.from_numpy(v)).softmax(1).numpy() for v in views(batch)], 0))
        return np.concatenate(out)

    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "model.onnx"
        started = time.perf_counter()
        torch.onnx.export(
            model,
            (torch.from_numpy(inputs[:2]),),
            str(path),
            input_names=["images"],
            output_names=["logits"],
            dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
            dynamo=False,
        )
        export_seconds = time.perf_counter() - started
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

        def onnx_probabilities() -> np.ndarray:
            out = []
            for start in range(0, images, batch_size):
                batch = inputs[start : start + batch_size]
                logits = [session.run(["logits"], {"images": v})[0] for v in views(batch)]
                out.append(np.mean([torch.from_numpy(x).softmax(1).numpy() for x in logits], 0))
            return np.concatenate(out)

        timings = {"torch eager": [], "onnxruntime": []}
        cpu_seconds = {"torch eager": [], "onnxruntime": []}  # both threads' CPU time: less hit by load
        results = {}
        for _name, function in [("torch eager", torch_probabilities), ("onnxruntime", onnx_probabilities)]:
            function()  # warm-up (first-call allocations, onnxruntime's arena)
        for _ in range(repeats):  # the arms alternate: a load change on the machine hits both
            for name, function in [("torch eager", torch_probabilities), ("onnxruntime", onnx_probabilities)]:
                started, cpu_started = time.perf_counter(), time.process_time()
                results[name] = function()
                timings[name].append(time.perf_counter() - started)
                cpu_seconds[name].append(time.process_time() - cpu_started)

    difference = float(np.abs(results["torch eager"] - results["onnxruntime"]).max())
    rate = {name: images * 2 / min(seconds) for name, seconds in timings.items()}  # forward passes (2 views)
    click.echo(
        f"{model_name} at {image_size} px, {images} images x 2 views, batch {batch_size}, {threads} threads; "
        f"export {export_seconds:.1f} s"
    )
    cpu_per_pass = {name: min(seconds) / (images * 2) * 1000 for name, seconds in cpu_seconds.items()}
    for name in timings:
        click.echo(
            f"  {name:12s} {rate[name]:7.1f} forward passes/s, {cpu_per_pass[name]:6.1f} CPU ms per pass "
            f"(best of {repeats}: {min(timings[name]):.2f} s)"
        )
    click.echo(
        f"  onnxruntime / torch: {rate['onnxruntime'] / rate['torch eager']:.2f}x by wall clock, "
        f"{cpu_per_pass['torch eager'] / cpu_per_pass['onnxruntime']:.2f}x by CPU time"
    )
    verdict = "within" if difference <= 1e-4 else "ABOVE"
    click.echo(f"  largest probability difference: {difference:.2e} ({verdict} 1e-4)")
    click.echo(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.1f}; torch {torch.__version__}, onnxruntime {onnxruntime.__version__}"
    )


if __name__ == "__main__":
    main()
