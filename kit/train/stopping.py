"""Stop a recipe that stops paying (train.stop_when_worse): at the end of every SGDR cycle (where snapshots
are taken) and of every stage, the fold's out-of-fold score (the epoch's validation on the fold's held-out
rows) is compared with the best of the earlier check points; when train.stop_patience + 1 check points in
a row are not better by train.min_stage_gain, the rest of that stage and the remaining stages of the fold
are skipped (a check point that is better resets the count; a diverged one stops at once). Only check
points of stages that train the body count (the first is the end of the first unfrozen cycle): head-only
stages are compared with, never counted (`may_stop`).

The patience (Keras' and fastai's early stopping have one) is for recipes whose first unfrozen cycle throws
the validation down before the later cycles recover: on digits the first unfrozen epoch scored OOF
accuracy 0.48 against the head's 0.80 and the later cycles 0.98 (docs/2026-12-03-stop-patience.md).

Checking only at a stage's end would still spend the whole harmful stage: on a five-breed photo set the
unfrozen stage is the last one and costs 4x the head stages (issue 31). The decisions here are pure
functions of plain values (scores, epochs, seconds); kit.train.loop and kit.train.cross_validation act on
them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from tqdm import tqdm

from kit import distributed, metrics
from kit.config import Config
from kit.run import snapshot_stem, stage_stem
from kit.train import schedule
from kit.train.tricks import Trick

if TYPE_CHECKING:
    from kit.train.tricks import StageView


@dataclass(frozen=True)
class Checkpoint:
    """A point where the recipe may stop: an SGDR cycle's end or a stage's end, and its OOF score."""

    stage_index: int
    stage: str
    epoch: int  # epochs into the stage, 1-based: the check follows this epoch's validation
    kind: str  # "cycle" (a cycle ended within the epoch) or "stage" (the stage's last epoch)
    score: float  # the competition's metric on the fold's held-out rows
    weights: str | None = None  # the stem of a weight file holding these weights (a snapshot), if any

    def to_dict(self) -> dict:
        return asdict(self)


def gain(score: float, best: float, higher_is_better: bool) -> float:
    """How much better `score` is than `best` (positive: better), whatever the metric's direction."""
    return score - best if higher_is_better else best - score


def pays(score: float, best: float | None, min_gain: float, higher_is_better: bool) -> bool:
    """Whether a check point's score beats the best so far by more than `min_gain` (the first always pays;
    a NaN score never does)."""
    if math.isnan(score):
        return False
    return best is None or gain(score, best, higher_is_better) > min_gain


def best_of(scores: Sequence[float], higher_is_better: bool) -> float | None:
    """The best finite score, None when there is none."""
    finite = [score for score in scores if not math.isnan(score)]
    if not finite:
        return None
    return max(finite) if higher_is_better else min(finite)


def may_stop(trains_head_only: bool, score: float) -> bool:
    """Whether a check point may stop the recipe: one in a stage that trains the body (the first such is
    the end of the first unfrozen cycle), or a diverged one (NaN) anywhere. A head-only stage's check
    points are compared with, never stop: they cost little, and a head stage that does not beat the one
    before says nothing of the unfrozen stage after it, where the gain and the cost are (digits: the
    augmented head scored 0.7847 against the precomputed head's 0.8021, and a stop there gave up the
    unfrozen stage's 0.99)."""
    return math.isnan(score) or not trains_head_only


def misses(
    scores: Sequence[float],
    min_gain: float,
    higher_is_better: bool,
    head_only: Sequence[bool] | None = None,
) -> int:
    """How many check points in a row, up to the last of these scores (in the order they were reached),
    may stop (`may_stop`; `head_only`: per check point, whether its stage trains the head only; None: none
    does) and were not better than the best before each by more than `min_gain`. A check point that is
    better resets the count to 0; a head-only one that is not is passed over (neither counted nor reset)."""
    count = 0
    for index, score in enumerate(scores):
        if pays(score, best_of(scores[:index], higher_is_better), min_gain, higher_is_better):
            count = 0
        elif head_only is None or may_stop(head_only[index], score):
            count += 1
    return count


def should_stop(
    scores: Sequence[float],
    min_gain: float,
    higher_is_better: bool,
    head_only: Sequence[bool] | None = None,
    patience: int = 0,
) -> bool:
    """Whether the recipe stops after the last of these check-point scores: it may stop there
    (`may_stop`), and either diverged (NaN: at once, whatever the patience) or is the `patience` + 1-th
    check point in a row not better than the best so far by more than `min_gain` (`misses`)."""
    if not scores:
        return False
    if head_only is not None and not may_stop(head_only[-1], scores[-1]):
        return False
    if math.isnan(scores[-1]):
        return True
    return misses(scores, min_gain, higher_is_better, head_only) > patience


def stop_at(
    scores: Sequence[float],
    min_gain: float,
    higher_is_better: bool,
    head_only: Sequence[bool] | None = None,
    patience: int = 0,
) -> int | None:
    """The index of the check point where the recipe stops (`should_stop`, asked after each check point as
    the trick asks it), None when it runs to its end."""
    for index in range(len(scores)):
        flags = None if head_only is None else head_only[: index + 1]
        if should_stop(scores[: index + 1], min_gain, higher_is_better, flags, patience):
            return index
    return None


def check_epochs(cycle_end_epochs: Sequence[float], stage_epochs: float) -> list[int]:
    """The epochs (1-based, within a stage) after whose validation the recipe is checked: each epoch in
    which an SGDR cycle ends (a cycle ending mid-epoch is checked at that epoch's end), and the last."""
    last = max(1, math.ceil(stage_epochs - 1e-9))
    found = {min(last, max(1, math.ceil(end - 1e-9))) for end in cycle_end_epochs}
    return sorted(found | {last})


def epochs_left(stage_epochs: Sequence[float], stage_index: int, epoch: int) -> float:
    """Epochs a stop after `epoch` of stage `stage_index` skips: the rest of that stage and every later
    stage (`stage_epochs`: each stage's length in epochs)."""
    rest = max(0.0, math.ceil(stage_epochs[stage_index] - 1e-9) - epoch)
    return rest + sum(math.ceil(epochs - 1e-9) for epochs in stage_epochs[stage_index + 1 :])


def seconds_saved(
    stage_epochs: Sequence[float], stage_index: int, epoch: int, epoch_seconds: Sequence[float]
) -> float:
    """The time a stop saves, estimated at the stopping stage's pace: the epochs left times the mean of
    `epoch_seconds` (that stage's epochs so far). Later stages that train the whole network cost at least
    that much; head stages after an unfrozen one are rare."""
    if not epoch_seconds:
        return 0.0
    return epochs_left(stage_epochs, stage_index, epoch) * sum(epoch_seconds) / len(epoch_seconds)


def not_better(metric: str, score: float, best: float, min_gain: float, count: int, patience: int) -> str:
    """Why a fold stopped, in a few words: the check point's figure and the best so far, and with a
    patience, how many check points in a row did not pay."""
    if count <= 1:
        start = f"OOF {metric} {score:.4f} not better than the best so far, {best:.4f},"
    else:
        start = f"{count} check points in a row not better than the best so far, {best:.4f},"
    this = "" if count <= 1 else f"this one OOF {metric} {score:.4f}; "
    return (
        f"{start} by more than train.min_stage_gain = {min_gain:g} ({this}train.stop_patience = {patience})"
    )


def stop_line(
    fold: int,
    checkpoint: Checkpoint,
    best: float,
    metric: str,
    epochs: float,
    seconds: float,
    min_gain: float,
    count: int = 1,
    patience: int = 0,
) -> str:
    """One line: where the fold stopped, the two figures, the patience and the time saved (`count`: the
    check points in a row that did not pay, this one the last)."""
    where = "its end" if checkpoint.kind == "stage" else f"the cycle ending in epoch {checkpoint.epoch}"
    if math.isnan(checkpoint.score):  # a diverged check point stops at once, whatever the patience
        why = f"the loss diverged (OOF {metric} nan; best so far {best:.4f})"
    else:
        why = not_better(metric, checkpoint.score, best, min_gain, count, patience)
    if epochs <= 0:  # the recipe's last check point: nothing is skipped, but its weights do not predict
        return (
            f"fold {fold}: stopped in stage '{checkpoint.stage}' at {where}, the recipe's last check point: "
            f"{why}; nothing left to skip: the best check point's weights predict by default"
        )
    return (
        f"fold {fold}: stopped in stage '{checkpoint.stage}' at {where}: {why}; "
        f"skipping {epochs:g} epochs (about {seconds / 60:.1f} min); train.stop_when_worse = false "
        "trains them"
    )


def stage_outcomes(
    stage_names: Sequence[str], stage_epochs: Sequence[float], trained: Sequence[dict], stop: dict | None
) -> list[dict]:
    """What happened to each stage of a fold, for the run's records (resume point, metrics.json, report,
    kit runs): "ran" (every epoch), "stopped" (ended early by the stop) or "skipped" (never started), with
    the epochs trained and, when not run to its end, why. `trained`: the fold's history records (each
    with its stage_index); `stop`: the stop as recorded (stage_index, epoch, reason), None without one."""
    outcomes = []
    for index, (name, epochs) in enumerate(zip(stage_names, stage_epochs, strict=True)):
        done = sum(1 for record in trained if record["stage_index"] == index)
        outcome = {"stage": name, "stage_index": index, "epochs": done, "of": math.ceil(epochs - 1e-9)}
        if stop is not None and index == stop["stage_index"]:  # its weights at the stop did not pay
            outcome.update(status="stopped" if done < outcome["of"] else "ran", why=stop["reason"])
        elif stop is not None and index > stop["stage_index"]:
            outcome.update(status="skipped", why=stop["reason"])
        else:
            outcome["status"] = "ran" if done >= outcome["of"] else "unfinished"
        outcomes.append(outcome)
    return outcomes


class StopWhenWorse(Trick):
    """train.stop_when_worse as a trick (kit.train.tricks): after the validation of each epoch in which an
    SGDR cycle ends, and of each stage's last epoch, the check point's OOF score is compared with the best
    of the earlier ones (`pays`); the train.stop_patience + 1-th in a row that does not pay (`should_stop`)
    sets `view.stop_reason`, and the loop ends the stage there; kit.train.cross_validation then skips the
    later stages. With `planned` (fold 0's decision, when train.stop_per_fold is off) the fold checks
    nothing and stops where fold 0 did (or never)."""

    name = "stop"

    def __init__(self, config: Config, fold: int, planned: dict | None = None):
        self.metric = config.competition.metric
        self.higher = metrics.METRICS[self.metric].higher_is_better
        self.min_gain = config.train.min_stage_gain
        self.patience = config.train.stop_patience  # check points that do not pay passed over before a stop
        self.fold = fold
        self.planned = planned  # {"stop": fold 0's stop record or None}; None: this fold decides
        self.checkpoints: list[dict] = []  # Checkpoint.to_dict() of every check point reached
        self.stop: dict | None = None  # where and why the fold stopped
        self.checks: list[int] = []
        self.snapshot: str | None = None  # the snapshot taken in the running epoch, if any

    @property
    def stopped(self) -> bool:
        return self.stop is not None

    @property
    def ends_diverged_stage(self) -> bool:
        """A diverged loss stops the fold like a check point that does not pay, once an earlier check
        point kept weights to predict with (before that, the loop's error). A fold that follows fold 0's
        decision stops on its own here too: its weights are lost, wherever fold 0 stopped (a stage at too
        high a rate that diverged in fold 0 often diverges in the others)."""
        return bool(self.checkpoints)

    def head_only(self, view: StageView) -> list[bool]:
        """Per check point reached (the running one last), whether its stage trains the head only."""
        stages = view.config.stages
        return [stages[item["stage_index"]].trains_head_only for item in self.checkpoints]

    def on_stage_start(self, view: StageView) -> None:
        stage = view.stage
        ends = schedule.cycle_ends(stage.n_cycles, stage.cycle_len, stage.cycle_mult)
        self.checks = check_epochs(ends, view.config.stage_epochs(stage))
        if self.stop is not None:  # resumed after the stop: the stage does not continue
            view.stop_reason = self.stop["reason"]

    def on_snapshot(self, view: StageView, number: int) -> None:
        self.snapshot = snapshot_stem(number)

    def on_epoch_end(self, view: StageView, record: dict) -> None:
        epoch, snapshot, self.snapshot = record["epoch"], self.snapshot, None
        if epoch not in self.checks and not math.isnan(record[self.metric]):  # a diverged epoch: at once
            return
        last_stage = view.stage_index == len(view.config.stages) - 1
        at_end = epoch == self.checks[-1]
        weights = ("last" if last_stage else stage_stem(view.stage_index)) if at_end else snapshot
        checkpoint = Checkpoint(
            view.stage_index,
            view.stage.name,
            epoch,
            "stage" if at_end else "cycle",
            record[self.metric],
            weights,
        )
        earlier = [item["score"] for item in self.checkpoints]
        self.checkpoints.append(checkpoint.to_dict())
        best = best_of(earlier, self.higher)
        scores, head_only = [*earlier, checkpoint.score], self.head_only(view)
        count = 1 if math.isnan(checkpoint.score) else misses(scores, self.min_gain, self.higher, head_only)
        patience = self.patience
        planned = (self.planned or {}).get("stop")
        here = (view.stage_index, epoch)
        follows = planned is not None and (planned["stage_index"], planned["epoch"]) == here
        leader = (self.planned or {}).get("by", "fold 0")  # fold 0, a fold's seed 0, or a refit's fold run
        if follows:  # the leader decided for this fold (or seed, or refit): it stopped here
            best, count, patience = planned["best"], planned.get("misses", 1), planned.get("patience", 0)
            why = (
                "train.stop_per_fold = false applies its decision to every fold"
                if leader == "fold 0"
                else "followed so that the weight files match the ones it trained"
            )
            reason = (
                f"{leader} stopped here (OOF {self.metric} {planned['score']:.4f}, best so far {best:.4f}, "
                f"{count} check point(s) in a row not better, train.stop_patience = {patience}); {why}"
            )
        elif self.planned is not None and not math.isnan(checkpoint.score):
            return  # fold 0 decides where the other folds stop, unless one diverges
        elif not should_stop(scores, self.min_gain, self.higher, head_only, self.patience):
            return
        elif math.isnan(checkpoint.score):
            reason = (
                f"the loss diverged (validation loss {record['valid_loss']:.4g}; best OOF {self.metric} so "
                f"far {best:.4f}): lower this stage's learning rate"
            )
        else:
            reason = not_better(self.metric, checkpoint.score, best, self.min_gain, count, self.patience)
        seconds = [item["seconds"] for item in view.state.history if item["stage_index"] == view.stage_index]
        stage_epochs = [view.config.stage_epochs(stage) for stage in view.config.stages]
        skipped = epochs_left(stage_epochs, view.stage_index, epoch)
        saved = seconds_saved(stage_epochs, view.stage_index, epoch, [*seconds, record["seconds"]])
        self.stop = {
            **checkpoint.to_dict(),
            "best": best,
            "reason": reason,
            "decided_by": leader if follows else f"fold {self.fold}",
            "patience": patience,  # train.stop_patience of the fold that decided
            "misses": count,  # check points in a row that did not pay, this one the last
            "epochs_skipped": skipped,
            "seconds_saved": round(saved, 1),
        }
        view.stop_reason = reason
        if distributed.is_main():
            line = stop_line(
                self.fold, checkpoint, best, self.metric, skipped, saved, self.min_gain, count, patience
            )
            if follows:
                line = (
                    f"fold {self.fold}: stopped in stage '{checkpoint.stage}' after epoch {epoch}, where "
                    f"fold 0 stopped (train.stop_per_fold = false; OOF here {checkpoint.score:.4f}); "
                    f"skipping {skipped:g} epochs (about {saved / 60:.1f} min)"
                )
            tqdm.write(line)

    def recipe(self, config: Config, history: list[dict]) -> dict:
        """The fold's record of its recipe (result.json "recipe"): its check points, the stop (None
        without one) and what happened to each stage (`stage_outcomes`)."""
        stage_epochs = [config.stage_epochs(stage) for stage in config.stages]
        names = [stage.name for stage in config.stages]
        return {
            "checkpoints": self.checkpoints,
            "stop": self.stop,
            "stages": stage_outcomes(names, stage_epochs, history, self.stop),
        }

    def state_dict(self) -> dict:
        return {"checkpoints": self.checkpoints, "stop": self.stop}

    def load_state_dict(self, state: dict) -> None:
        self.checkpoints, self.stop = state["checkpoints"], state["stop"]
