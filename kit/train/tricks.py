"""Training tricks as small objects handed to the loop (kit.train.loop.run_stage), in the manner of timm's
`train_one_epoch(..., mixup_fn, model_ema)`: the loop calls each trick at a few fixed points and writes its
`state_dict` into the resume point, so neither the loop nor the resume file grows with a trick.

The points, each optional (`Trick` does nothing at any of them):
  on_stage_start(view)          the stage is ready (its optimizer, batches and schedule made)
  on_step(view)                 after an optimizer step (`view.step` already counts it)
  on_snapshot(view, number)     the model was just saved as snapshot `number` (rank 0 and the others alike)
  on_epoch_end(view, record)    after validation; may add keys to the epoch's history `record`
  on_stage_end(view)            the stage's last step is done and its final weights saved
  state_dict() / load_state_dict(state)   what a resumed run needs to continue as if never stopped

`view` is a `StageView`: the config, the fold's state, the prepared stage, the step counters, validation.
Pseudo-labels are not a trick: they are a stage's input (kit.train.pseudo_labels), made before it starts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from kit import distributed, models
from kit.config import Config, Stage
from kit.device import device, resolve_precision
from kit.train.stage import FoldState, PreparedStage


@dataclass
class StageView:
    """What a trick sees of the running stage: the settings, the fold, the prepared stage and where the
    schedule is (steps counted over the stage; `step` includes the one just taken)."""

    config: Config
    stage_index: int
    state: FoldState
    prepared: PreparedStage
    steps_per_epoch: int
    total_steps: int
    step: int
    validate: Callable[[nn.Module], tuple[float, float]]  # validation loss and metric of a model
    # Set by a trick (kit.train.stopping) to end the stage after the running epoch, and why.
    stop_reason: str | None = None

    @property
    def stage(self) -> Stage:
        return self.config.stages[self.stage_index]


class Trick:
    """A trick that does nothing; subclasses override the points they need."""

    name = "trick"  # its key in the resume point: unique among the tricks of a run
    # True while the trick ends a stage whose loss diverged (kit.train.stopping), instead of the loop's error
    ends_diverged_stage = False

    def on_stage_start(self, view: StageView) -> None:
        pass

    def on_step(self, view: StageView) -> None:
        pass

    def on_snapshot(self, view: StageView, number: int) -> None:
        pass

    def on_epoch_end(self, view: StageView, record: dict) -> None:
        pass

    def on_stage_end(self, view: StageView) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class MovingAverage(Trick):
    """The weights' moving average (train.ema_decay, timm's ModelEmaV3), updated after every step; validated
    each epoch beside the model (history keys ema_valid_loss, ema_<metric>) and saved beside its snapshots
    (ema-snapshot-K.pt) and its final weights (ema.pt), so predict.weights = "ema" can predict with it."""

    name = "ema"

    def __init__(self, model: nn.Module, decay: float):
        self.average = models.weights_average(model, decay)
        self.updates = 0  # steps averaged so far: timm's decay warms up with it

    def on_step(self, view: StageView) -> None:
        self.updates += 1
        self.average.update(view.state.model, step=self.updates)

    def on_snapshot(self, view: StageView, number: int) -> None:
        if distributed.is_main():
            models.save_weights(self.average.module, view.state.folder.ema_snapshot(number), view.state.meta)

    def on_epoch_end(self, view: StageView, record: dict) -> None:
        metric = view.config.competition.metric
        record["ema_valid_loss"], record[f"ema_{metric}"] = view.validate(self.average.module)

    def on_stage_end(self, view: StageView) -> None:
        if distributed.is_main():
            models.save_weights(self.average.module, view.state.folder.ema_weights(), view.state.meta)

    def state_dict(self) -> dict:
        return {"weights": self.average.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.average.module.load_state_dict(state["weights"])
        self.updates = state["updates"]


class MixingSwitch(Trick):
    """Mixup/CutMix (the stage's timm Mixup, made by kit.train.stage) switched off for the stage's last
    mix_off_epochs: the model ends on unmixed images. Set after each step for the next one."""

    name = "mixing"

    def on_stage_start(self, view: StageView) -> None:
        self.until_step = view.total_steps - round(view.stage.mix_off_epochs * view.steps_per_epoch)
        self._switch(view)

    def on_step(self, view: StageView) -> None:
        self._switch(view)

    def _switch(self, view: StageView) -> None:
        if view.prepared.mixup is not None:
            view.prepared.mixup.mixup_enabled = view.step < self.until_step


class LossScaling(Trick):
    """fp16 training's loss scaler (torch.amp.GradScaler: fp16 gradients underflow unscaled), one per fold,
    handed to every stage's training step; its scale carries over stages and resumes, so that no stage
    starts again from the first scale and skips the steps that finding it costs."""

    name = "loss_scaler"

    def __init__(self, compute: torch.device):
        self.scaler = torch.amp.GradScaler(compute.type)

    def on_stage_start(self, view: StageView) -> None:
        view.prepared.scaler = self.scaler

    def state_dict(self) -> dict:
        return self.scaler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.scaler.load_state_dict(state)


def for_fold(config: Config, model: nn.Module) -> list[Trick]:
    """The tricks the config asks for, made once per fold (a moving average lives across its stages)."""
    tricks: list[Trick] = []
    if resolve_precision(config.train.precision) == "fp16":
        tricks.append(LossScaling(device()))
    if any(stage.mixup or stage.cutmix for stage in config.stages):
        tricks.append(MixingSwitch())
    if config.train.ema_decay:
        tricks.append(MovingAverage(model, config.train.ema_decay))
    return tricks
