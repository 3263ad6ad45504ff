"""Each training image's group (patient, animal, scene): folds never split one.

A group comes from a column of the labels CSV (`data.group_column`), or from the competition's hooks.py
`groups(ids, raw_dir)` when the column is not set. Near-duplicate photos (kit.data.duplicates) can join
one group on top (`data.duplicates = "group"`): groups that share a copy become one.
"""

from __future__ import annotations

import numpy as np

from kit.config import Config
from kit.data.labels import LabelTable, read_csv
from kit.errors import KitError
from kit.hooks import load_hooks
from kit.paths import raw_dir

# Column names `kit new` takes as a group column when a labels CSV has one (lower case, compared so).
OBVIOUS_GROUP_COLUMNS = (
    "patient_id", "patient", "subject_id", "subject", "group_id", "group", "individual_id", "individual",
    "animal_id", "study_id", "case_id", "site_id", "scene_id", "session_id",
)  # fmt: skip


def obvious_group_column(columns: list[str]) -> str:
    """The first column named like a group (`patient_id`, `group`, `subject`, ...), else ''."""
    lowered = {column.strip().lower(): column for column in columns}
    return next((lowered[name] for name in OBVIOUS_GROUP_COLUMNS if name in lowered), "")


def group_source(config: Config) -> str:
    """What names the groups, for folds.json and messages: 'patient_id', 'hooks.py groups' or ''."""
    if config.data.group_column:
        return config.data.group_column
    return "hooks.py groups" if "groups" in load_hooks(config) else ""


def read_groups(config: Config, labels: LabelTable) -> np.ndarray | None:
    """Each row's group as an integer code (rows of one group share it), or None without groups."""
    column = config.data.group_column
    if column:
        if config.data.labels != "csv":
            raise KitError(
                f"{config.path}: data.group_column = {column!r} needs labels in a CSV (data.labels = 'csv'); "
                "with labels from file or folder names, define groups(ids, raw_dir) in hooks.py"
            )
        source = raw_dir(config.name) / config.data.labels_csv  # checked to stay inside by load_labels
        table = read_csv(
            source,
            [config.data.id_column, column],
            "set data.group_column in competition.toml",
            ("data.id_column", "data.group_column"),
        )
        by_id = dict(zip(table[config.data.id_column].str.strip(), table[column].str.strip(), strict=True))
        names = [by_id[identifier] for identifier in labels.ids]
        empty = [row for row, name in enumerate(names, start=2) if not name]
        if empty:
            raise KitError(
                f"{source}: {len(empty)} rows have no {column!r} (row {empty[0]} first); fill them, or give "
                "each its own group name"
            )
    else:
        hook = load_hooks(config).get("groups")
        if hook is None:
            return None
        names = [str(name) for name in hook(list(labels.ids), raw_dir(config.name))]
        if len(names) != len(labels.ids):
            raise KitError(
                f"{config.directory / 'hooks.py'}: groups() returned {len(names)} groups for "
                f"{len(labels.ids)} training images; return one per id, in order"
            )
    _, codes = np.unique(np.array(names, dtype=object).astype(str), return_inverse=True)
    return codes.astype(np.int64)


def join_groups(groups: np.ndarray | None, pairs: np.ndarray, row_count: int) -> np.ndarray:
    """Group codes where rows paired (near-duplicates) and rows of one group all end in one group.

    A union-find over rows: `groups` (or every row alone when None) first, then each pair (i, j). Codes
    are renumbered 0..G-1 in order of first appearance, so the result is a pure function of its inputs.
    """
    parent = np.arange(row_count)

    def root(row: int) -> int:
        while parent[row] != row:
            parent[row] = parent[parent[row]]  # path halving keeps the trees flat
            row = parent[row]
        return row

    links = []
    if groups is not None:
        first = {}
        for row, group in enumerate(groups.tolist()):
            links.append((first.setdefault(group, row), row))
    links.extend((int(left), int(right)) for left, right in pairs)
    for left, right in links:
        left_root, right_root = root(left), root(right)
        if left_root != right_root:
            parent[max(left_root, right_root)] = min(left_root, right_root)
    roots = np.array([root(row) for row in range(row_count)])
    _, codes = np.unique(roots, return_inverse=True)
    return codes.astype(np.int64)
