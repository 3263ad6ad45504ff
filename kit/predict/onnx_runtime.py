"""CPU-only notebooks: the packaged weight files exported to ONNX by `kit notebook`, and predicted in the
notebook by onnxruntime instead of torch eager.

On a CPU onnxruntime needed 8.5x less CPU time per forward pass than torch eager for the same weights and
views, with probabilities equal to 2e-7 (scripts/bench_onnx.py, docs/notebooks.md); on a GPU torch's own
path is the fast one. So the export happens only for a notebook that runs without a GPU (`use_onnx`), and
an exported file is used only where prediction runs on a CPU and the file lies beside its weights
(`onnx_model`): `kit predict` at home, whose run folder holds none, predicts with torch as before.

Only the model's forward pass moves to onnxruntime: TTA views, resizing, normalisation and the task's
activation stay the kit's own (kit.train.views), so the two paths make their views alike.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import torch
from torch import nn

from kit import models
from kit.errors import KitError
from kit.files import atomic_path

SUFFIX = ".onnx"  # beside its weight file: fold-0/last.pt -> fold-0/last.onnx
SETTINGS = ("auto", "on", "off")  # notebook.onnx
INPUT, OUTPUT = "images", "outputs"  # the exported graph's names
OPSET = 17  # ONNX operator set: every op of timm's CNNs, and read by onnxruntime 1.17 and later


def installed() -> bool:
    """Whether both halves are here: onnx (the export writes it) and onnxruntime (its wheel is packaged)."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxruntime"))


def use_onnx(setting: str, accelerator: str, available: bool) -> bool:
    """Whether `kit notebook` exports the weights to ONNX for a notebook on `accelerator`: "off" never;
    "on" always (refused in one line where onnx or onnxruntime is not installed: `available`); "auto" for a
    CPU notebook (accelerator "cpu", where onnxruntime is the faster path) where both are installed."""
    if setting == "off":
        return False
    if setting == "on":
        return True
    return accelerator == "cpu" and available


def export(model: nn.Module, weights: Path, meta: dict, target: Path, image_size: int) -> Path:
    """`weights` loaded into `model` (on the CPU) and its forward pass written to `target` as ONNX: any
    batch size and image size (the views of every size a run predicts at), float32 in and out."""
    models.load_weights(model, weights, meta)
    model = model.cpu().eval()
    example = torch.zeros(2, 3, image_size, image_size)
    axes = {0: "batch", 2: "height", 3: "width"}
    with atomic_path(target) as temporary, torch.inference_mode(False), torch.no_grad():
        torch.onnx.export(
            model,
            (example,),
            str(temporary),
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamic_axes={INPUT: axes, OUTPUT: {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,  # the TorchScript exporter: what scripts/bench_onnx.py measured
        )
    return target


class OnnxModel(nn.Module):
    """An exported forward pass that stands where the torch model stood (kit.train.views): float NCHW in,
    the model's outputs out, on the CPU; `pretrained_cfg` (mean and std) the torch model's."""

    def __init__(self, path: Path, pretrained_cfg: dict, threads: int):
        super().__init__()
        import onnxruntime  # heavy, and only in a CPU notebook that packaged it

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads  # a Kaggle notebook's 2 cores
        options.inter_op_num_threads = 1
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.pretrained_cfg = pretrained_cfg
        self.path = path

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        batch = images.detach().float().contiguous().cpu().numpy()
        return torch.from_numpy(self.session.run([OUTPUT], {INPUT: batch})[0])


def onnx_model(weights: Path, model: nn.Module, compute: torch.device) -> OnnxModel | None:
    """The exported forward pass beside `weights`, where prediction runs on a CPU, the file is there and
    onnxruntime imports; else None (torch predicts with `weights` as before)."""
    exported = weights.with_suffix(SUFFIX)
    if compute.type != "cpu" or not exported.is_file() or importlib.util.find_spec("onnxruntime") is None:
        return None
    return OnnxModel(exported, dict(models.unwrap(model).pretrained_cfg), torch.get_num_threads())


def runtime_wheel(destination: Path) -> Path:
    """The installed onnxruntime's wheel for this interpreter and platform, fetched into `destination` by
    pip (from its index or find-links), for the notebook to install offline like the kit's own."""
    from importlib import metadata

    version = metadata.version("onnxruntime")
    destination.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
    result = subprocess.run(
        [*command, "--dest", str(destination), f"onnxruntime=={version}"],
        capture_output=True,
        text=True,
        check=False,
    )
    wheels = sorted(destination.glob(f"onnxruntime-{version}-*.whl"))
    if result.returncode != 0 or not wheels:
        said = (result.stderr or result.stdout).strip().splitlines()
        raise KitError(
            f"`pip download onnxruntime=={version}` failed ({said[-1] if said else 'no wheel'}): the CPU "
            "notebook's ONNX path needs its wheel; fix pip's access, or --set notebook.onnx=off"
        )
    return wheels[0]
