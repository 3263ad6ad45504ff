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
    """`kit train` then `kit predict`: the calibration that is applied (a temperature per trained fold) is
    fitted once, by the step after training; `kit predict` fits nothing and reads it (the kit before
    fitted it after training and again in predict). Cross-fitted scoring (kit.predict.crossfit) fits
    temperatures on parts of the rows to score the CV honestly: those are not the applied calibration."""
    from kit import commands
    from kit.predict import calibrate
    from kit.run import Run

    applied, temperatures = [], []
    fit_by_fold, fit_temperature = calibrate.fit_by_fold, calibrate.fit_temperature

    def counted_fit(*arguments, **options):
        applied.append(fit_by_fold(*arguments, **options))
        return applied[-1]

    def counted_temperature(probabilities, targets):
        temperatures.append(len(targets))
        return fit_temperature(probabilities, targets)

    monkeypatch.setattr(calibrate, "fit_by_fold", counted_fit)
    monkeypatch.setattr(calibrate, "fit_temperature", counted_temperature)
    config = digits("competition.metric=log_loss", "train.folds=3")
    run_dir = commands.train(config, "0")
    assert len(applied) == 1 and list(applied[0].temperatures) == ["0"]  # fold 0's, fitted once
    assert Run(run_dir).read_calibration() == applied[0]
    fitted_in_training = len(temperatures)
    commands.predict(config, run_dir.name)
    assert len(applied) == 1 and len(temperatures) == fitted_in_training  # prediction fits nothing


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


def test_selection_needs_the_task():
    """Choosing and blending kept views average them as the task's predictions: without the task, a
    multi-label or regression run would be averaged and scored as single-label probabilities."""
    from kit.predict import selection

    kept = {"last": np.full((2, 3, 4), 0.25)}
    targets = [np.zeros(3, dtype=np.int64)]
    with pytest.raises(TypeError, match="task"):
        selection.blend(kept, ("last",), (0, 1))  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="positional"):  # by name only: never taken for another argument
        selection.blend(kept, ("last",), (0, 1), "probabilities", SINGLE_LABEL)  # type: ignore[misc]
    with pytest.raises(TypeError, match="task"):
        selection.choose("log_loss", [kept], targets, ["last"], 2, 0.0)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="task"):
        selection.best_alone("log_loss", [kept], targets, ["last"])  # type: ignore[call-arg]
    assert selection.blend(kept, ("last",), (0, 1), task=SINGLE_LABEL).shape == (3, 4)


def test_a_submission_needs_the_task():
    """Building, checking or writing a submission without the run's task would write single-label columns
    (or check them) for any run: the task has no default there either."""
    from kit.predict import submission

    for function in (submission.build, submission.problems, submission.check, submission.write):
        parameter = inspect.signature(function).parameters["task"]
        assert parameter.default is inspect.Parameter.empty, function.__name__


def test_a_label_table_needs_its_task():
    """Labels read without their task would be single-label class indices for any competition."""
    from kit.data.labels import LabelTable

    with pytest.raises(TypeError, match="task"):
        LabelTable(ids=["a"], paths=[], targets=np.array([0]), classes=["x"])  # type: ignore[call-arg]
