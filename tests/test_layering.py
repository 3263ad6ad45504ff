"""The house rules of kit/, read from its source with `ast` (nothing is imported):

- no import cycle, between modules or between subpackages;
- layers, bottom to top (kit/README.md): the base modules, then data, train, predict, then kaggle and
  report, then commands, then cli (and __main__); a module imports only from its own layer or below;
- kit/train/schedule.py is pure: nothing from the training loop, its stages or torch;
- imports inside functions: only in kit/commands/, only of modules that pull in a heavy library, each
  marked `# heavy` (the boundary between commands that need a model and those that do not);
- what kit.cli imports at start-up reaches no heavy library (tests/test_startup.py checks it by running);
- kit/README.md has one line for every file of kit/, and no line for a file that is gone;
- no file of kit/ is over 500 lines.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

KIT = Path(__file__).resolve().parent.parent / "kit"
# The model and plotting libraries, and scikit-learn with SciPy: about a second of start-up on their own.
HEAVY = {"torch", "torchvision", "timm", "albumentations", "cv2", "matplotlib", "sklearn", "scipy"}

# Rooms: a subpackage is one room; every module outside the subpackages is a room of its own.
LAYERS = {"base": 0, "data": 1, "train": 2, "predict": 3, "kaggle": 4, "report": 4, "commands": 5, "cli": 6}
LAYERS["__main__"] = 7
BASE = {"kit", "config", "paths", "files", "run_folder", "run", "hooks", "metrics", "ledger", "device"}
BASE |= {"baselines"}
BASE |= {"distributed", "models", "tasks", "demos", "errors", "competitions"}
BASE |= {"config_build", "config_checks", "config_overrides", "config_sources"}


@dataclass(frozen=True)
class Import:
    source: str  # importing module, e.g. kit.train.loop
    target: str  # imported module (a package means its __init__), e.g. kit.data.labels
    line: int
    in_function: bool
    text: str  # the source line, for messages and the `# heavy` mark


def module_name(path: Path) -> str:
    parts = list(path.relative_to(KIT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(KIT.rglob("*.py"))}


def is_module(name: str) -> bool:
    return name in MODULES


def resolve(source: str, node: ast.ImportFrom) -> str:
    """The absolute module a `from ... import` names (relative imports resolved against `source`)."""
    if not node.level:
        return node.module or ""
    package = source.split(".")
    if not MODULES[source].name == "__init__.py":
        package = package[:-1]
    package = package[: len(package) - (node.level - 1)]
    return ".".join(package + ([node.module] if node.module else []))


def imports_of(name: str) -> tuple[list[Import], set[str]]:
    """kit imports of one module, and the top-level packages of everything else it imports at top level."""
    path = MODULES[name]
    source = path.read_text()
    lines = source.splitlines()
    tree = ast.parse(source, str(path))
    found, external = [], set()

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            targets = []
            if isinstance(child, ast.Import):
                targets = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = resolve(name, child)
                # `from kit.data import labels` imports the module kit.data.labels;
                # `from kit.config import Config` imports kit.config.
                targets = [
                    f"{base}.{alias.name}" if is_module(f"{base}.{alias.name}") else base
                    for alias in child.names
                ]
            for target in targets:
                if target == "kit" or target.startswith("kit."):
                    text = lines[child.lineno - 1].strip()
                    found.append(Import(name, target, child.lineno, inner, text))
                elif not inner and target != "__future__":
                    external.add(target.split(".")[0])
            visit(child, inner)

    visit(tree, False)
    return found, external


IMPORTS: dict[str, list[Import]] = {}
EXTERNAL: dict[str, set[str]] = {}
for _name in MODULES:
    IMPORTS[_name], EXTERNAL[_name] = imports_of(_name)
EDGES = [edge for edges in IMPORTS.values() for edge in edges]


def room(name: str) -> str:
    """data, train, ... for a subpackage's modules (and the subpackage itself); the module name otherwise."""
    parts = name.split(".")
    if len(parts) >= 2 and (KIT / parts[1]).is_dir():
        return parts[1]
    return parts[-1] if len(parts) > 1 else "kit"


def layer(name: str) -> int:
    where = room(name)
    return LAYERS["base"] if where in BASE else LAYERS[where]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member, or a member importing itself (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def connect(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph.get(node, ())):
            if other not in index:
                connect(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def reachable(start: str, top_level_only: bool) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        # Importing kit.a.b runs kit/__init__ and kit/a/__init__ first.
        parents = [".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)]
        todo += [parent for parent in parents if parent in MODULES]
        todo += [edge.target for edge in IMPORTS.get(name, []) if not (top_level_only and edge.in_function)]
    return seen


# The rules ----------------------------------------------------------------------------------------------


def test_the_reader_sees_the_imports_it_must():
    """Guards the checks below against reading nothing: known imports of each kind are found."""
    assert len(MODULES) > 30
    found = {(edge.source, edge.target, edge.in_function) for edge in EDGES}
    assert ("kit.train.loop", "kit.train.schedule", False) in found  # from kit.train import schedule
    assert ("kit.train.loop", "kit.config", False) in found  # from kit.config import Config
    assert ("kit.cli", "kit.commands", False) in found
    assert ("kit.commands.training", "kit.train.cross_validation", True) in found  # inside a command
    assert "torch" in EXTERNAL["kit.train.loop"] and "numpy" in EXTERNAL["kit.data.labels"]


def test_cycle_finder_finds_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"d"}, "e": {"a"}}
    assert cycles(graph) == [["a", "b", "c"], ["d"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_modules():
    graph: dict[str, set[str]] = {}
    for edge in EDGES:
        if edge.target != edge.source:
            graph.setdefault(edge.source, set()).add(edge.target)
    assert cycles(graph) == [], "import cycle between kit modules"


def test_no_import_cycle_between_subpackages():
    graph: dict[str, set[str]] = {}
    for edge in EDGES:
        source, target = room(edge.source), room(edge.target)
        if source != target and target != "kit":
            graph.setdefault(source, set()).add(target)
    assert cycles(graph) == [], "import cycle between kit's rooms (subpackages and top-level modules)"


def test_every_module_has_a_layer():
    assert all(room(name) in BASE or room(name) in LAYERS for name in MODULES), [
        name for name in MODULES if room(name) not in BASE and room(name) not in LAYERS
    ]


def test_imports_go_down_the_layers():
    """data never imports train, predict, kaggle or report; train never imports predict (training ends
    once each fold's weight files and kept views are written: kit.predict chooses, calibrates and
    summarises after it); nothing but cli imports commands, and nothing but __main__ imports cli."""
    upward = [
        f"{edge.source} (layer {room(edge.source)}) imports {edge.target} (layer {room(edge.target)}): "
        f"line {edge.line}: {edge.text}"
        for edge in EDGES
        if layer(edge.target) > layer(edge.source)
    ]
    assert upward == []
    train_to_predict = [
        edge.text for edge in EDGES if (room(edge.source), room(edge.target)) == ("train", "predict")
    ]
    assert train_to_predict == []
    importers = {
        edge.source
        for edge in EDGES
        if room(edge.target) in ("commands", "cli") and room(edge.source) != room(edge.target)
    }
    assert importers == {"kit.cli", "kit.__main__"}


def test_schedules_import_nothing_from_the_loop_or_torch():
    """Schedules are pure functions of plain values: the loop and the report both use them."""
    schedule = "kit.train.schedule"
    assert [edge.text for edge in IMPORTS[schedule] if edge.target.startswith("kit.train")] == []
    assert EXTERNAL[schedule] & HEAVY == set()
    assert layer(schedule) == LAYERS["train"]  # and, by the layers, nothing above train


def test_imports_inside_functions_only_mark_the_heavy_commands():
    """A function-level kit import exists only in kit/commands/, where it keeps a heavy module out of
    the commands that need no model; it says so (`# heavy`) and the module it imports is heavy."""
    inside = [edge for edge in EDGES if edge.in_function]
    elsewhere = [
        f"{edge.source} line {edge.line}: {edge.text}" for edge in inside if room(edge.source) != "commands"
    ]
    assert elsewhere == [], "move these imports to the top of their module (or fix the layering)"
    unmarked = [f"line {edge.line}: {edge.text}" for edge in inside if "# heavy" not in edge.text]
    assert unmarked == []
    light = [
        f"line {edge.line}: {edge.text}"
        for edge in inside
        if not any(EXTERNAL[name] & HEAVY for name in reachable(edge.target, top_level_only=True))
    ]
    assert light == [], "these modules are light: import them at the top of their kit/commands/ module"


def test_the_command_line_starts_without_heavy_libraries():
    """What `kit` imports before any command runs (top-level imports from kit.cli) uses no heavy library."""
    started = reachable("kit.__main__", top_level_only=True)
    assert "kit.commands" in started and "kit.config" in started
    heavy = {name: sorted(EXTERNAL[name] & HEAVY) for name in sorted(started) if EXTERNAL[name] & HEAVY}
    assert heavy == {}


@pytest.mark.parametrize(
    "heavy_module",
    ["kit.train.loop", "kit.report.plots", "kit.data.augment", "kit.data.folds", "kit.metrics"],
)
def test_the_heavy_check_sees_heavy_modules(heavy_module):
    assert any(EXTERNAL[name] & HEAVY for name in reachable(heavy_module, top_level_only=True))


def readme_files() -> set[str]:
    """The files kit/README.md lists: `name.py` in a table under the heading of `room/` is room/name.py."""
    listed, folder = set(), ""
    for line in (KIT / "README.md").read_text().splitlines():
        if line.startswith("## "):
            folders = re.findall(r"`([a-z_]+)/`", line)
            folder = folders[0] + "/" if len(folders) == 1 else ""
        entry = re.match(r"\| `([a-z_/]+\.py)` \|", line)
        if entry:
            listed.add(entry[1] if "/" in entry[1] else folder + entry[1])
    return listed


def test_kit_readme_has_one_line_per_file():
    files = {
        path.relative_to(KIT).as_posix()
        for path in KIT.rglob("*.py")
        if path.name not in ("__init__.py", "__main__.py")
    }
    listed = readme_files()
    assert "data/labels.py" in listed and "kaggle/client.py" in listed and "cli.py" in listed
    assert sorted(files - listed) == [], "kit/README.md: add a line for these files"
    assert sorted(listed - files) == [], "kit/README.md lists files that do not exist"


MAX_LINES = 500  # a file past this does more than one job: split it by job (kit/README.md, one line each)


def test_no_file_of_kit_is_over_500_lines():
    long = {
        path.relative_to(KIT).as_posix(): length
        for path in sorted(KIT.rglob("*.py"))
        if (length := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}, "split these files by job"


def test_the_library_below_the_commands_needs_no_command_line_library():
    """Every module below kit/commands raises kit.errors.KitError (plain exceptions) and prints with
    tqdm.write; only the command line turns errors into click's one line, so kit.data.labels,
    kit.train.cross_validation, kit.kaggle.client and the rest can be used from a notebook without click."""
    plain = [name for name in MODULES if layer(name) < LAYERS["commands"]]
    assert {"kit.run_folder", "kit.data.labels", "kit.train.loop", "kit.predict.inference"} <= set(plain)
    assert {"kit.kaggle.client", "kit.report.report"} <= set(plain) and "kit.cli" not in plain
    assert sorted(name for name in plain if "click" in EXTERNAL[name]) == []
