"""One owner for the names inside a run folder (issue 24): kit/run.py. Everywhere else in kit/ asks a
`Run` or a `FoldFolder` for a path (or run.py's stem functions for a weight file's stem), so a file can be
renamed in one place and no reader guesses at another's spelling.

Read with `ast` (nothing imported): every string literal of kit/ outside run.py, docstrings aside (they
may name the files for a reader), and each literal part of an f-string.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

KIT = Path(__file__).resolve().parent.parent / "kit"

# Files a run folder holds, by name.
FILE_NAMES = re.compile(
    r"\b(oof\.npy|(best|last|ema|resume)\.pt|(result|metrics|calibration|submission|config|provenance|plan"
    r"|row-order|bad-images|bad-test-images)\.json|test-probabilities\.npy|report\.html)\b"
)
# Names built from a number or a stem: f"snapshot-{number}", f"fold-{k}", f"{stem}.pt", ...
PREFIXES = (
    "snapshot-",
    "stage-",
    "fold-",
    "full-seed-",
    "seed-",
    "oof-",
    "test-",
    "pseudo-labels-stage-",
    "lr-find-",
)
WEIGHT_SUFFIX = re.compile(r"^\.pt\b")


def docstrings(tree: ast.AST) -> set[int]:
    """ids of the Constant nodes that are docstrings (a module's, a class's or a function's)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def names_in(text: str) -> list[str]:
    """The run-folder names one string literal (or one literal part of an f-string) spells."""
    found = [match[0] for match in FILE_NAMES.finditer(text)]
    found += [prefix for prefix in PREFIXES if text.endswith(prefix) or re.fullmatch(rf"{prefix}\d+", text)]
    return found + ([".pt"] if WEIGHT_SUFFIX.match(text) else [])


def literals(path: Path) -> list[str]:
    source = path.read_text()
    tree = ast.parse(source, str(path))
    skip = docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            found += [f"{path.relative_to(KIT)}:{node.lineno}: {name}" for name in names_in(node.value)]
    return found


def test_the_reader_finds_names_where_they_are_spelled():
    """Guards the check below against finding nothing: run.py itself spells them all."""
    assert names_in("metrics.json") == ["metrics.json"]
    assert names_in("snapshot-") == ["snapshot-"] and names_in("ema-snapshot-") == ["snapshot-"]
    assert names_in("snapshot-3") == ["snapshot-"] and names_in(".pt") == [".pt"]
    assert names_in("the metrics of fold 3") == [] and names_in("snapshot") == []
    spelled = literals(KIT / "run.py")
    for name in ("metrics.json", "calibration.json", "result.json", "oof.npy", "resume.pt", "fold-", ".pt"):
        assert any(line.endswith(f": {name}") for line in spelled), name


def test_no_run_folder_name_outside_run_py():
    found = [line for path in sorted(KIT.rglob("*.py")) if path != KIT / "run.py" for line in literals(path)]
    assert found == [], "ask kit.run's Run / FoldFolder (or its stem functions) for these names"


# Readers of metrics.json that test for keys or index the record, instead of asking kit.run.Summary.
SUMMARY_READS = re.compile(r"summary\.get\(|summary\[|\bin summary\b(?!\.)|\"ensemble\" in\b|\"full\" in\b")
# The one writer: kit.predict.summary builds the record that Run.write_summary writes (a dict until then).
SUMMARY_WRITER = KIT / "predict" / "summary.py"


def test_metrics_json_is_read_through_the_typed_summary_only():
    """metrics.json is read through kit.run.Summary's accessors (its layout checked when it is read): no
    reader branches on which keys are present, so an older record is one line, not a guess per reader."""
    assert SUMMARY_READS.search('if "ensemble" in summary:') and not SUMMARY_READS.search("summary.cv")
    found = [
        f"{path.relative_to(KIT)}:{number}: {line.strip()}"
        for path in sorted(KIT.rglob("*.py"))
        if path not in (KIT / "run.py", SUMMARY_WRITER)
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if SUMMARY_READS.search(line)
    ]
    assert found == [], "ask kit.run.Summary (Run(run_dir).summary()) instead"
