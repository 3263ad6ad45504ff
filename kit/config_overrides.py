"""`--set key=value` overrides: parsed (the value read as TOML) and applied to a TOML-shaped table before
it is built and checked (kit.config_build), so an override passes exactly the checks a file does."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import tomllib

from kit.config import SECTIONS
from kit.errors import ConfigError


def parse_override(text: str) -> tuple[str, Any]:
    """'train.lr=3e-3' -> ('train.lr', 0.003); the value is read as TOML, else as a string."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: write key=value, e.g. --set train.epochs=2")
    key, raw_value = (part.strip() for part in text.split("=", 1))
    try:
        value = tomllib.loads(f"value = {raw_value}")["value"]
    except tomllib.TOMLDecodeError:
        value = raw_value
    return key, value


def owning_sections(key: str) -> list[str]:
    """The sections that have a key of this bare name, e.g. 'lr' -> ['train']."""
    return [name for name, cls in SECTIONS.items() if key in {item.name for item in dataclasses.fields(cls)}]


def full_key(key: str) -> str:
    """An override's key with its section: 'epochs' -> 'train.epochs' (an unknown or ambiguous bare key, and
    a dotted one, as given)."""
    if "." in key or key == "stages":
        return key
    owners = owning_sections(key)
    return f"{owners[0]}.{key}" if len(owners) == 1 else key


def _apply_override(raw: dict, key: str, value: Any, file: Path) -> None:
    parts = key.split(".")
    if parts == ["stages"]:  # a whole recipe, e.g. stages=[{cycle_len=2}]; [] means one plain stage
        raw["stages"] = value
        return
    if len(parts) == 1:  # a bare key: find its section
        owners = owning_sections(parts[0])
        if len(owners) > 1:
            raise ConfigError(
                f"--set {key}: ambiguous; write {' or '.join(f'{owner}.{key}' for owner in owners)}"
            )
        if not owners:
            raise ConfigError(f"--set {key}: unknown key; write section.key, sections: {', '.join(SECTIONS)}")
        parts = [owners[0], parts[0]]
    if parts[0] == "stages" and len(parts) == 3 and parts[1].isdigit():
        stages = raw.get("stages", [])
        if int(parts[1]) >= len(stages):
            raise ConfigError(f"--set {key}: {file} has {len(stages)} stages")
        stages[int(parts[1])][parts[2]] = value
    elif len(parts) == 2 and parts[0] in SECTIONS:
        raw.setdefault(parts[0], {})[parts[1]] = value
    else:
        raise ConfigError(f"--set {key}: write section.key or stages.N.key; sections: {', '.join(SECTIONS)}")


def with_overrides(raw: dict, overrides: typing.Sequence[str], path: Path) -> dict:
    """A TOML-shaped dict (a competition.toml, or a run's saved config) with `--set` overrides applied."""
    for text in overrides:
        _apply_override(raw, *parse_override(text), path)
    return raw
