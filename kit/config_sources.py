"""Where each resolved setting came from: `kit config`'s (key, value, source) rows, the settings that
differ from the kit's defaults (a run's report), and the flat `section.key` view both are built on."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

from kit.config import SECTIONS, Config, Stage
from kit.config_build import load_config, read_toml
from kit.config_overrides import full_key, parse_override


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """{'train': {'lr': 1}, 'stages': [{'lr': 2}]} -> {'train.lr': 1, 'stages.0.lr': 2}.

    Other lists stay whole.
    """
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in flatten(item, f"{prefix}{key}.").items()}
    if isinstance(value, (list, tuple)) and value and all(isinstance(item, dict) and item for item in value):
        return {
            k: v for index, item in enumerate(value) for k, v in flatten(item, f"{prefix}{index}.").items()
        }
    return {prefix.rstrip("."): list(value) if isinstance(value, tuple) else value}


def _resolved(config: Config) -> dict[str, Any]:
    return flatten({key: value for key, value in config.to_dict().items() if key not in ("name", "path")})


def changed_settings(config: Config) -> list[tuple[str, Any, Any]]:
    """Every resolved key whose value is not the kit's default, as (key, value, default); a stage's keys are
    compared with a default Stage's (`stages.N.mixup` against Stage().mixup)."""
    defaults = flatten({name: dataclasses.asdict(cls()) for name, cls in SECTIONS.items()})
    stage_defaults = flatten(dataclasses.asdict(Stage()))
    rows = []
    for key, value in _resolved(config).items():
        parts = key.split(".")
        default = stage_defaults.get(".".join(parts[2:])) if parts[0] == "stages" else defaults.get(key)
        if parts[0] == "stages" and parts[2] == "pseudo_label" and len(parts) > 3:
            default = None  # a stage without pseudo-labels has none of its keys
        if value != (list(default) if isinstance(default, tuple) else default):
            rows.append((key, value, default))
    return rows


def value_sources(path: Path, overrides: typing.Sequence[str] = ()) -> list[tuple[str, Any, str]]:
    """Every resolved key of a competition as (key, value, source), source being "default", "toml" or "--set".

    A key is "--set" when an override names it (or a table holding it, such as `stages`), "toml" when
    the file states it, else "default".
    """
    config = load_config(path, overrides)
    from_file = flatten(read_toml(path))
    overridden = [full_key(parse_override(text)[0]) for text in overrides]
    rows = []
    for key, value in _resolved(config).items():
        if any(key == name or key.startswith(name + ".") for name in overridden):
            source = "--set"
        elif key in from_file or (key.startswith("stages.") and "stages" in from_file):
            source = "toml"
        else:
            source = "default"
        rows.append((key, value, source))
    return rows
