"""A competition.toml (or a run's saved config) read into the typed dataclasses of kit.config.

An unknown key, a value of the wrong type, a file that is not UTF-8 TOML or an impossible combination is
a one-line `ConfigError` naming the file, the key and what is allowed. `--set key=value` overrides
(kit.config_overrides) are applied to the table read here, before the same checks.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal

import tomllib

from kit.config import SECTIONS, TASK_METRICS, Config, Stage, quick_stages
from kit.config_checks import validate
from kit.config_overrides import with_overrides
from kit.errors import ConfigError

UTF8_BOM = b"\xef\xbb\xbf"  # what Windows editors (Notepad) put before UTF-8 text; TOML has no use for it
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")  # "Unicode" as Windows editors save it


def _matches(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return value in typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, option) for option in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is tuple:
        item_type = typing.get_args(annotation)[0]
        return isinstance(value, (list, tuple)) and all(_matches(item, item_type) for item in value)
    return isinstance(value, annotation)


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is Literal:
        return "one of " + ", ".join(typing.get_args(annotation))
    return str(annotation).replace("typing.", "").replace("<class '", "").replace("'>", "")


def _nested_dataclass(annotation: Any) -> type | None:
    """The dataclass a key holds as a table (e.g. Stage.pseudo_label), else None."""
    options = typing.get_args(annotation) or (annotation,)
    return next((option for option in options if dataclasses.is_dataclass(option)), None)


def _build(cls: type, table: Any, where: str, file: Path) -> Any:
    """Make a frozen dataclass from a TOML table, refusing unknown keys and wrong types."""
    if not isinstance(table, dict):
        raise ConfigError(f"{file}: [{where}] must be a table of keys")
    hints = typing.get_type_hints(cls)
    allowed = [item.name for item in dataclasses.fields(cls)]
    values = {}
    for key, value in table.items():
        if key not in allowed:
            raise ConfigError(f"{file}: unknown key '{where}.{key}'; allowed keys: {', '.join(allowed)}")
        nested = _nested_dataclass(hints[key])
        if nested is not None and isinstance(value, dict):
            values[key] = _build(nested, value, f"{where}.{key}", file)
            continue
        if not _matches(value, hints[key]):
            wanted = _type_name(hints[key])
            verb = "is not" if wanted.startswith("one of") else "should be"
            raise ConfigError(f"{file}: '{where}.{key}' = {value!r} {verb} {wanted}")
        if isinstance(value, list):
            value = tuple(value)
        if hints[key] is float and isinstance(value, int):
            value = float(value)
        values[key] = value
    return cls(**values)


def utf8_text(path: Path) -> str:
    """A configuration file's text (competition.toml, hooks.py): UTF-8, with a byte-order mark accepted;
    any other encoding, or a file that cannot be read, is one line naming the file and the fix."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path} not found: create it (`kit new`), or check the name") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a folder, not a file: move it away, write the TOML there") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot be read ({error.strerror}); fix its permissions") from None
    if data.startswith(UTF16_BOMS):
        raise ConfigError(f"{path}: saved as UTF-16; save it as UTF-8")
    try:
        return data.removeprefix(UTF8_BOM).decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}: not UTF-8 text (byte 0x{data[error.start]:02x} on line {line}, another encoding such "
            "as Latin-1); save it as UTF-8"
        ) from None


def read_toml(path: Path) -> dict:
    """A competition.toml as a TOML-shaped dict, before overrides and checks."""
    try:
        raw = tomllib.loads(utf8_text(path))
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: malformed TOML: {error}") from None
    for key in (
        "name",
        "path",
    ):  # config_from_dict drops these (a run's config.json has them); a TOML may not
        if key in raw:
            raise ConfigError(
                f"{path}: unknown top-level key '{key}'; the competition's name is its folder's name"
            )
    return raw


def load_config(path: Path, overrides: typing.Sequence[str] = ()) -> Config:
    """Read, override and validate one competition.toml."""
    return config_from_dict(with_overrides(read_toml(path), overrides, path), path)


def config_from_dict(raw: dict, path: Path) -> Config:
    """Build and validate a Config from a TOML-shaped dict (also used to reload a run's config.json)."""
    raw = {key: value for key, value in raw.items() if key not in ("name", "path")}
    allowed = [*SECTIONS, "stages"]
    for key in raw:
        if key not in allowed:
            raise ConfigError(f"{path}: unknown section '{key}'; allowed: {', '.join(allowed)}")
    sections = {name: _build(cls, raw.get(name, {}), name, path) for name, cls in SECTIONS.items()}
    task = sections["competition"].task
    # Unset keys whose default depends on the task: its first metric, and the label format.
    if "metric" not in raw.get("competition", {}):
        sections["competition"] = dataclasses.replace(sections["competition"], metric=TASK_METRICS[task][0])
    if "format" not in raw.get("submission", {}) and task != "single_label":
        sections["submission"] = dataclasses.replace(sections["submission"], format="label")
    stage_tables = raw.get("stages") or []
    if not isinstance(stage_tables, list):
        raise ConfigError(f"{path}: 'stages' must be an array of tables: [[stages]]")
    stages = tuple(_build(Stage, table, f"stages[{i}]", path) for i, table in enumerate(stage_tables))
    if not stages:  # no recipe given: one plain stage of train.epochs epochs, all layers trained
        stages = (Stage(cycle_len=float(sections["train"].epochs)),)
    if sections["train"].recipe == "quick":
        stages = quick_stages(stages)
    config = Config(name=path.parent.name, path=path, stages=stages, **sections)
    validate(config)
    return config
