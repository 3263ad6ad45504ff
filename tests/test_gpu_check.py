"""scripts/gpu_check.sh, which runs only on a GPU machine: it parses, and it knows every package the kit needs
(a dependency added to pyproject.toml but not to the script would be missing on a bare GPU machine).

Its steps run at tiny sizes with `bash scripts/gpu_check.sh --cpu` (minutes: not a test).
"""

from __future__ import annotations

import re
import subprocess

import tomllib
from conftest import REPO

SCRIPT = REPO / "scripts" / "gpu_check.sh"


def listed(variable: str) -> dict[str, list[str]]:
    """The rows of PACKAGES or REQUIRED: distribution name -> its other fields."""
    text = SCRIPT.read_text()
    block = re.search(rf'^{variable}="\n(.*?)^"', text, re.S | re.M).group(1)
    return {line.split()[0]: line.split()[1:] for line in block.splitlines() if line.strip()}


def normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_script_parses_and_explains_itself():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    shown = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True, check=True).stdout
    assert "--download-wheels" in shown and "--cpu" in shown
    wrong = subprocess.run(["bash", str(SCRIPT), "--bogus"], capture_output=True, text=True)
    assert wrong.returncode == 2 and "unknown option --bogus" in wrong.stderr


def test_every_dependency_is_installed_from_a_wheel_or_checked():
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {normalised(re.match(r"[A-Za-z0-9_.-]+", requirement).group(0)) for requirement in dependencies}
    packages, required = listed("PACKAGES"), listed("REQUIRED")
    known = {normalised(name) for name in [*packages, *required]}
    assert names - known == set()
    for name, (version, minimum) in packages.items():  # a wheel of the tested version, and a floor below it
        assert tuple(map(int, re.findall(r"\d+", minimum))) <= tuple(map(int, re.findall(r"\d+", version))), (
            name
        )
