"""Prediction on every visible GPU: weight files (or folds) dealt to the devices in turn, each device's share
in a thread of its own, the results in the items' order and equal to one device's. Run on a CPU here with
two devices' worth of work (both the CPU), split exactly as two GPUs would split it."""

from __future__ import annotations

import copy
import threading

import numpy as np
import pytest
import torch

from kit import device, models

CLASSES = 10


@pytest.mark.parametrize(
    ("count", "devices", "expected"),
    [
        (5, 2, [[0, 2, 4], [1, 3]]),  # five weight files on a T4 x2
        (4, 2, [[0, 2], [1, 3]]),
        (1, 2, [[0]]),  # one file: the second GPU is not handed an empty share
        (3, 1, [[0, 1, 2]]),
        (0, 2, [[]]),
    ],
)
def test_work_is_dealt_to_the_devices_in_turn(count, devices, expected):
    assert device.share_out(count, devices) == expected


def test_two_devices_predict_what_one_device_predicts(monkeypatch):
    monkeypatch.delenv(device.GPU_PATHS_ON_CPU, raising=False)
    torch.manual_seed(0)
    base = models.create_model("test_efficientnet", CLASSES, pretrained=False).eval()
    weight_files = []
    for seed in range(3):  # three weight files: different weights of one model
        torch.manual_seed(seed)
        weight_files.append(
            {
                name: value + 0.01 * torch.randn_like(value) if value.is_floating_point() else value
                for name, value in base.state_dict().items()
            }
        )
    images = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    mean, std = base.pretrained_cfg["mean"], base.pretrained_cfg["std"]
    threads = set()

    def predictor(compute: torch.device):
        threads.add(threading.get_ident())
        model = device.place(copy.deepcopy(base), compute).eval()  # each device holds a model of its own

        def predict(weights: dict) -> np.ndarray:
            model.load_state_dict(weights)
            return device.batched_inference(model, images, 4, mean, std, compute=compute).numpy()

        return predict

    one = device.on_devices(weight_files, predictor, [torch.device("cpu")])
    assert len(threads) == 1
    threads.clear()
    two = device.on_devices(weight_files, predictor, [torch.device("cpu"), torch.device("cpu")])
    assert len(threads) == 2  # each device's share ran in a thread of its own
    for alone, split in zip(one, two, strict=True):  # in the items' order
        np.testing.assert_allclose(split, alone, rtol=1e-5, atol=1e-6)
    assert not np.allclose(one[0], one[1])  # the files differ: a mixed-up order would show


def test_a_device_error_reaches_the_caller():
    def fails(compute):
        def work(item):
            raise RuntimeError(f"out of memory on {compute}")

        return work

    with pytest.raises(RuntimeError, match="out of memory"):
        device.on_devices([1, 2], fails, [torch.device("cpu"), torch.device("cpu")])


@pytest.mark.slow
def test_kit_predict_on_two_devices_writes_what_one_device_writes(digits, monkeypatch):
    """kit predict with two visible devices (here: the CPU twice, as two T4s would be used): each fold on a
    device of its own, the submission and test probabilities those of one device."""
    import os
    from pathlib import Path

    from conftest import TINY, invoke

    from kit.predict import inference

    project = Path(os.environ["KIT_PROJECT_ROOT"])
    overrides = [item for value in [*TINY, "train.folds=2"] for item in ("--set", value)]
    assert invoke("train", "digits", "--fold", "all", *overrides).exit_code == 0
    (run_dir,) = (project / "runs" / "digits").iterdir()
    assert invoke("predict", "digits").exit_code == 0
    one = np.load(run_dir / "test-probabilities.npy")
    (alone,) = (project / "submissions").glob("digits-*.csv")
    expected = alone.read_text()
    alone.unlink()
    used = []
    monkeypatch.setattr(inference, "visible_devices", lambda: [torch.device("cpu"), torch.device("cpu")])
    monkeypatch.setattr(
        inference, "on_devices", lambda *args: used.append(len(args[2])) or device.on_devices(*args)
    )
    assert invoke("predict", "digits").exit_code == 0
    assert used == [2]
    np.testing.assert_allclose(np.load(run_dir / "test-probabilities.npy"), one, rtol=1e-6, atol=1e-7)
    (split,) = (project / "submissions").glob("digits-*.csv")
    assert split.read_text() == expected


@pytest.mark.parametrize(
    ("items", "parts", "devices", "expected"),
    [
        (2, 3, 2, [(0, [0, 1, 2]), (1, [0, 1, 2])]),  # two folds on a T4 x2: a fold each, every view
        (5, 3, 2, [(item, [0, 1, 2]) for item in range(5)]),
        (1, 3, 2, [(0, [0, 1]), (0, [2])]),  # one fold (or one weight file): its views split
        (1, 2, 2, [(0, [0]), (0, [1])]),
        (1, 1, 2, [(0, [0])]),  # one view: nothing to split
        (2, 3, 5, [(0, [0, 1]), (0, [2]), (1, [0, 1]), (1, [2])]),  # two runs of views per fold
        (1, 3, 4, [(0, [0]), (0, [1]), (0, [2])]),  # at most one run per view
        (1, 3, 1, [(0, [0, 1, 2])]),  # one device
        (0, 3, 2, []),
    ],
)
def test_views_are_split_across_devices_only_where_folds_are_fewer(items, parts, devices, expected):
    assert device.split_parts(items, parts, devices) == expected


@pytest.mark.slow
def test_one_folds_views_split_over_two_devices_predict_what_one_device_predicts(digits, monkeypatch):
    """kit predict of a one-fold run with three views on two visible devices (the CPU twice): the views
    split between them, and the submission, the test probabilities and each weight file's kept per-view
    probabilities those of one device."""
    import os
    from pathlib import Path

    from conftest import TINY, invoke

    from kit.predict import inference

    project = Path(os.environ["KIT_PROJECT_ROOT"])
    settings = [*TINY, "train.folds=2", "predict.tta=2", "predict.select=false"]
    overrides = [item for value in settings for item in ("--set", value)]
    assert invoke("train", "digits", "--fold", "0", *overrides).exit_code == 0
    (run_dir,) = (project / "runs" / "digits").iterdir()
    assert invoke("predict", "digits").exit_code == 0
    alone = {path: np.load(path) for path in sorted(run_dir.rglob("*.npy")) if "test" in path.name}
    assert len(alone) >= 2  # the test probabilities and a weight file's kept views
    (submitted,) = (project / "submissions").glob("digits-*.csv")
    expected = submitted.read_text()
    submitted.unlink()
    units = []
    monkeypatch.setattr(inference, "visible_devices", lambda: [torch.device("cpu"), torch.device("cpu")])
    monkeypatch.setattr(
        inference, "on_devices", lambda *args: units.extend(args[0]) or device.on_devices(*args)
    )
    assert invoke("predict", "digits").exit_code == 0
    assert units == [(0, [0, 1]), (0, [2])]
    for path, probabilities in alone.items():
        np.testing.assert_allclose(np.load(path), probabilities, rtol=1e-6, atol=1e-7, err_msg=str(path))
    kept = [array for path, array in alone.items() if array.ndim == 3]
    assert kept and all(array.shape[0] == 3 for array in kept)  # three views, joined in order
    (split,) = (project / "submissions").glob("digits-*.csv")
    assert split.read_text() == expected
