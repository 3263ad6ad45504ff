"""Learning-rate schedules and LR-finder suggestions: pure functions of progress, floats in, floats out.

SGDR (Loshchilov & Hutter): cosine annealing restarted at the start of every cycle; cycle k lasts
cycle_len * cycle_mult**k epochs. Progress is measured in epochs (fractional, per iteration).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from kit.config import Stage


def sched_cos(start: float, end: float, position: float) -> float:
    """Cosine from `start` (position 0) to `end` (position 1)."""
    return end + (start - end) * (1 + math.cos(math.pi * position)) / 2


def cycle_ends(n_cycles: int, cycle_len: float, cycle_mult: float) -> list[float]:
    """The epoch at which each cycle ends, e.g. (3, 1, 2) -> [1, 3, 7]."""
    ends, total = [], 0.0
    for index in range(n_cycles):
        total += cycle_len * cycle_mult**index
        ends.append(total)
    return ends


def sgdr_position(epoch: float, cycle_len: float, cycle_mult: float) -> tuple[int, float]:
    """(cycle index, position 0..1 within that cycle) at fractional `epoch`."""
    index, start, length = 0, 0.0, cycle_len
    while epoch >= start + length - 1e-12:
        start += length
        length *= cycle_mult
        index += 1
    return index, (epoch - start) / length


def sgdr_lr(epoch: float, lr_max: float, cycle_len: float, cycle_mult: float, lr_min: float = 0.0) -> float:
    """Cosine annealing with warm restarts: lr_max at every cycle start, falling to lr_min at its end."""
    _, position = sgdr_position(epoch, cycle_len, cycle_mult)
    return sched_cos(lr_max, lr_min, position)


def one_cycle_lr(
    fraction: float,
    lr_max: float,
    warmup: float = 0.25,
    start_divisor: float = 25.0,
    end_divisor: float = 1e4,
) -> float:
    """Warm-up from lr_max/start_divisor to lr_max over `warmup` of training.

    Then cosine down to lr_max/end_divisor.
    """
    if fraction < warmup:
        return sched_cos(lr_max / start_divisor, lr_max, fraction / warmup)
    return sched_cos(lr_max, lr_max / end_divisor, (fraction - warmup) / (1 - warmup))


WARMUP_START = 0.01  # warm-up begins at lr/100 (fastai 0.7's CosAnneal)


def warmup_factor(epoch: float, warmup_epochs: float, start: float = WARMUP_START) -> float:
    """The multiple of the scheduled rate during a warm-up of `warmup_epochs`: linear from `start` to 1."""
    if warmup_epochs <= 0 or epoch >= warmup_epochs:
        return 1.0
    return start + (1 - start) * max(0.0, epoch) / warmup_epochs


@dataclass(frozen=True)
class StageSchedule:
    """The learning rate of every layer group at any point of one recipe stage.

    One object answers for the training loop (which sets the optimizer's rates from `factor`) and for the
    report (which draws `rates`), so the plot shows what ran. `base_rates` are the peak rates per layer
    group for the images each step really sees (kit.train.batch_size scales them after a halved batch or
    with several processes); progress is in epochs, fractional.
    """

    kind: str  # "sgdr" or "one_cycle"
    n_cycles: int
    cycle_len: float  # epochs in the first cycle
    cycle_mult: float
    base_rates: tuple[float, ...]
    warmup: float = 0.0  # fraction of the first cycle (of the whole stage for one-cycle) warming up

    @property
    def epochs(self) -> float:
        return cycle_ends(self.n_cycles, self.cycle_len, self.cycle_mult)[-1]

    def cycle_end_epochs(self) -> list[float]:
        """Where each SGDR cycle ends (snapshots are taken there)."""
        return cycle_ends(self.n_cycles, self.cycle_len, self.cycle_mult)

    def factor(self, epoch: float) -> float:
        """The multiple of the peak rates at `epoch` (0 .. epochs), warm-up included (SGDR)."""
        if self.kind == "sgdr":
            warming = warmup_factor(epoch, self.warmup * self.cycle_len)
            return warming * sgdr_lr(epoch, 1.0, self.cycle_len, self.cycle_mult)
        return one_cycle_lr(epoch / self.epochs, 1.0)  # one-cycle has its own warm-up

    def rates(self, epoch: float) -> list[float]:
        """Each layer group's learning rate at `epoch`."""
        factor = self.factor(epoch)
        return [rate * factor for rate in self.base_rates]


def for_stage(kind: str, stage: Stage, base_rates: list[float], warmup: float) -> StageSchedule:
    """A recipe stage's schedule (kind: train.schedule) at these peak rates; `warmup`: Config.stage_warmup."""
    return StageSchedule(kind, stage.n_cycles, stage.cycle_len, stage.cycle_mult, tuple(base_rates), warmup)


def lr_find_rates(start: float = 1e-7, end: float = 10.0, steps: int = 100) -> list[float]:
    """Exponentially spaced learning rates for the range test."""
    return [start * (end / start) ** (step / (steps - 1)) for step in range(steps)]


def smooth(losses: list[float], beta: float = 0.98) -> list[float]:
    """Exponential moving average with bias correction (as fastai's recorder does)."""
    average, result = 0.0, []
    for step, loss in enumerate(losses, start=1):
        average = beta * average + (1 - beta) * loss
        result.append(average / (1 - beta**step))
    return result


def diverged(smoothed: list[float], factor: float = 4.0) -> bool:
    """The range test stops once the smoothed loss exceeds `factor` times its minimum so far."""
    return len(smoothed) > 1 and (not math.isfinite(smoothed[-1]) or smoothed[-1] > factor * min(smoothed))


def suggest_lr(rates: list[float], losses: list[float]) -> tuple[float, str]:
    """A learning rate from a range test, and why.

    The steepest descent of the smoothed loss (on a log-LR axis), capped at a tenth of the LR of the
    minimum loss: the lesson's rule of thumb is "an order of magnitude below where the loss is lowest".
    """
    if len(rates) != len(losses) or len(rates) < 3:
        raise ValueError("suggest_lr needs at least 3 (rate, loss) pairs of equal length")
    smoothed = smooth(losses)
    finite = [i for i, loss in enumerate(smoothed) if math.isfinite(loss)]
    lowest = min(finite, key=lambda i: smoothed[i])
    tenth_of_minimum = rates[lowest] / 10
    # The first tenth of the points is the moving average warming up on a few noisy batches: a chance
    # dip there is not a descent (fastai's plot skips its first 10 points for the same reason).
    first = max(1, len(rates) // 10)
    candidates = range(first, lowest)
    if not candidates:
        return max(
            rates[0], tenth_of_minimum
        ), f"one tenth of the LR at the minimum loss ({rates[lowest]:.2g})"
    slope = {
        i: (smoothed[i + 1] - smoothed[i - 1]) / (math.log(rates[i + 1]) - math.log(rates[i - 1]))
        for i in candidates
    }
    steepest = min(candidates, key=slope.__getitem__)
    if rates[steepest] <= tenth_of_minimum:
        return rates[steepest], f"steepest descent of the smoothed loss (minimum at {rates[lowest]:.2g})"
    return (
        tenth_of_minimum,
        f"one tenth of the LR at the minimum loss ({rates[lowest]:.2g}); steepest at {rates[steepest]:.2g}",
    )
