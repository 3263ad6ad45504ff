"""The Makefile is the menu: every target says what it does (`make` lists the `##` lines), and every
`kit` command has a target."""

from __future__ import annotations

import re
import subprocess

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


def test_make_help_lists_the_kaggle_commands():
    help_run = subprocess.run(["make", "-s", "help"], cwd=REPO, capture_output=True, text=True, check=True)
    for target in ("download", "files", "leaderboard", "submit", "ledger", "config", "test-fast"):
        assert re.search(rf"^  make {target} +\S", help_run.stdout, flags=re.MULTILINE), target
