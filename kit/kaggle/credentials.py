"""Which Kaggle credentials this machine holds, found by asking the official client; never their values.

kaggle 2.2.5 authenticates in this order (KaggleApi.authenticate): an API token, the one kagglesdk's
`get_access_token_from_env` finds (KAGGLE_API_V1_TOKEN inside a Kaggle notebook, then KAGGLE_API_TOKEN, which
may name a file holding it, then ~/.kaggle/access_token or access_token.txt), checked with a
token-introspection call and sent as `Bearer`; then the legacy username and key, read key by key from
kaggle.json in the client's config folder and then from KAGGLE_USERNAME/KAGGLE_KEY, which override it
(`read_config_file`, then `read_config_environment`), sent as HTTP Basic; then ~/.kaggle/credentials.json
(`kaggle auth login`). The kit asks those same functions, so it finds what the client will use, and its
messages name the form, so a user can tell which one Kaggle refused.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import stat
from pathlib import Path
from typing import NamedTuple

SETTINGS_URL = "https://www.kaggle.com/settings/api"
TOKEN_PREFIX = "KGAT_"  # what Kaggle's settings page issues today
FORM_NAMES = (
    "KAGGLE_API_V1_TOKEN (in a Kaggle notebook)",
    "KAGGLE_API_TOKEN",
    "~/.kaggle/access_token",
    "KAGGLE_USERNAME/KAGGLE_KEY (each overriding kaggle.json's)",
    "kaggle.json",
    "~/.kaggle/credentials.json (kaggle auth login)",
)
IN_ORDER = ", ".join(FORM_NAMES)


class Credentials(NamedTuple):
    """One credential form that is present.

    name: where it is, for messages ("KAGGLE_API_TOKEN", "kaggle.json (/home/me/.kaggle/kaggle.json)").
    token: an API token (Bearer) rather than the legacy key (Basic).
    file: the file holding it, if any.
    token_as_key: a legacy key that is in fact a KGAT_ token, which Kaggle refuses as Basic auth.
    """

    name: str
    token: bool
    file: Path | None
    token_as_key: bool = False


def config_directory() -> Path:
    """Where the client looks for kaggle.json: KaggleApi.config_dir, worked out again (the client fixes it
    when its module is imported, so a later KAGGLE_CONFIG_DIR would be missed)."""
    configured = os.environ.get("KAGGLE_CONFIG_DIR")
    if configured:
        return Path(configured)
    legacy = Path.home() / ".kaggle"
    if legacy.exists():
        return legacy
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "kaggle"


def _text(path: Path) -> str:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return ""


def _token() -> Credentials | None:
    """The API token the client will try, as kagglesdk finds it (only the first one is ever tried)."""
    from kagglesdk.kaggle_env import KAGGLE_API_V1_TOKEN_PATH, get_access_token_from_env

    token, source = get_access_token_from_env()
    if not token:
        return None
    if source == KAGGLE_API_V1_TOKEN_PATH:
        named = Path(os.environ[KAGGLE_API_V1_TOKEN_PATH])
        return Credentials(f"{KAGGLE_API_V1_TOKEN_PATH} (the file {named})", True, named)
    if source == "KAGGLE_API_TOKEN":
        named = Path(os.environ["KAGGLE_API_TOKEN"])
        if named.is_file():
            return Credentials(f"KAGGLE_API_TOKEN (the file {named})", True, named)
        return Credentials("KAGGLE_API_TOKEN", True, None)
    for name in ("access_token", "access_token.txt"):
        token_file = Path.home() / ".kaggle" / name
        if _text(token_file):
            return Credentials(f"~/.kaggle/{name}", True, token_file)
    return Credentials(str(source), True, None)


def legacy_values(api) -> dict:
    """The client's own merge of kaggle.json and the KAGGLE_* variables (the variables win, key by key)."""
    with contextlib.redirect_stdout(io.StringIO()):  # read_config_file prints its own permission warning
        return api.read_config_environment(api.read_config_file(quiet=True))


def _legacy(api) -> Credentials | None:
    """The legacy username and key, as the client merges them, named by where each part came from."""
    if breaks_the_client(api):
        return None
    values = legacy_values(api)
    if api.CONFIG_NAME_USER not in values or api.CONFIG_NAME_KEY not in values:
        return None
    config_file = Path(api.config)
    parts = []
    for part, variable in ((api.CONFIG_NAME_USER, "KAGGLE_USERNAME"), (api.CONFIG_NAME_KEY, "KAGGLE_KEY")):
        parts.append(variable if variable in os.environ else f"{part} in kaggle.json")
    if all(part.startswith("KAGGLE_") for part in parts):
        name, file = "KAGGLE_USERNAME/KAGGLE_KEY", None
    elif not any(part.startswith("KAGGLE_") for part in parts):
        name, file = f"kaggle.json ({config_file})", config_file
    else:
        name, file = f"{' and '.join(parts)} ({config_file})", config_file
    return Credentials(name, False, file, str(values[api.CONFIG_NAME_KEY]).startswith(TOKEN_PREFIX))


def _oauth() -> Credentials | None:
    from kagglesdk.kaggle_creds import KaggleCredentials

    oauth_file = Path(os.path.expanduser(KaggleCredentials.DEFAULT_CREDENTIALS_FILE))
    if '"refresh_token"' in _text(oauth_file):
        return Credentials(
            f"{KaggleCredentials.DEFAULT_CREDENTIALS_FILE} (kaggle auth login)", True, oauth_file
        )
    return None


def found(api) -> list[Credentials]:
    """Every credential form the client `api` would try, in its order (the first usable one is used)."""
    return [form for form in (_token(), _legacy(api), _oauth()) if form is not None]


def malformed_config(api) -> str | None:
    """What is wrong with a kaggle.json the client cannot read (it skips such a file without a word)."""
    config_file = Path(api.config)
    if not config_file.is_file():
        return None
    try:
        values = json.loads(config_file.read_text())
    except UnicodeDecodeError:
        return f"{config_file} is not UTF-8 text"
    except json.JSONDecodeError as error:
        return f"{config_file} is not valid JSON (line {error.lineno}, column {error.colno}: {error.msg})"
    except OSError as error:
        return f"{config_file} cannot be read ({error.strerror})"
    if not isinstance(values, dict):
        return f"{config_file} holds a JSON {type(values).__name__}, not an object"
    return None


def breaks_the_client(api) -> bool:
    """A kaggle.json holding JSON that is not an object: the client reads it, then fails with a TypeError."""
    return (malformed_config(api) or "").endswith("not an object")


def readable_by_others(credentials: Credentials) -> bool:
    """A credentials file that other users can read (group or world bits set)."""
    if credentials.file is None or os.name == "nt":
        return False
    try:
        return bool(credentials.file.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH))
    except OSError:
        return False
