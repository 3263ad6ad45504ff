"""A competition's hooks.py: at most one small file of fixed, optional, documented functions.

Everything else about a competition is data (competition.toml). A public function in hooks.py whose
name is not a known hook is an error, so a typo cannot be silently ignored.
"""

from __future__ import annotations

import importlib.util
import typing

from kit.config import Config
from kit.errors import ConfigError

# hooks.py: the fixed, optional functions a competition may define (name -> what it is for).
HOOKS = {
    "download": (
        "download(raw_dir: Path) -> None: build the raw data locally instead of downloading from Kaggle"
    ),
    "score": "score(submission: pd.DataFrame, raw_dir: Path) -> dict[str, float]: a local leaderboard; "
    "when defined, `kit submit` scores the file instead of uploading it",
    "groups": "groups(ids: list[str], raw_dir: Path) -> list[str]: each training image's group (patient, "
    "animal, scene), in the order of ids; folds never split a group (used when data.group_column is empty)",
}


def load_hooks(config: Config) -> dict[str, typing.Callable]:
    """The functions of competitions/<name>/hooks.py, refusing any public name that is not a known hook."""
    path = config.directory / "hooks.py"
    if not path.exists():
        return {}
    spec = importlib.util.spec_from_file_location(f"kit_hooks_{config.name.replace('-', '_')}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    found = {}
    for name, value in vars(module).items():
        if (
            callable(value)
            and not name.startswith("_")
            and getattr(value, "__module__", None) == module.__name__
        ):
            if name not in HOOKS:
                raise ConfigError(
                    f"{path}: unknown hook '{name}'; allowed: {', '.join(HOOKS)} (prefix helpers with _)"
                )
            found[name] = value
    return found
