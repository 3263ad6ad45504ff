"""The kit's own errors: a problem the user caused and can fix, said in one line (what is wrong, where:
file, row or key, and what to do). Plain exceptions, so the layers below the command line need no
command-line library; `kit.cli` shows them as one line, without a traceback, and exits with status 1.
"""

from __future__ import annotations


class KitError(Exception):
    """A user-caused problem, shown as one line without a traceback."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message  # the one line, as click.ClickException names it


class ConfigError(KitError):
    """A competition's settings (competition.toml, `--set`, a run's saved config) that cannot be used."""
