"""The Makefile is the menu: every target says what it does (`make` lists the `##` lines), and every
`kit` command has a target."""

from __future__ import annotations

import re

from conftest import REPO

from kit.cli import main

MAKEFILE = (REPO / "Makefile").read_text()
TARGETS = re.findall(r"^([a-z][a-z-]*):(.*)$", MAKEFILE, flags=re.MULTILINE)


def test_every_target_has_a_help_line():
    assert {"test", "test-fast", "lint", "config", "list"} <= {name for name, _ in TARGETS}
    assert [name for name, rest in TARGETS if "## " not in rest] == []


def test_every_command_has_a_target():
    commands = set(main.commands)
    assert {"list", "config", "train", "ensemble"} <= commands
    called = set(re.findall(r"\$\(KIT\) ([a-z-]+)", MAKEFILE)) | set(
        re.findall(r"-m kit ([a-z-]+)", MAKEFILE)
    )
    assert sorted(commands - called) == []
