"""Batched inference: normalisation on the device, test-time augmentation, snapshot and fold ensembles."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from kit.models import load_weights

View = Callable[[torch.Tensor], torch.Tensor]


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@functools.lru_cache(maxsize=16)
def _normaliser(mean: tuple, std: tuple, target: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std as (1, 3, 1, 1) tensors on `target`, made once: a host-to-device copy from Python
    values would otherwise wait for the GPU on every batch."""
    return torch.tensor(mean, device=target).view(1, 3, 1, 1), torch.tensor(std, device=target).view(1, 3, 1, 1)


def to_input(batch: torch.Tensor, mean: tuple, std: tuple, target: torch.device) -> torch.Tensor:
    """uint8 NHWC (as cached) -> normalised float NCHW on `target`, channels_last on CUDA.

    The copy crosses the bus as uint8 (4x fewer bytes than float) and is converted on the device.
    """
    batch = batch.to(target, non_blocking=True).permute(0, 3, 1, 2).float().div_(255)
    mean_tensor, std_tensor = _normaliser(tuple(mean), tuple(std), target)
    batch = (batch - mean_tensor) / std_tensor
    return batch.contiguous(memory_format=torch.channels_last) if target.type == "cuda" else batch


def _zoom(batch: torch.Tensor, factor: float = 1.15) -> torch.Tensor:
    """A slightly larger size, centre-cropped back: the lesson's 'zoom in a little' view."""
    size = batch.shape[-1]
    larger = functional.interpolate(batch, scale_factor=factor, mode="bilinear", align_corners=False)
    offset = (larger.shape[-1] - size) // 2
    return larger[..., offset : offset + size, offset : offset + size]


def _corner(batch: torch.Tensor, corner: int, fraction: float = 0.9) -> torch.Tensor:
    """A crop of `fraction` of the side from one corner, resized back to full size."""
    size = batch.shape[-1]
    crop = round(size * fraction)
    top = 0 if corner in (0, 1) else size - crop
    left = 0 if corner in (0, 2) else size - crop
    part = batch[..., top : top + crop, left : left + crop]
    return functional.interpolate(part, size=(size, size), mode="bilinear", align_corners=False)


def _shift(batch: torch.Tensor, down: float, right: float) -> torch.Tensor:
    """The picture moved by a fraction of its side, the uncovered border filled with its edge pixels."""
    size = batch.shape[-1]
    pad = max(1, round(size * max(abs(down), abs(right))))
    padded = functional.pad(batch, (pad, pad, pad, pad), mode="replicate")
    top, left = pad - round(size * down), pad - round(size * right)
    return padded[..., top : top + size, left : left + size]


def _hflip(x: torch.Tensor) -> torch.Tensor:
    return x.flip(3)


# Views that do not change what the picture shows, by augmentation preset. Photos (side_on) may be
# mirrored and cropped; satellite tiles (top_down) turned; "none" (digits, text) only moved a little
# and zoomed a little, as its training augmentation does: a mirrored 2 is not a 2.
TTA_VIEWS: dict[str, list[View]] = {
    "side_on": [_hflip, _zoom, lambda x: _zoom(_hflip(x)), lambda x: _corner(x, 0), lambda x: _corner(x, 3)],
    "top_down": [_hflip, lambda x: x.flip(2), lambda x: x.rot90(1, (2, 3)), _zoom, lambda x: x.rot90(3, (2, 3))],
    "none": [
        lambda x: _shift(x, 0.05, 0.05), lambda x: _shift(x, -0.05, -0.05),
        lambda x: _shift(x, 0.05, -0.05), lambda x: _shift(x, -0.05, 0.05), lambda x: _zoom(x, 1.06),
    ],
}


def tta_views(preset: str, count: int) -> list[View]:
    """The plain view plus `count` augmented ones."""
    extra = TTA_VIEWS.get(preset, TTA_VIEWS["none"])
    return [lambda x: x] + [extra[index % len(extra)] for index in range(count)]


@torch.inference_mode()
def view_probabilities(
    model: nn.Module, images: np.ndarray, batch_size: int, mean: tuple, std: tuple, preset: str = "none", tta: int = 0
) -> np.ndarray:
    """Softmax probabilities per view (1 + tta views, N, classes; float64): view 0 is the plain image."""
    target = device()
    model.eval()
    views = tta_views(preset, tta)
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = to_input(torch.from_numpy(np.array(images[start : start + batch_size])), mean, std, target)
        with torch.autocast(target.type, dtype=torch.bfloat16, enabled=target.type == "cuda"):
            outputs.append(torch.stack([model(view(batch)).float().softmax(1) for view in views]))
    return torch.cat(outputs, dim=1).double().cpu().numpy()


def predict_probabilities(
    model: nn.Module, images: np.ndarray, batch_size: int, mean: tuple, std: tuple, preset: str = "none", tta: int = 0
) -> np.ndarray:
    """Softmax probabilities (N x classes) averaged over the plain view and `tta` augmented views."""
    return view_probabilities(model, images, batch_size, mean, std, preset, tta).mean(0)


def ensemble_probabilities(
    model: nn.Module, weight_paths: list[Path], meta: dict, images: np.ndarray, batch_size: int,
    keep: Path | None = None, **options,
) -> np.ndarray:
    """Average of the probabilities of several saved weights (snapshots, folds) on the same images.

    With `keep` (a path prefix such as fold-0/oof-), each weight file's per-view probabilities are also
    saved as <keep><weights>.npy (views x N x classes, float32): every snapshot and TTA setting stays
    available to ensembles later, at no extra inference cost.
    """
    from kit.runs import save_array

    total = None
    for path in weight_paths:
        load_weights(model, path, meta)
        per_view = view_probabilities(model, images, batch_size, **options)
        if keep is not None:
            save_array(keep.with_name(f"{keep.name}{path.stem}.npy"), per_view.astype(np.float32))
        probabilities = per_view.mean(0)
        total = probabilities if total is None else total + probabilities
    return total / len(weight_paths)


def prediction_weights(fold_dir: Path, mode: str, snapshot_count: int) -> list[Path]:
    """Which saved weights of a fold predict: the last N snapshots, the last or the best weights."""
    snapshots = sorted(fold_dir.glob("snapshot-*.pt"), key=lambda p: int(p.stem.split("-")[1]))
    if mode == "snapshots" and snapshots:
        return snapshots[-snapshot_count:]
    if mode == "best" and (fold_dir / "best.pt").exists():
        return [fold_dir / "best.pt"]
    return [fold_dir / "last.pt"]


def predict_run(config, run_dir: Path) -> Path:
    """Test probabilities from every trained fold of a run (snapshots, TTA), then the submission file."""
    import click

    from kit import cache, data, models, submission
    from kit.runs import interim_dir, read_json, save_array, write_json
    from kit.stage import stage_batch_size, stage_image_size

    summary = read_json(run_dir / "metrics.json")
    classes = summary["classes"]
    test = data.load_test(config)
    data.check_test_apart(config, test, data.load_labels(config))
    last_stage = config.stages[-1]
    images, problems = cache.image_cache(test.paths, stage_image_size(config, last_stage), interim_dir(config), "test")
    if problems:
        write_json(run_dir / "bad-test-images.json", problems)
        first = next(iter(problems.items()))
        raise click.ClickException(
            f"{len(problems)} test images cannot be read (e.g. {first[0]}: {first[1]}); a submission must cover "
            f"every id: fix or re-download them (list in {run_dir / 'bad-test-images.json'})"
        )
    model = models.create_model(config.train.model, len(classes), pretrained=False).to(device())
    meta = {"model": config.train.model, "classes": classes}
    options = {"mean": model.pretrained_cfg["mean"], "std": model.pretrained_cfg["std"], "preset": config.augment.preset, "tta": config.train.tta}
    weights, fold_probabilities = [], []
    for fold in summary["folds_trained"]:  # every fold's weights predict; folds are averaged with equal weight
        fold_dir = run_dir / f"fold-{fold}"
        fold_weights = prediction_weights(fold_dir, config.train.predict_weights, config.train.snapshot_ensemble)
        fold_probabilities.append(ensemble_probabilities(
            model, fold_weights, meta, images, stage_batch_size(config, last_stage) * 2, keep=fold_dir / "test-", **options
        ))
        weights += fold_weights
    probabilities = np.mean(fold_probabilities, axis=0)
    if summary["metric"] == "log_loss":  # temperature and clip fitted on OOF rows: never worse on OOF
        from kit.calibrate import apply_calibration, calibrate

        temperature, epsilon, before, after = calibrate(np.load(run_dir / "oof.npy"), _oof_targets(config, classes))
        probabilities = apply_calibration(probabilities, temperature, epsilon)
        write_json(run_dir / "calibration.json", {"temperature": temperature, "epsilon": epsilon, "oof_before": before, "oof_after": after})
    save_array(run_dir / "test-probabilities.npy", probabilities)
    sample = submission.read_sample(config)
    frame = submission.build(config, test.ids, probabilities, classes, sample)
    path = submission.write(config, frame, sample, summary["metric"], summary["cv"], classes)
    write_json(run_dir / "submission.json", {"file": path.name, "weights": [str(w.relative_to(run_dir)) for w in weights]})
    return path


def _oof_targets(config, classes: list[str]) -> np.ndarray:
    """Class index of every training row, in oof.npy's row order."""
    from kit import data

    labels = data.load_labels(config)
    return np.array([classes.index(labels.classes[target]) for target in labels.targets])
