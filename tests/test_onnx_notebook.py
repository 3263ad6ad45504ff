"""CPU-only notebooks: the packaged weights exported to ONNX and predicted by onnxruntime (its wheel packaged
like the kit's), only where the notebook runs without a GPU; predictions equal torch's within 1e-4."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, invoke

from kit.predict import onnx_runtime


@pytest.mark.parametrize(
    ("setting", "accelerator", "available", "expected"),
    [
        ("auto", "cpu", True, True),  # a CPU notebook: onnxruntime is the faster path
        ("auto", "cpu", False, False),  # not installed here: torch, as before
        ("auto", "t4", True, False),  # on a GPU torch's own path is the fast one
        ("auto", "t4x2", True, False),
        ("off", "cpu", True, False),
        ("on", "t4", True, True),
        ("on", "cpu", False, True),  # asked for: refused in one line by the package's build
    ],
)
def test_onnx_is_used_for_cpu_notebooks_unless_told(setting, accelerator, available, expected):
    assert onnx_runtime.use_onnx(setting, accelerator, available) == expected


def trained_digits(project: Path, *extra: str) -> Path:
    settings = [*TINY, "train.folds=2", "predict.tta=1", "predict.select=false", *extra]
    overrides = [item for value in settings for item in ("--set", value)]
    assert invoke("train", "digits", "--fold", "0", *overrides).exit_code == 0
    (run_dir,) = (project / "runs" / "digits").iterdir()
    return run_dir


@pytest.mark.slow
def test_onnxruntime_predicts_what_torch_predicts_on_a_digits_run(digits, monkeypatch):
    """kit predict of a digits run with torch, then with each weight file's ONNX export beside it (as the
    notebook's unpacked package has them): onnxruntime ran every forward pass, the test probabilities
    equal torch's within 1e-4; on a GPU the export is not used."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from kit import models, tasks
    from kit.competitions import load_competition
    from kit.predict.inference import run_weights
    from kit.run import Run
    from kit.run_folder import run_config

    project = Path(os.environ["KIT_PROJECT_ROOT"])
    run_dir = trained_digits(project)
    assert invoke("predict", "digits").exit_code == 0
    with_torch = np.load(Run(run_dir).test_probabilities)
    summary = Run(run_dir).summary()
    trained = run_config(run_dir)
    task = tasks.from_record(summary.task_record)
    model = models.create_model(trained.train.model, task.head_size(summary.classes), pretrained=False)
    meta = models.weights_meta(trained, summary.classes)
    weights = run_weights(load_competition("digits"), run_dir, summary)
    for path in weights:
        onnx_runtime.export(model, path, meta, path.with_suffix(onnx_runtime.SUFFIX), 32)
    assert onnx_runtime.onnx_model(weights[0], model, torch.device("cuda")) is None  # a GPU: torch
    passes = []
    forward = onnx_runtime.OnnxModel.forward
    monkeypatch.setattr(
        onnx_runtime.OnnxModel,
        "forward",
        lambda self, images: passes.append(len(images)) or forward(self, images),
    )
    assert invoke("predict", "digits").exit_code == 0
    with_onnx = np.load(Run(run_dir).test_probabilities)
    test_rows = len(with_torch)
    assert sum(passes) == test_rows * len(weights) * 2  # every image, weight file and view (plain + 1)
    np.testing.assert_allclose(with_onnx, with_torch, rtol=0, atol=1e-4)


@pytest.mark.slow
def test_a_cpu_notebooks_package_holds_onnx_exports_and_onnxruntimes_wheel(digits, monkeypatch, tmp_path):
    """package.build for a CPU notebook: each weight file's .onnx beside it in the manifest (linked into the
    run's fold folders on unpacking) and onnxruntime's wheel listed for the notebook's install; for a GPU
    notebook neither."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from kit.competitions import load_competition
    from kit.kaggle import package
    from kit.run import Run

    project = Path(os.environ["KIT_PROJECT_ROOT"])
    run_dir = trained_digits(project, "train.epochs=1")
    config = load_competition("digits")

    def no_wheel(folder: Path) -> Path:
        (folder / "kit-0-py3-none-any.whl").touch()
        return folder / "kit-0-py3-none-any.whl"

    def runtime_wheel(folder: Path) -> Path:  # pip download, without asking an index in a test
        (folder / "onnxruntime-1.0-cp311-cp311-linux_x86_64.whl").touch()
        return folder / "onnxruntime-1.0-cp311-cp311-linux_x86_64.whl"

    monkeypatch.setattr(package, "build_wheel", no_wheel)
    monkeypatch.setattr(onnx_runtime, "runtime_wheel", runtime_wheel)
    summary = Run(run_dir).summary()
    cpu = package.build(config, run_dir, summary, "local/kit-digits", tmp_path / "cpu", "cpu")
    exported = {
        name: relative for name, relative in cpu.manifest["weights"].items() if name.endswith(".onnx")
    }
    assert exported and all((tmp_path / "cpu" / name).is_file() for name in exported)
    assert sorted(Path(relative).with_suffix(".pt").as_posix() for relative in exported.values()) == sorted(
        relative for name, relative in cpu.manifest["weights"].items() if name.endswith(".pt")
    )
    assert cpu.manifest["wheels"] == ["onnxruntime-1.0-cp311-cp311-linux_x86_64.whl"]
    root, unpacked = package.unpack(
        tmp_path / "cpu", project / "data" / "raw" / "digits", tmp_path / "scratch"
    )
    assert all((unpacked / relative).is_file() for relative in exported.values())
    gpu = package.build(config, run_dir, summary, "local/kit-digits", tmp_path / "gpu", "t4x2")
    assert gpu.manifest["wheels"] == [] and not list((tmp_path / "gpu").glob("*.onnx"))
    assert json.loads((tmp_path / "gpu" / package.MANIFEST).read_text())["wheels"] == []
