"""`kit predict`: a run's test prediction with its saved weights, as training left them and the step after
it chose (metrics.json's prediction, calibration.json): per-view probabilities (kit.train.views, which
made the OOF rows alike), averaged over a fold's weight files and over folds, calibrated, submitted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from kit import models, tasks
from kit.config import Config
from kit.data.images import photo_cache
from kit.data.labels import LabelTable, check_test_apart, load_labels, load_test
from kit.data.tta import view_names
from kit.device import on_devices, place, split_parts, visible_devices
from kit.errors import KitError
from kit.files import save_array, write_json
from kit.predict import calibrate, fold_average, onnx_runtime, prediction_rule, submission
from kit.run import FoldFolder, Run, Summary, fold_key
from kit.run_folder import run_config, saved_settings_note
from kit.train.seeds import join_seeds, seed_files
from kit.train.views import (
    ensemble_of_views,
    file_view_probabilities,
    prediction_cache_side,
    prediction_weights,
    weight_image_sizes,
    weights_rule,
)


def fold_prediction_weights(
    config: Config, fold_dir: Path, summary: Summary, chosen: dict | None
) -> list[Path]:
    """A fold's weight files that predict its test rows: those `chosen` on OOF after training (usually
    summary.prediction, kit.predict.selection), else `prediction_weights` (after the fold's stop, if any)."""
    if chosen:
        return [FoldFolder(fold_dir).weights(name) for name in chosen["weights"]]
    return prediction_weights(config, fold_dir, summary.fold_recipe(fold_key(fold_dir)))


def run_weights(config: Config, run_dir: Path, summary: Summary) -> list[Path]:
    """Every weight file the run's prediction uses: per trained fold, as `fold_prediction_weights` picks,
    each as every seed of the fold saved it (--seeds N)."""
    return [
        seeded
        for fold in summary.folds_trained
        for path in fold_prediction_weights(
            config, Run(run_dir).part(fold).folder, summary, summary.prediction
        )
        for seeded in seed_files(Run(run_dir).part(fold), path, summary.seeds)
    ]


def predict_run(config: Config, run_dir: Path, summary: Summary, overrides: Sequence[str] = ()) -> Path:
    """`kit predict` for a trained run, and what a Kaggle notebook runs on a packaged one: the run's saved
    config (with `overrides`), the competition's labels (to keep test ids apart from them), the submission.

    An error naming a setting the run saved with another value than competition.toml has now says so,
    and how to apply the fix (retrain, or an override)."""
    try:
        saved, overridden = run_config(run_dir), run_config(run_dir, overrides)
        # `--set predict.tta=...` and the like win over the choice made on OOF after training
        rule = prediction_rule.applied_rule(
            saved.predict, overridden.predict, summary.prediction, str(Run(run_dir).config_file)
        )
        return predict_test(overridden, load_labels(config), run_dir, summary, rule)
    except KitError as error:
        note = saved_settings_note(config, run_dir, getattr(error, "settings", ()))
        if not note:
            raise
        raise KitError(f"{error.message}; {note}") from None


def stopped_rule(config: Config, summary: Summary) -> str:
    """The config's weights rule, and what replaced it in folds that train.stop_when_worse stopped."""
    stages_by_fold = summary.stages.items()
    stopped = [fold for fold, stages in stages_by_fold if any(stage.get("why") for stage in stages)]
    if not stopped:
        return weights_rule(config)
    return (
        f"{weights_rule(config)}; in folds {', '.join(stopped)}, stopped by train.stop_when_worse: the best "
        "check point's weights and the joined stages that ran before the stop"
    )


def predict_test(
    config: Config,
    labels: LabelTable,
    run_dir: Path,
    summary: Summary,
    rule: prediction_rule.AppliedRule | None = None,
) -> Path:
    """Test probabilities from every trained fold of a run (snapshots, TTA), then the submission file.

    `rule`: the recorded choice or the config's rule (kit.predict.prediction_rule); None: the recorded
    choice when there is one."""
    classes = summary.classes
    test = load_test(config)
    check_test_apart(config, test, labels)
    last_stage = config.stages[-1]
    image_size = config.predict_image_size()
    images, problems = photo_cache(config, test.paths, prediction_cache_side(config), "test")
    if problems:
        write_json(Run(run_dir).bad_test_images, problems)
        first = next(iter(problems.items()))
        raise KitError(
            f"{len(problems)} test images cannot be read (e.g. {first[0]}: {first[1]}); "
            "a submission must cover "
            f"every id: fix or re-download them (list in {Run(run_dir).bad_test_images})"
        )
    task = tasks.from_record(summary.task_record)  # as trained (the regression's scale included)
    meta = models.weights_meta(config, classes)
    rule = rule or prediction_rule.AppliedRule(summary.prediction, ())
    chosen = rule.chosen  # kit.predict.selection's choice, made after training, unless --set changed it
    folds = summary.folds_trained  # every fold's weights predict; folds are averaged with equal weight
    seeds = summary.seeds  # each fold's seeds (--seeds N): a file's views averaged over them, as its OOF
    every_view = (
        chosen["views"] if chosen else list(range(len(view_names(config.augment.preset, config.predict.tta))))
    )
    devices = visible_devices()
    # (fold index, positions in every_view): whole folds dealt to the devices, or, with fewer folds than
    # devices (one fold, one weight file), each fold's views split across them
    units = split_parts(len(folds), len(every_view), len(devices))

    def unit_predictor(compute: torch.device) -> Callable[[tuple], tuple[list[Path], list[np.ndarray]]]:
        """A model on `compute`, and the per-view probabilities of a unit's fold and views with it:
        kit.device.on_devices deals the units to every visible GPU in turn (Kaggle's T4 x2: both)."""
        model = place(
            models.create_model(config.train.model, task.head_size(classes), pretrained=False), compute
        )

        def predict_unit(unit: tuple[int, list[int]]) -> tuple[list[Path], list[np.ndarray]]:
            part = Run(run_dir).part(folds[unit[0]])  # a fold, or a full-data refit's seed
            chosen_files = fold_prediction_weights(config, part.folder, summary, chosen)
            # each file as every seed of the fold saved it (--seeds N), a file's seeds in a row
            fold_weights = [seeded for path in chosen_files for seeded in seed_files(part, path, seeds)]
            return fold_weights, file_view_probabilities(
                model,
                fold_weights,
                meta,
                images,
                config.stage_batch_size(last_stage) * 2,
                preset=config.augment.preset,
                tta=config.predict.tta,
                task=task,
                image_size=image_size,
                image_sizes=weight_image_sizes(config, fold_weights),  # as their OOF rows were made
                views=[every_view[position] for position in unit[1]],
                precision=config.predict.precision,
                compute=compute,
                # a CPU notebook's ONNX exports, where `kit notebook` packaged them beside the weights
                forward_for=lambda path: onnx_runtime.onnx_model(path, model, compute),
            )

        return predict_unit

    predicted = on_devices(units, unit_predictor, devices)
    weights, fold_probabilities = [], {}
    for index, fold in enumerate(folds):  # a fold's units in order: its views joined as one device made them
        parts = [result for (item, _), result in zip(units, predicted, strict=True) if item == index]
        seeded_weights = parts[0][0]
        per_file_views = [
            np.concatenate([views[file] for _, views in parts]) for file in range(len(seeded_weights))
        ]
        fold_weights = seeded_weights[::seeds]  # seed 0's files: the fold's, named as selection named them
        if seeds > 1:  # each seed's own views kept in its folder; the fold's are their mean (kit.train.seeds)
            for position, (path, views) in enumerate(zip(seeded_weights, per_file_views, strict=True)):
                kept = Run(run_dir).part(fold).seed(position % seeds, record=True).kept_test(path.stem)
                kept.parent.mkdir(parents=True, exist_ok=True)  # a packaged run (kit notebook) has no records
                save_array(kept, views.astype(np.float32))
            per_file_views = join_seeds(per_file_views, seeds)
        fold_probabilities[fold] = ensemble_of_views(
            fold_weights, per_file_views, Run(run_dir).part(fold).kept_test, config.predict.mean, task
        )
        weights.extend(seeded_weights)
    # Uncalibrated, like oof.npy: what `kit ensemble` blends (it calibrates the blend once).
    save_array(Run(run_dir).test_probabilities, np.mean(list(fold_probabilities.values()), axis=0))
    calibration = calibrate.read(Run(run_dir))  # fitted once, when training ended (kit.predict.summary)
    probabilities = calibrate.apply_to_parts(fold_probabilities, calibration)
    path = submission.write_for_run(config, test.ids, probabilities, summary)
    # a fold run's file averages its fold models, its CV scores one per row: by how much that should help
    averaged = None
    if len(folds) > 1 and not summary.is_full_refit:
        averaged = fold_average.estimate(
            summary.metric,
            task.name == "single_label",
            fold_probabilities,
            calibration.temperatures,
            calibration.epsilon,
            summary.cv,
        )
        tqdm.write(fold_average.gain_line(averaged))
    views = chosen["view_names"] if chosen else view_names(config.augment.preset, config.predict.tta)
    write_json(
        Run(run_dir).submission_record_file,
        {
            "file": path.name,
            "weights": [str(w.relative_to(run_dir)) for w in weights],
            "weights_rule": rule.describe(stopped_rule(config, summary)),  # the rule used
            "views": views,
            "image_size": image_size,
            # the size each weight file predicted at: the size its stage trained at (kit.train.views)
            "image_sizes": weight_image_sizes(config, weights),
            "forward_passes": len(test.ids) * len(weights) * len(views),
            # per fold: which stages ran, which train.stop_when_worse stopped or skipped, and why
            "stages": summary.stages,
            # fold_models, metric, gain (None: not estimated): kit.predict.fold_average
            **({"fold_average": averaged} if averaged else {}),
        },
    )
    return path
