"""A competition's hooks.py: at most one small file of fixed, optional, documented functions.

Everything else about a competition is data (competition.toml). A public function in hooks.py whose
name is not a known hook is an error, so a typo cannot be silently ignored.
"""

from __future__ import annotations

import importlib.util
import typing

from kit.config import Config
from kit.config_build import utf8_text
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
    try:
        spec.loader.exec_module(module)
    except SyntaxError as error:  # another encoding (without a coding line), or Python that does not parse
        if "codec can't decode" in str(error) or "null bytes" in str(error):
            utf8_text(path)  # the one line naming the encoding and the fix
        raise ConfigError(f"{path}, line {error.lineno}: {error.msg}; fix the Python there") from None
    except ModuleNotFoundError as error:
        raise ConfigError(
            f"{path} imports {error.name!r}, which is not installed: `.venv/bin/pip install` it (and add it "
            "to pyproject.toml), or import it inside the hook that needs it"
        ) from None
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
