"""The kit's own errors: a problem the user caused and can fix, said in one line (what is wrong, where:
file, row or key, and what to do). Plain exceptions, so the layers below the command line need no
command-line library; `kit.cli` shows them as one line, without a traceback, and exits with status 1.
"""

from __future__ import annotations

from collections.abc import Sequence


class KitError(Exception):
    """A user-caused problem, shown as one line without a traceback.

    `settings`: the configuration keys the problem is about ("submission.id_column"), so that a caller can
    say where their values came from (a run's saved config: kit.run_folder.saved_settings_note) without
    reading the message."""

    def __init__(self, message: str, settings: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.message = message  # the one line, as click.ClickException names it
        self.settings = tuple(settings)


class ConfigError(KitError):
    """A competition's settings (competition.toml, `--set`, a run's saved config) that cannot be used."""
