"""Which Kaggle credentials this machine holds, found as the official client finds them; never their values.

kaggle 2.2.5 authenticates in this order (KaggleApi.authenticate, kagglesdk.kaggle_env): an API token
(KAGGLE_API_TOKEN, which may also name a file holding it; then ~/.kaggle/access_token or access_token.txt),
checked with a token-introspection call and sent as `Bearer`; then the legacy username and key (kaggle.json
in the client's config folder, overridden by KAGGLE_USERNAME/KAGGLE_KEY), sent as HTTP Basic. The kit's
messages name the form it found, so a user can tell which one Kaggle refused.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import NamedTuple

SETTINGS_URL = "https://www.kaggle.com/settings/api"
TOKEN_PREFIX = "KGAT_"  # what Kaggle's settings page issues today
FORM_NAMES = ("KAGGLE_API_TOKEN", "~/.kaggle/access_token", "kaggle.json", "KAGGLE_USERNAME/KAGGLE_KEY")
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


def _legacy_key_in(path: Path) -> str:
    """The key in a kaggle.json that names both a username and a key, else ""."""
    try:
        values = json.loads(_text(path) or "{}")
    except json.JSONDecodeError:
        return ""
    if isinstance(values, dict) and values.get("username") and values.get("key"):
        return str(values["key"])
    return ""


def found() -> list[Credentials]:
    """Every credential form present, in the order the client tries them (the first one is used)."""
    forms = []
    variable = os.environ.get("KAGGLE_API_TOKEN", "")
    if variable:
        named_file = Path(variable)
        if named_file.is_file():
            forms.append(Credentials(f"KAGGLE_API_TOKEN (the file {named_file})", True, named_file))
        else:
            forms.append(Credentials("KAGGLE_API_TOKEN", True, None))
    for name in ("access_token", "access_token.txt"):
        token_file = Path.home() / ".kaggle" / name
        if _text(token_file):
            forms.append(Credentials(f"~/.kaggle/{name}", True, token_file))
            break
    environment_key = os.environ.get("KAGGLE_KEY", "")
    legacy_file = config_directory() / "kaggle.json"
    file_key = _legacy_key_in(legacy_file) if legacy_file.is_file() else ""
    if os.environ.get("KAGGLE_USERNAME") and environment_key:  # the client lets these override the file
        forms.append(
            Credentials("KAGGLE_USERNAME/KAGGLE_KEY", False, None, environment_key.startswith(TOKEN_PREFIX))
        )
    elif file_key:
        forms.append(
            Credentials(f"kaggle.json ({legacy_file})", False, legacy_file, file_key.startswith(TOKEN_PREFIX))
        )
    oauth_file = Path.home() / ".kaggle" / "credentials.json"  # `kaggle auth login` writes it; tried last
    if '"refresh_token"' in _text(oauth_file):
        forms.append(Credentials("~/.kaggle/credentials.json (kaggle auth login)", True, oauth_file))
    return forms


def readable_by_others(credentials: Credentials) -> bool:
    """A credentials file that other users can read (group or world bits set)."""
    if credentials.file is None or os.name == "nt":
        return False
    try:
        return bool(credentials.file.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH))
    except OSError:
        return False
