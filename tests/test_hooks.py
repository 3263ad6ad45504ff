"""hooks.py: only the documented functions, loaded by name; anything else is refused in one line."""

from __future__ import annotations

import pytest

from kit.competitions import load_competition
from kit.errors import ConfigError
from kit.hooks import HOOKS, load_hooks


def test_digits_hooks_are_the_documented_ones(project):
    assert set(load_hooks(load_competition("digits"))) == {"download", "score"} <= set(HOOKS)


def test_an_unknown_public_function_is_refused_and_helpers_are_allowed(project):
    hooks = project / "competitions" / "digits" / "hooks.py"
    hooks.write_text(hooks.read_text() + "\n\ndef _helper():\n    return 1\n")
    assert "_helper" not in load_hooks(load_competition("digits"))
    hooks.write_text(hooks.read_text() + "\n\ndef scroe(submission, raw_dir):\n    return {}\n")
    with pytest.raises(ConfigError) as error:
        load_hooks(load_competition("digits"))
    assert "unknown hook 'scroe'" in error.value.message and "download, score" in error.value.message
