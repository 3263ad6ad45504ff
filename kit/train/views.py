"""A trained fold's weight files as predictions: which files predict (`prediction_weights`, the rule in words
`weights_rule`; the candidates selection may choose), each file's test-time views (kit.data.tta) and their
average. Out-of-fold rows (kit.train.cross_validation) and test rows (kit.predict.inference) are made by
these same functions, so they are made alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kit import metrics, models
from kit.config import Config
from kit.data.images import cache_side
from kit.data.tta import tta_views, view_names
from kit.device import batched_inference, resize
from kit.files import save_array
from kit.run import FoldFolder, snapshot_of_stem, stage_of_stem, stage_stem, weight_file_name
from kit.tasks import Task


def average(stack, mean: str, task: Task) -> np.ndarray:
    """Predictions (members x rows x outputs: views, weight files) averaged as predict.mean says: the
    arithmetic mean of the probabilities, or their mean on the logit scale (kit.tasks mean_of_logits)."""
    stack = np.asarray(stack, dtype=np.float64)
    return task.mean_of_logits(stack) if mean == "logits" else stack.mean(0)


def view_probabilities(
    model: nn.Module,
    images: np.ndarray,
    batch_size: int,
    preset: str = "none",
    tta: int = 0,
    progress: str | None = None,
    *,
    task: Task,
    image_size: int | None = None,
    views: list[int] | None = None,
    precision: str = "auto",
    compute: torch.device | None = None,
) -> np.ndarray:
    """Predictions per view (1 + tta views, N, outputs; float64): view 0 is the plain image. Outputs are
    the task's (kit.tasks): class or tag probabilities, values.

    Views see the cached whole photos; each is resized to `image_size` (default: the cache's size).
    `views` picks some of them by index (kit.predict.selection), in that order. `task`: the run's kind (no
    default: a forgotten one must not silently mean single-label). `precision`: predict.precision;
    `compute`: the device `model` is on (default: the compute device).
    """
    model.eval()
    every = tta_views(preset, tta)
    views = [every[index] for index in views] if views is not None else every
    size = image_size or images.shape[1]

    def all_views(batch: torch.Tensor) -> torch.Tensor:
        return torch.stack([task.activate(model(resize(view(batch), size))) for view in views])

    mean, std = model.pretrained_cfg["mean"], model.pretrained_cfg["std"]
    stacked = batched_inference(
        all_views,
        images,
        batch_size,
        mean,
        std,
        join_dim=1,
        progress=progress,
        precision=precision,
        compute=compute,
    )
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
    *,
    task: Task,
    image_size: int | None = None,
    image_sizes: dict[str, int] | None = None,
    views: list[int] | None = None,
    mean: str = "probabilities",
    precision: str = "auto",
    compute: torch.device | None = None,
) -> np.ndarray:
    """Average of the predictions of several saved weights (snapshots, folds) on the same images: each
    file's views, then the files, as `mean` says (predict.mean; kit.predict.selection.average).

    `image_sizes`: the size each weight file predicts at, by stem (`weight_image_sizes`: the size its
    stage trained at); a file not named there predicts at `image_size`.

    With `keep` (the path for a weight file's stem, such as FoldFolder.kept_oof), each weight file's
    per-view probabilities are also saved there (views x N x classes, float32): every snapshot and TTA
    setting stays available to selection and ensembles later, at no extra inference cost.
    """
    per_file_views = file_view_probabilities(
        model,
        weight_paths,
        meta,
        images,
        batch_size,
        preset,
        tta,
        task=task,
        image_size=image_size,
        image_sizes=image_sizes,
        views=views,
        precision=precision,
        compute=compute,
    )
    return ensemble_of_views(weight_paths, per_file_views, keep, mean, task)


def ensemble_of_views(
    weight_paths: list[Path],
    per_file_views: list[np.ndarray],
    keep: Callable[[str], Path] | None,
    mean: str,
    task: Task,
) -> np.ndarray:
    """Each weight file's per-view probabilities (views x N x outputs) kept (`keep`, as
    ensemble_probabilities says) and averaged, then the files averaged: the second half of
    ensemble_probabilities, apart so that views predicted on several devices join before it."""
    per_file = []
    for path, per_view in zip(weight_paths, per_file_views, strict=True):
        if keep is not None:
            save_array(keep(path.stem), per_view.astype(np.float32))
        per_file.append(average(per_view, mean, task))
    return average(per_file, mean, task)


def file_view_probabilities(
    model: nn.Module,
    weight_paths: list[Path],
    meta: dict,
    images: np.ndarray,
    batch_size: int,
    preset: str = "none",
    tta: int = 0,
    *,
    task: Task,
    image_size: int | None = None,
    image_sizes: dict[str, int] | None = None,
    views: list[int] | None = None,
    precision: str = "auto",
    compute: torch.device | None = None,
    forward_for: Callable[[Path], nn.Module | None] | None = None,
) -> list[np.ndarray]:
    """Each weight file's per-view probabilities (views x N x outputs, the views `views` picks), loaded
    into `model` in turn: the first half of ensemble_probabilities (whose arguments these are).

    `forward_for(path)`: another module that computes the forward pass of the weight file at `path` (a CPU
    notebook's ONNX export, kit.predict.onnx_runtime), or None where `model` loads the file as usual."""
    per_file = []
    for path in weight_paths:
        standing_in = forward_for(path) if forward_for is not None else None
        if standing_in is None:
            models.load_weights(model, path, meta)
        names = view_names(preset, tta)
        shown = [names[index] for index in views] if views is not None else names
        progress = f"{path.parent.name}/{path.stem} x {'+'.join(shown)}"
        per_view = view_probabilities(
            model if standing_in is None else standing_in,
            images,
            batch_size,
            preset,
            tta,
            progress,
            task=task,
            image_size=(image_sizes or {}).get(path.stem, image_size),
            views=views,
            precision=precision,
            compute=compute,
        )
        per_file.append(per_view)
    return per_file


def weights_rule(config: Config) -> str:
    """Which saved weights of a fold predict, in words (recorded with the run's predictions).

    Snapshots predict only when the last stage takes them: older ones were trained before it (at another
    size, or with other layers frozen), so a last stage without snapshots predicts with its final weights.
    "ema" follows the same rule with the weights' moving average (train.ema_decay).
    """
    joined = "".join(
        f"; and {weight_file_name(stage_stem(index))}, the final weights of stage "
        f"'{config.stages[index].name}'"
        for index in joined_stages(config)
    )
    return _last_stage_rule(config) + joined


def _last_stage_rule(config: Config) -> str:
    mode, last = config.predict.weights, config.stages[-1]
    average = "the moving average's " if mode == "ema" else ""
    last_file, best_file, ema_file = (weight_file_name(stem) for stem in ("last", "best", "ema"))
    if mode in ("snapshots", "ema") and last.snapshots:
        count = min(config.predict.snapshot_ensemble, last.n_cycles)
        return f"{average}last {count} snapshots of stage '{last.name}'"
    if mode == "snapshots":
        return f"{last_file}: stage '{last.name}' takes no snapshots, so its final weights predict"
    if mode == "ema":
        return f"{ema_file}: the moving average at the end of stage '{last.name}' (it takes no snapshots)"
    if mode == "best":
        return f"{best_file} (best validation score; {last_file} when none was saved)"
    return last_file


def joined_stages(config: Config) -> list[int]:
    """Indices of the stages, before the last, whose final weights also predict (joins_prediction)."""
    return [index for index, stage in enumerate(config.stages[:-1]) if stage.joins_prediction]


def prediction_weights(config: Config, fold_dir: Path, recipe: dict | None = None) -> list[Path]:
    """The saved weights of a fold that predict, as `weights_rule` says: the final weights of the stages
    that join prediction (stage-S.pt), then snapshots of the last stage only, else its final weights
    (last.pt), or the best; with "ema", the moving average's (ema-snapshot-K.pt, else ema.pt). The last
    stage's come last: selection's cheapest candidate is the last file alone.

    `recipe`: the fold's record of its check points and stop (kit.train.stopping; result.json "recipe").
    After a stop the weights at the stop did not pay: the joined stages that ran and the best check point
    that kept a file (`weights_after_stop`) predict instead."""
    stop, folder = (recipe or {}).get("stop"), FoldFolder(fold_dir)
    joined = [folder.stage_weights(index) for index in joined_stages(config)]
    if stop is None or config.predict.weights == "ema":  # the average's files are not check points
        return joined + _last_stage_weights(config, fold_dir)
    higher = metrics.METRICS[config.competition.metric].higher_is_better
    best = weights_after_stop(recipe["checkpoints"], higher)
    ran = [path for path in joined if int(path.stem.rsplit("-", 1)[1]) < stop["stage_index"]]
    found = [*ran, *([folder.weights(best)] if best else [])]
    return list(dict.fromkeys(found)) or [folder.last]


def candidate_weights(config: Config, fold_dir: Path, recipe: dict | None = None) -> list[Path]:
    """Every saved weight file of a fold that selection may choose (kit.predict.selection), each once:
    every stage's final weights (stage-S.pt, predicted at the size that stage trained at:
    `weight_image_size`), the last stage's snapshots, its final weights (last.pt, unless a snapshot holds
    them or the last stage never ran), and the default rule's files (`prediction_weights`). The default's
    last file stays last."""
    default, folder = prediction_weights(config, fold_dir, recipe), FoldFolder(fold_dir)
    # every stage's final weights, each predicted at the size its stage trained at (`weight_image_sizes`)
    stages = folder.stage_weights_present()
    # only the last stage's snapshots (more files cost more OOF forward passes; an earlier stage's final
    # weights stand for its snapshots)
    last_stage = config.stages[-1]
    snapshots = folder.snapshots(moving_average=config.predict.weights == "ema")
    snapshots = snapshots[-last_stage.n_cycles :] if last_stage.snapshots else []
    stop = (recipe or {}).get("stop")
    last_ran = stop is None or stop["stage_index"] == len(config.stages) - 1
    final = [folder.ema_weights() if config.predict.weights == "ema" else folder.last]
    final = final if last_ran and not config.stages[-1].snapshots else []
    found = [*stages, *snapshots, *final]
    if stop is not None and math.isnan(stop["score"]):  # a diverged stage's weights (NaN) predict nothing
        wrecked = {folder.stage_weights(stop["stage_index"]), folder.last}
        wrecked |= {folder.weights(stop["weights"])} if stop.get("weights") else set()
        found = [path for path in found if path not in wrecked]
    return [path for path in dict.fromkeys([*found, *default]) if path not in default[-1:]] + default[-1:]


def weight_stage(config: Config, stem: str) -> int:
    """The index of the stage whose training left a weight file (by stem): stage-S.pt is stage S's final
    weights; snapshot-K.pt (and ema-snapshot-K.pt) the K-th snapshot of the fold, numbered over the stages
    that take snapshots, n_cycles each; last, best and ema are counted as the last stage's."""
    stage_index, snapshot = stage_of_stem(stem), snapshot_of_stem(stem)
    if stage_index is not None:
        return stage_index
    if snapshot is not None:
        taken = 0
        for index, stage in enumerate(config.stages):
            taken += stage.n_cycles if stage.snapshots else 0
            if snapshot <= taken:
                return index
    return len(config.stages) - 1


def weight_image_size(config: Config, stem: str) -> int:
    """The size (pixels) a weight file predicts at, OOF and test alike: the size its stage trained at,
    times predict.image_scale (the last stage's is `Config.predict_image_size`). An earlier stage's weights
    on views at the last stage's size see them out of scale (digits: a head trained at 48 px scored
    accuracy 0.27 on 64 px views where it validated at 0.78)."""
    stage = config.stages[weight_stage(config, stem)]
    return max(1, round(config.stage_image_size(stage) * config.predict.image_scale))


def weight_image_sizes(config: Config, paths: list[Path]) -> dict[str, int]:
    """`weight_image_size` of each weight file, by stem: what ensemble_probabilities takes and the run's
    records keep with the files that predict."""
    return {path.stem: weight_image_size(config, path.stem) for path in paths}


def _last_stage_weights(config: Config, fold_dir: Path) -> list[Path]:
    mode, last, folder = config.predict.weights, config.stages[-1], FoldFolder(fold_dir)
    snapshots = folder.snapshots(moving_average=mode == "ema")
    if mode in ("snapshots", "ema") and last.snapshots and snapshots:
        return snapshots[-min(config.predict.snapshot_ensemble, last.n_cycles) :]
    if mode == "ema":
        return [folder.ema_weights()]
    if mode == "best" and folder.best.exists():
        return [folder.best]
    return [folder.last]


def weights_after_stop(checkpoints: list[dict], higher_is_better: bool) -> str | None:
    """After train.stop_when_worse stopped a fold (kit.train.stopping), the weight file of its best check
    point that kept one (a stage's final weights, a snapshot): what predicts by default instead of the
    weights at the stop, which did not pay. `checkpoints`: the fold's, each with "score" and "weights" (a
    file stem or None); None when none kept a file."""
    kept = [item for item in checkpoints if item["weights"] and not np.isnan(item["score"])]
    if not kept:
        return None
    best = max(kept, key=lambda item: item["score"] if higher_is_better else -item["score"])
    return best["weights"]


def prediction_cache_side(config: Config) -> int:
    """The cached side that prediction's views (OOF and test) are cut from: the last stage's cache, or the
    largest size a weight file predicts at where that is larger, so that no view is upsampled from the
    cache."""
    sizes = [weight_image_size(config, stage_stem(index)) for index in range(len(config.stages))]
    return max(cache_side(config.stage_image_size(config.stages[-1])), *sizes)
