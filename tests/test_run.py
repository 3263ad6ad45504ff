"""The line between training and prediction (issue 24): training ends with each fold's files; one step
after it fits the calibration once; prediction only reads it. And a forgotten task is an error."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from kit.tasks import SINGLE_LABEL
from kit.train import stage, views


@pytest.mark.slow
def test_calibration_is_fitted_once_per_fold_over_train_and_predict(digits, project, monkeypatch):
    """`kit train` then `kit predict`: each trained fold's temperature is fitted once, by the step after
    training, and prediction reads it (the kit before fitted it after training and again in predict)."""
    from kit import commands
    from kit.predict import calibrate
    from kit.run import Run

    fitted, original = [], calibrate.fit_temperature

    def counted(probabilities, targets):
        fitted.append(len(targets))
        return original(probabilities, targets)

    monkeypatch.setattr(calibrate, "fit_temperature", counted)
    config = digits("competition.metric=log_loss", "train.folds=3")
    run_dir = commands.train(config, "0")
    assert len(fitted) == 1  # fold 0's temperature, fitted on its OOF rows
    commands.predict(config, run_dir.name)
    assert len(fitted) == 1  # read back, not fitted again
    assert list(Run(run_dir).read_calibration().temperatures) == ["0"]


def test_a_forgotten_task_is_an_error_not_single_label():
    """Predictions of a multi-label or regression run averaged without their task would silently be
    treated as single-label class probabilities: the task has no default."""
    stack = np.full((2, 3, 4), 0.25)
    with pytest.raises(TypeError, match="task"):
        views.average(stack, "logits")  # type: ignore[call-arg]
    assert views.average(stack, "probabilities", SINGLE_LABEL).shape == (3, 4)
    with pytest.raises(TypeError, match="task"):
        views.view_probabilities(None, np.zeros((1, 8, 8, 3), np.uint8), 1)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="task"):
        views.ensemble_probabilities(None, [], {}, np.zeros((1, 8, 8, 3), np.uint8), 1)  # type: ignore[call-arg]
    # A stage's loss is its task's: a PreparedStage made without one is refused, not a single-label loss.
    assert inspect.signature(stage.PreparedStage).parameters["task"].default is inspect.Parameter.empty
