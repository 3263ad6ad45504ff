"""Which rule a run's test prediction follows: the choice made on OOF after training (metrics.json's
"prediction": weight files and views, kit.predict.selection), or the config's own rule when `kit predict
--set predict.KEY=...` changes a setting that choice was made under. The README promises that `--set`
changes the settings for that prediction; a recorded choice silently winning over it would predict with
a rule the user did not ask for, and submission.json would record the wrong one.

Pure functions of the saved and the overridden predict settings (plain dataclasses).
"""

from __future__ import annotations

from dataclasses import dataclass

from kit.config import PredictSection
from kit.errors import KitError

# Settings the recorded choice was made under: changing one at prediction makes the config's rule predict
# (the weight files of predict.weights / snapshot_ensemble, with every view of predict.tta).
CHOICE_KEYS = ("tta", "weights", "snapshot_ensemble", "select")
# Settings only training can apply: the choice was scored on the OOF of that run.
TRAINING_ONLY_KEYS = ("min_gain",)


@dataclass(frozen=True)
class AppliedRule:
    """The rule a prediction follows: `chosen` (metrics.json's "prediction") or None for the config's
    rule; `changed`: the predict keys `--set` changed that the choice was made under."""

    chosen: dict | None
    changed: tuple[str, ...]

    def describe(self, config_rule: str) -> str:
        """The rule in words, as submission.json records it (`config_rule`: kit.predict.inference's)."""
        if self.chosen is not None:
            return (
                f"chosen on OOF after training (predict.select): {' + '.join(self.chosen['weights'])} "
                f"x {' + '.join(self.chosen['view_names'])}"
            )
        if self.changed:
            keys = ", ".join(f"predict.{key}" for key in self.changed)
            return f"{config_rule} (set at prediction: {keys}; OOF choice after training not used)"
        return config_rule


def applied_rule(saved: PredictSection, now: PredictSection, chosen: dict | None, where: str) -> AppliedRule:
    """The recorded choice when the predict settings it was made under are unchanged, else the config's
    rule; a setting only training can apply is refused in one line naming it (`where`: the run's
    config.json). `saved`: the run's settings as trained; `now`: with `kit predict --set`."""
    for key in TRAINING_ONLY_KEYS:
        if getattr(saved, key) != getattr(now, key) and chosen is not None:
            raise KitError(
                f"--set predict.{key}={getattr(now, key)!r}: the weights and views of this run were chosen "
                f"on OOF after training with predict.{key} = {getattr(saved, key)!r} ({where}); "
                f"retrain with `--set predict.{key}=...`, or predict with `--set predict.select=false`"
            )
    if now.select and not saved.select:
        raise KitError(
            "--set predict.select=true: the run was trained with predict.select = false "
            f"({where}), so no choice was made on its OOF; retrain with predict.select = true"
        )
    changed = tuple(key for key in CHOICE_KEYS if getattr(saved, key) != getattr(now, key))
    if chosen is None or changed:
        return AppliedRule(None, changed if chosen is not None else ())
    return AppliedRule(chosen, ())
