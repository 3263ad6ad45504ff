"""Which competitions there are (folders of competitions/ holding a competition.toml) and which one a
name on the command line means: a folder name, a Kaggle slug, or an unambiguous prefix of either."""

from __future__ import annotations

import typing

import tomllib

from kit import paths
from kit.config import Config
from kit.config_build import load_config, utf8_text
from kit.errors import ConfigError


def competition_names() -> list[str]:
    return sorted(p.parent.name for p in paths.competitions_dir().glob("*/competition.toml"))


def _kaggle_slug(name: str) -> str:
    """The competition's Kaggle slug; "" when it has none, or when its file cannot be read (that file's
    own error is for a command on that competition, not for every command)."""
    try:
        slug = tomllib.loads(utf8_text(paths.competition_file(name))).get("competition", {}).get("kaggle", "")
    except (ConfigError, tomllib.TOMLDecodeError, AttributeError):
        return ""
    return slug if isinstance(slug, str) else ""


def resolve_name(query: str) -> str:
    """A folder name, a Kaggle slug, or an unambiguous prefix of either -> the folder name."""
    names = competition_names()
    if not query.strip():  # "" is a prefix of every name, and the slug of every competition without one
        raise ConfigError(f"the competition's name is empty; give one of: {', '.join(names) or '(none)'}")
    slugs = {name: _kaggle_slug(name) for name in names}
    exact = [name for name in names if query in (name, slugs[name])]
    if exact:
        return exact[0]
    candidates = [name for name in names if name.startswith(query) or (slugs[name] or "").startswith(query)]
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        raise ConfigError(f"competition '{query}' is ambiguous: {', '.join(candidates)}")
    raise ConfigError(f"unknown competition '{query}'; known: {', '.join(names) or '(none)'}")


def load_competition(query: str, overrides: typing.Sequence[str] = ()) -> Config:
    return load_config(paths.competition_file(resolve_name(query)), overrides)
