"""Prediction with a run's saved weights: per-view probabilities (TTA), averaged over the snapshots of a
fold and over folds, then calibrated (log loss) and written as the submission.

Training uses the same functions for its out-of-fold predictions, so OOF and test rows are made alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import click
import numpy as np
import torch
from torch import nn

from kit import models, tasks
from kit.config import Config
from kit.data.images import cache_side, image_cache
from kit.data.labels import LabelTable, check_test_apart, load_labels, load_test
from kit.device import batched_inference, place, resize
from kit.errors import KitError
from kit.files import save_array, write_json
from kit.paths import interim_dir
from kit.predict import calibrate, selection, submission
from kit.predict.tta import tta_views, view_names
from kit.run import FoldFolder
from kit.run_folder import run_config, saved_settings_note
from kit.tasks import SINGLE_LABEL, SingleLabel


def view_probabilities(
    model: nn.Module,
    images: np.ndarray,
    batch_size: int,
    preset: str = "none",
    tta: int = 0,
    progress: str | None = None,
    task: SingleLabel = SINGLE_LABEL,
    image_size: int | None = None,
    views: list[int] | None = None,
) -> np.ndarray:
    """Predictions per view (1 + tta views, N, outputs; float64): view 0 is the plain image. Outputs are
    the task's (kit.tasks): class or tag probabilities, values.

    Views see the cached whole photos; each is resized to `image_size` (default: the cache's size).
    `views` picks some of them by index (kit.predict.selection), in that order.
    """
    model.eval()
    every = tta_views(preset, tta)
    views = [every[index] for index in views] if views is not None else every
    size = image_size or images.shape[1]

    def all_views(batch: torch.Tensor) -> torch.Tensor:
        return torch.stack([task.activate(model(resize(view(batch), size))) for view in views])

    mean, std = model.pretrained_cfg["mean"], model.pretrained_cfg["std"]
    stacked = batched_inference(all_views, images, batch_size, mean, std, join_dim=1, progress=progress)
    return stacked.double().cpu().numpy()


def ensemble_probabilities(
    model: nn.Module,
    weight_paths: list[Path],
    meta: dict,
    images: np.ndarray,
    batch_size: int,
    keep: Callable[[str], Path] | None = None,
    preset: str = "none",
    tta: int = 0,
    task: SingleLabel = SINGLE_LABEL,
    image_size: int | None = None,
    views: list[int] | None = None,
    mean: str = "probabilities",
) -> np.ndarray:
    """Average of the predictions of several saved weights (snapshots, folds) on the same images: each
    file's views, then the files, as `mean` says (predict.mean; kit.predict.selection.average).

    With `keep` (the path for a weight file's stem, such as FoldFolder.kept_oof), each weight file's
    per-view probabilities are also saved there (views x N x classes, float32): every snapshot and TTA
    setting stays available to selection and ensembles later, at no extra inference cost.
    """
    per_file = []
    for path in weight_paths:
        models.load_weights(model, path, meta)
        names = view_names(preset, tta)
        shown = [names[index] for index in views] if views is not None else names
        progress = f"{path.parent.name}/{path.stem} x {'+'.join(shown)}"
        per_view = view_probabilities(
            model, images, batch_size, preset, tta, progress, task=task, image_size=image_size, views=views
        )
        if keep is not None:
            save_array(keep(path.stem), per_view.astype(np.float32))
        per_file.append(selection.average(per_view, mean, task))
    return selection.average(per_file, mean, task)


def weights_rule(config: Config) -> str:
    """Which saved weights of a fold predict, in words (recorded with the run's predictions).

    Snapshots predict only when the last stage takes them: older ones were trained before it (at another
    size, or with other layers frozen), so a last stage without snapshots predicts with its final weights.
    "ema" follows the same rule with the weights' moving average (train.ema_decay).
    """
    joined = "".join(
        f"; and stage-{index}.pt, the final weights of stage '{config.stages[index].name}'"
        for index in joined_stages(config)
    )
    return _last_stage_rule(config) + joined


def _last_stage_rule(config: Config) -> str:
    mode, last = config.predict.weights, config.stages[-1]
    average = "the moving average's " if mode == "ema" else ""
    if mode in ("snapshots", "ema") and last.snapshots:
        count = min(config.predict.snapshot_ensemble, last.n_cycles)
        return f"{average}last {count} snapshots of stage '{last.name}'"
    if mode == "snapshots":
        return f"last.pt: stage '{last.name}' takes no snapshots, so its final weights predict"
    if mode == "ema":
        return f"ema.pt: the moving average at the end of stage '{last.name}' (it takes no snapshots)"
    if mode == "best":
        return "best.pt (best validation score; last.pt when none was saved)"
    return "last.pt"


def joined_stages(config: Config) -> list[int]:
    """Indices of the stages, before the last, whose final weights also predict (joins_prediction)."""
    return [index for index, stage in enumerate(config.stages[:-1]) if stage.joins_prediction]


def joined_weights_path(fold_dir: Path, stage_index: int) -> Path:
    """Where a stage that joins prediction leaves its final weights."""
    return fold_dir / f"stage-{stage_index}.pt"


def prediction_weights(config: Config, fold_dir: Path) -> list[Path]:
    """The saved weights of a fold that predict, as `weights_rule` says: the final weights of the stages
    that join prediction (stage-S.pt), then snapshots of the last stage only, else its final weights
    (last.pt), or the best; with "ema", the moving average's (ema-snapshot-K.pt, else ema.pt). The last
    stage's come last: selection's cheapest candidate is the last file alone."""
    joined = [joined_weights_path(fold_dir, index) for index in joined_stages(config)]
    return joined + _last_stage_weights(config, fold_dir)


def _last_stage_weights(config: Config, fold_dir: Path) -> list[Path]:
    mode, last = config.predict.weights, config.stages[-1]
    prefix = "ema-snapshot-" if mode == "ema" else "snapshot-"
    snapshots = sorted(fold_dir.glob(f"{prefix}*.pt"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))
    if mode in ("snapshots", "ema") and last.snapshots and snapshots:
        return snapshots[-min(config.predict.snapshot_ensemble, last.n_cycles) :]
    if mode == "ema":
        return [fold_dir / "ema.pt"]
    if mode == "best" and (fold_dir / "best.pt").exists():
        return [fold_dir / "best.pt"]
    return [fold_dir / "last.pt"]


def fold_prediction_weights(config: Config, fold_dir: Path, summary: dict) -> list[Path]:
    """A fold's weight files that predict its test rows: those chosen on OOF after training
    (summary["prediction"], kit.predict.selection), else `prediction_weights`."""
    chosen = summary.get("prediction")
    if chosen:
        return [fold_dir / f"{name}.pt" for name in chosen["weights"]]
    return prediction_weights(config, fold_dir)


def run_weights(config: Config, run_dir: Path, summary: dict) -> list[Path]:
    """Every weight file the run's prediction uses: per trained fold, as `fold_prediction_weights` picks."""
    return [
        path
        for fold in summary["folds_trained"]
        for path in fold_prediction_weights(config, run_dir / f"fold-{fold}", summary)
    ]


def prediction_cache_side(config: Config) -> int:
    """The cached side that prediction's views (OOF and test) are cut from: the last stage's cache, or the
    prediction size itself where that is larger, so that no view is upsampled from the cache."""
    return max(cache_side(config.stage_image_size(config.stages[-1])), config.predict_image_size())


def predict_run(config: Config, run_dir: Path, summary: dict, overrides: Sequence[str] = ()) -> Path:
    """`kit predict` for a trained run, and what a Kaggle notebook runs on a packaged one: the run's saved
    config (with `overrides`), the competition's labels (to keep test ids apart from them), the submission.

    An error naming a setting the run saved with another value than competition.toml has now says so,
    and how to apply the fix (retrain, or an override)."""
    try:
        return predict_test(run_config(run_dir, overrides), load_labels(config), run_dir, summary)
    except (click.ClickException, KitError) as error:
        note = saved_settings_note(config, run_dir, error.message)
        if not note:
            raise
        raise click.ClickException(f"{error.message}; {note}") from None


def predict_test(config: Config, labels: LabelTable, run_dir: Path, summary: dict) -> Path:
    """Test probabilities from every trained fold of a run (snapshots, TTA), then the submission file."""
    classes = summary["classes"]
    test = load_test(config)
    check_test_apart(config, test, labels)
    last_stage = config.stages[-1]
    image_size = config.predict_image_size()
    images, problems = image_cache(
        test.paths, prediction_cache_side(config), interim_dir(config.name), "test", config.data.max_aspect
    )
    if problems:
        write_json(run_dir / "bad-test-images.json", problems)
        first = next(iter(problems.items()))
        raise click.ClickException(
            f"{len(problems)} test images cannot be read (e.g. {first[0]}: {first[1]}); "
            "a submission must cover "
            f"every id: fix or re-download them (list in {run_dir / 'bad-test-images.json'})"
        )
    task = tasks.from_record(summary.get("task"))  # as trained (the regression's scale included)
    model = place(models.create_model(config.train.model, task.head_size(classes), pretrained=False))
    meta = models.weights_meta(config, classes)
    weights, fold_probabilities = [], {}
    chosen = summary.get("prediction")  # kit.predict.selection's choice, made after training
    for fold in summary[
        "folds_trained"
    ]:  # every fold's weights predict; folds are averaged with equal weight
        fold_dir = run_dir / f"fold-{fold}"
        fold_weights = fold_prediction_weights(config, fold_dir, summary)  # only those that paid on OOF
        fold_probabilities[fold] = ensemble_probabilities(
            model,
            fold_weights,
            meta,
            images,
            config.stage_batch_size(last_stage) * 2,
            keep=FoldFolder(fold_dir, fold).kept_test,
            preset=config.augment.preset,
            tta=config.predict.tta,
            task=task,
            image_size=image_size,
            views=chosen["views"] if chosen else None,
            mean=config.predict.mean,
        )
        weights += fold_weights
    # Uncalibrated, like oof.npy: what `kit ensemble` blends (it calibrates the blend once).
    save_array(run_dir / "test-probabilities.npy", np.mean(list(fold_probabilities.values()), axis=0))
    calibration = calibrate.run_calibration(run_dir, labels, summary, config.submission.clip_epsilon)
    probabilities = calibrate.apply_to_folds(fold_probabilities, calibration)
    path = submission.write_for_run(config, test.ids, probabilities, summary)
    views = chosen["view_names"] if chosen else view_names(config.augment.preset, config.predict.tta)
    write_json(
        run_dir / "submission.json",
        {
            "file": path.name,
            "weights": [str(w.relative_to(run_dir)) for w in weights],
            "weights_rule": weights_rule(config),
            "calibration": calibration,
            "views": views,
            "image_size": image_size,
            "forward_passes": len(test.ids) * len(weights) * len(views),
        },
    )
    return path
