"""Resume points: fold-K/resume.pt, everything needed to continue a fold after its last completed epoch
(written atomically at the end of every epoch, removed when the fold is done), and a fold restored from it.

A trick's state travels under its name (`Trick.state_dict`), so this file does not grow with the tricks.
A damaged, tampered or foreign resume point is one line naming it and the fix.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch.optim import Optimizer
from tqdm import tqdm

from kit import distributed, models
from kit.errors import KitError
from kit.train.stage import FoldState, PreparedStage
from kit.train.tricks import Trick

FIX = "delete it to train fold {fold} again from its start (`make resume` then does), or start a new run"
KEYS = {
    "model",
    "optimizer",
    "batch_size",
    "stage_index",
    "epoch",
    "history",
    "best_score",
    "snapshots_taken",
    "meta",
    "tricks",
}


def save(
    state: FoldState, prepared: PreparedStage, stage_index: int, epoch: int, tricks: Sequence[Trick]
) -> None:
    """The resume point after `epoch` of stage `stage_index` (rank 0 calls it)."""
    point = {
        "model": models.unwrap(state.model).state_dict(),
        "optimizer": prepared.optimizer.state_dict(),
        "batch_size": prepared.batch_size,
        "stage_index": stage_index,
        "epoch": epoch,
        "history": state.history,
        "best_score": state.best_score,
        "snapshots_taken": state.snapshots_taken,
        "meta": state.meta,
        "tricks": {trick.name: trick.state_dict() for trick in tricks},
    }
    models.save_checkpoint(point, state.folder.resume_point)


def read(state: FoldState, stages: int) -> dict:
    """A resume point as `save` wrote it; a damaged or tampered one is one line with the fix."""
    path, fix = state.folder.resume_point, FIX.format(fold=state.fold)
    point = models.load_checkpoint(path, fix)
    missing = sorted(KEYS - set(point))
    if missing:
        raise KitError(f"{path}: not a resume point (no {', '.join(missing)}); {fix}")
    if not (isinstance(point["stage_index"], int) and 0 <= point["stage_index"] < stages):
        raise KitError(f"{path}: stage {point['stage_index']!r} is not one of the run's; {fix}")
    return point


def restore(state: FoldState, stages: int, tricks: Sequence[Trick]) -> int:
    """Continue the fold from its resume point when it has one (rank 0 reads it and tells the others):
    the model, history and tricks as they were. Returns the stage to start at (0 without a point)."""
    if distributed.is_main() and state.folder.resume_point.exists():
        state.resume = read(state, stages)
    state.resume = distributed.broadcast_object(state.resume)
    if state.resume is None:
        return 0
    path, fix = state.folder.resume_point, FIX.format(fold=state.fold)
    if state.resume["meta"] != state.meta:
        raise KitError(f"{path} was made for another model or class list")
    try:
        state.model.load_state_dict(state.resume["model"])
    except RuntimeError:  # tensors of other shapes: not this run's model
        raise KitError(f"{path}: its weights do not fit the run's model; {fix}") from None
    for trick in tricks:
        if trick.name not in state.resume["tricks"]:  # a setting changed since the point was written
            raise KitError(f"{path}: no '{trick.name}' state to resume; {fix}")
        trick.load_state_dict(state.resume["tricks"][trick.name])
    state.history, state.best_score = state.resume["history"], state.resume["best_score"]
    state.snapshots_taken = state.resume["snapshots_taken"]
    if distributed.is_main():
        point = state.resume
        tqdm.write(f"fold {state.fold}: resuming stage {point['stage_index']} after epoch {point['epoch']}")
    return state.resume["stage_index"]


def first_epoch(state: FoldState, stage_index: int, optimizer: Optimizer) -> int:
    """The epoch a stage starts at: after the resume point's when it was written in this stage (whose
    optimizer state then continues), else 0."""
    if state.resume is None or state.resume["stage_index"] != stage_index:
        return 0
    optimizer.load_state_dict(state.resume["optimizer"])
    return state.resume["epoch"]
