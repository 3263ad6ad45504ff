"""Pseudo-labels: test images that a fold's own model predicts confidently join a later stage's training rows.

Fold k's labels come only from fold k's model as the earlier stages left it: a model that never saw fold
k's validation rows, so its out-of-fold score stays honest (labels from an ensemble of every fold would
carry the other folds' knowledge of those rows into fold k's training). Probabilities are first
temperature-calibrated on the fold's validation rows, so `threshold` means what it says. The labels are
written once per fold and stage (fold-K/pseudo-labels-stage-S.json: ids, classes, probabilities); a
resumed run reads them back instead of asking a model that has trained further.
"""

from __future__ import annotations

import numpy as np

from kit import distributed
from kit.config import Config
from kit.data.images import cache_side, photo_cache
from kit.data.labels import check_test_apart, load_test
from kit.files import read_json, write_json
from kit.metrics import apply_temperature, fit_temperature
from kit.train.stage import FoldState, PseudoLabels, training_images
from kit.train.views import view_probabilities


def cached_test_images(config: Config, image_size: int) -> tuple[np.ndarray, dict]:
    """The test photos cached as test predictions and the training rows cache them (whole, a little larger
    than `image_size`): the chosen ones join the training images as they are."""
    return photo_cache(config, load_test(config).paths, cache_side(image_size), "test")


def choose(probabilities: np.ndarray, threshold: float) -> np.ndarray:
    """Rows whose most likely class reaches `threshold` (calibrated probabilities, rows x classes)."""
    return np.flatnonzero(probabilities.max(1) >= threshold)


def label_test_images(config: Config, stage_index: int, state: FoldState) -> dict:
    """The fold's current model labels the test set: calibrated on its validation rows, then thresholded."""
    stage = config.stages[stage_index]
    image_size, batch_size = config.stage_image_size(stage), config.stage_batch_size(stage) * 2
    test = load_test(config)
    check_test_apart(config, test, state.labels)
    tests, problems = cached_test_images(config, image_size)
    images, _ = training_images(config, state.labels, cache_side(image_size))
    preset, tta = config.augment.preset, config.predict.tta  # as test predictions are made

    def predicted(rows: np.ndarray, progress: str | None = None) -> np.ndarray:
        return view_probabilities(
            state.model,
            rows,
            batch_size,
            preset,
            tta,
            progress,
            task=state.labels.task,
            image_size=image_size,
        ).mean(0)

    temperature = fit_temperature(predicted(images[state.valid_rows]), state.labels.targets[state.valid_rows])
    probabilities = apply_temperature(predicted(tests, "pseudo-labels"), temperature)
    unreadable = {str(path) for path in problems}
    chosen = [
        row
        for row in choose(probabilities, stage.pseudo_label.threshold)
        if str(test.paths[row]) not in unreadable
    ]
    return {
        "stage": stage.name,
        "fold": state.fold,
        "threshold": stage.pseudo_label.threshold,
        "weight": stage.pseudo_label.weight,
        "temperature": temperature,
        "test_images": len(test.ids),
        "rows": [int(row) for row in chosen],
        "ids": [test.ids[row] for row in chosen],
        "labels": [state.labels.classes[int(probabilities[row].argmax())] for row in chosen],
        "probabilities": [float(probabilities[row].max()) for row in chosen],
    }


def for_stage(config: Config, stage_index: int, state: FoldState) -> PseudoLabels:
    """This fold's pseudo-labels for the stage: made and written once (rank 0), read back afterwards."""
    path = state.folder.pseudo_labels(stage_index)
    with distributed.main_first():
        if distributed.is_main() and not path.exists():
            write_json(path, label_test_images(config, stage_index, state))
    record = read_json(path)
    stage = config.stages[stage_index]
    tests, _ = cached_test_images(config, config.stage_image_size(stage))
    targets = np.array([state.labels.classes.index(label) for label in record["labels"]], dtype=np.int64)
    return PseudoLabels(np.asarray(tests[record["rows"]]), targets, record["weight"])
