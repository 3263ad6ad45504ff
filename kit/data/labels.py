"""Label tables and test ids, read from a competition's raw download.

Labels come from a CSV, from file names (`cat.12.jpg`) or from one folder per class. Every path built
from the data is checked to stay inside the competition's raw folder: ids must be plain file names, and
a link (or a configured folder) that leads outside data/raw/<name> is refused. Link data/raw/<name>
itself to keep a competition's files on another disk.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

import numpy as np
import pandas as pd

from kit import tasks
from kit.config import Config
from kit.errors import KitError
from kit.files import read_json, write_json
from kit.paths import raw_dir, require_download
from kit.run import Run

# The setting that decides each image's class, per label source: named when the classes look wrong.
LABEL_SETTING = {"csv": "label_column", "filenames": "filename_pattern", "folders": "train_dir"}


@dataclass(frozen=True)
class LabelTable:
    ids: list[str]
    paths: list[Path]
    targets: np.ndarray  # per image, as kit.tasks describes: class index, 0/1 tags, value or grade index
    classes: list[str]  # sorted class names (tags, grades); index i is class i
    task: tasks.Task  # competition.task, fitted to the labels; no default: a forgotten one is an error


@dataclass(frozen=True)
class TestTable:
    ids: list[str]
    paths: list[Path]


def _check_id(identifier: str, where: str, row: int) -> str:
    """Ids become file names: refuse anything that could step outside the image folder."""
    if identifier in ("", ".", "..") or "/" in identifier or "\\" in identifier or "\x00" in identifier:
        raise KitError(
            f"{where} row {row}: id {identifier!r} is not a plain file name (no '/', '\\' or '..'); "
            "fix that row"
        )
    return identifier


NAME_MAX = 255  # bytes in one file name on Linux, macOS and Windows file systems


def _check_ids(ids, where: str, extension: str = "") -> list[str]:
    """Ids without surrounding spaces (`abc, pug` in a hand-made CSV), each checked; row 1 is the header."""
    checked = [_check_id(identifier.strip(), where, row) for row, identifier in enumerate(ids, start=2)]
    for row, identifier in enumerate(checked, start=2):
        name = identifier if identifier.lower().endswith(extension.lower()) else identifier + extension
        if len(os.fsencode(name)) > NAME_MAX:
            raise KitError(
                f"{where} row {row}: id {identifier[:20]!r}... ({len(identifier)} characters) makes a file "
                f"name longer than a file system allows ({NAME_MAX} bytes with the extension); fix that row"
            )
    return checked


def same_name(name: str) -> str:
    """A name as a person and a case-insensitive disk compare it: one Unicode form (NFC), no case."""
    return unicodedata.normalize("NFC", name.strip()).casefold()


def image_key(identifier: str, extension: str) -> str:
    """Ids naming one image compare equal: 'Abc', 'abc.jpg' and 'abc' (NFD) are all 'abc'."""
    key = same_name(identifier)
    suffix = same_name(extension)
    return key[: -len(suffix)] if suffix and key.endswith(suffix) else key


def _inside(config: Config, key: str, value: str | None = None) -> Path:
    """The raw-folder path a data.* setting names (or `value`, one of its folders), refused when it leads
    outside data/raw/<name>."""
    raw = require_download(config.name)
    value = getattr(config.data, key) if value is None else value
    path = raw / value
    if not resolved(path).is_relative_to(resolved(raw)):
        raise KitError(
            f"{config.path}: data.{key} = {value!r} leads outside {raw} "
            f"(to {path.resolve()}); "
            f"give a path inside it (to keep the files on another disk, link {raw} itself there)"
        )
    return path


def resolved(path: Path, place: str = "") -> Path:
    """path.resolve(), with a link that leads back to itself (a loop, which makes the OS give up) refused
    in one line naming it."""
    try:
        return path.resolve()
    except (RuntimeError, OSError) as error:  # Python 3.11: RuntimeError("Symlink loop"); later: ELOOP
        raise KitError(
            f"{place}{path}: a link that leads back to itself (a loop: {error}); replace it with the file "
            "or folder it should name"
        ) from None


def real_paths(paths: list[Path], root: Path, where: str, rows: bool) -> list[Path]:
    """Where each image file really is (links followed), refusing one outside `root` (resolved).

    Only links and unusual parents are resolved one by one: a plain file's place is its folder's, so a
    listing of 100,000 images costs one lstat each.
    """
    folders: dict[Path, Path] = {}
    result = []
    for index, path in enumerate(paths):
        place = f"{where} row {index + 2}: " if rows else ""
        if path.is_symlink():
            real = resolved(path, place)
        else:
            if path.parent not in folders:
                folders[path.parent] = resolved(path.parent, place)
            real = folders[path.parent] / path.name
        if not real.is_relative_to(root):
            raise KitError(
                f"{place}{path} leads outside {root} (to {real}); "
                f"copy the file in, or link the whole folder {root} instead"
            )
        result.append(real)
    return result


def _check_unique(ids: list[str], where: str, extension: str, places: list[str], labels=None) -> None:
    """Refuse one image listed twice: the same id, or ids that differ only in extension, case or Unicode
    form (trained twice, with two labels, in two folds: a leak). `places`: each id's row or file."""
    seen: dict[str, int] = {}
    for index, identifier in enumerate(ids):
        key = image_key(identifier, extension)
        if key not in seen:
            seen[key] = index
            continue
        first = seen[key]
        if ids[first] == identifier:
            raise KitError(
                f"{where}: duplicate id {identifier!r} ({places[index]}, and {places[first]}); "
                "ids must be unique"
            )
        labelled = f" (labels {labels[first]!r} and {labels[index]!r})" if labels is not None else ""
        raise KitError(
            f"{where}: {places[first]} {ids[first]!r} and {places[index]} {identifier!r} name the same image"
            f"{labelled}: they differ only in extension, case or Unicode form; keep one of them"
        )


def _normalise_labels(labels: list[str], where: str, places: list[str]) -> list[str]:
    """Labels as a person reads them: surrounding spaces dropped, one Unicode form (NFC), so 'pug ' is
    'pug'. Two labels differing only in case are refused: a typo, or classes no one can tell apart."""
    labels = [unicodedata.normalize("NFC", label.strip()) for label in labels]
    spelled: dict[str, int] = {}
    for index, label in enumerate(labels):
        first = spelled.setdefault(label.casefold(), index)
        if labels[first] != label:
            raise KitError(
                f"{where}: labels {labels[first]!r} ({places[first]}) and {label!r} ({places[index]}) differ "
                f"only in case; write them the same, or they become two classes"
            )
    return labels


# How pandas writes a missing value (NaN, pd.NA, NaT; `astype(str)` of an empty label), as a spreadsheet
# shows one: never a class a person named. ("None" and "NA" are left alone: real classes use them.)
MISSING_MARKERS = frozenset(
    {"nan", "NaN", "NAN", "-nan", "-NaN", "<NA>", "NaT", "#N/A", "#NA", "N/A", "n/a", "NULL", "null"}
)
NAMED_CLASSES = ("single_label", "multi_label")  # tasks whose labels are names (the others parse numbers)


def _look_alike_key(name: str) -> str:
    """What a person reads: no case, and a number's value ('01', '1' and '1.0' are all '1')."""
    try:
        number = Decimal(name)
    except InvalidOperation:
        return name.casefold()
    return format(number.normalize(), "f") if number.is_finite() else name.casefold()


def _check_look_alike(labels: list[str], task: str, where: str, places: list[str]) -> None:
    """Refuse class names (each tag, for multi_label) that only look alike, as labels differing only in
    case are refused: '01' and '1', 'Cloudy' and 'cloudy' would become two classes no one can tell
    apart; and a missing value as pandas writes it ('NaN') would become a class."""
    if task not in NAMED_CLASSES:
        return
    word = "tag" if task == "multi_label" else "label"
    seen: dict[str, tuple[str, int]] = {}
    for index, label in enumerate(labels):
        for name in label.split() if task == "multi_label" else [label]:
            if name in MISSING_MARKERS:
                raise KitError(
                    f"{where}: {places[index]} has the {word} {name!r}, how pandas writes a missing value; "
                    "fill in that row's label or drop the row (a class really named so: rename it)"
                )
            first_name, first = seen.setdefault(_look_alike_key(name), (name, index))
            if first_name == name:
                continue
            same_case = first_name.casefold() == name.casefold()
            how = "only in case" if same_case else "only in how the number is written"
            raise KitError(
                f"{where}: {word}s {first_name!r} ({places[first]}) and {name!r} ({places[index]}) differ "
                f"{how}; write them the same, or they become two classes"
            )


def image_path(folder: Path, identifier: str, extension: str) -> Path:
    """The image file of an id: some competitions' ids already carry the extension ('0021e90e4.png')."""
    if extension and identifier.lower().endswith(extension.lower()):
        return folder / identifier
    return folder / f"{identifier}{extension}"


def found_paths(paths: list[Path]) -> list[Path]:
    """Each path, or the file beside it that differs only in case or Unicode form ('ABC.JPG' for id 'abc'
    with extension '.jpg'): one listing per folder, so 100,000 ids cost no extra file-system calls."""
    listings: dict[Path, tuple[set[str], dict[str, str]]] = {}
    result = []
    for path in paths:
        if path.parent not in listings:
            try:
                names = os.listdir(path.parent)
            except OSError:  # a missing folder: reported where the images are read
                names = []
            listings[path.parent] = set(names), {same_name(name): name for name in sorted(names)}
        names, by_key = listings[path.parent]
        if path.name not in names and same_name(path.name) in by_key:
            path = path.parent / by_key[same_name(path.name)]
        result.append(path)
    return result


def _image_files(folder: Path, extension: str) -> list[Path]:
    found = sorted(p for p in folder.iterdir() if p.suffix.lower() == extension.lower())
    for path in found:
        if path.is_symlink():
            resolved(path)  # a link loop is refused, not skipped without a word
    return [path for path in found if path.is_file()]


# Byte-order marks of the encodings spreadsheets save CSVs in besides plain UTF-8 (Excel: "UTF-8 with
# BOM", "Unicode text" = UTF-16); without one, a CSV must be UTF-8 (Kaggle's always are).
BYTE_ORDER_MARKS = {b"\xef\xbb\xbf": "utf-8-sig", b"\xff\xfe": "utf-16", b"\xfe\xff": "utf-16"}


def csv_encoding(path: Path) -> str:
    with open(path, "rb") as handle:
        head = handle.read(4)
    return next((name for mark, name in BYTE_ORDER_MARKS.items() if head.startswith(mark)), "utf-8")


def parse_csv(path: Path, fix: str = "repair the file or download it again", **options) -> pd.DataFrame:
    """pd.read_csv, with a file that is not a CSV (garbled, binary, empty) refused in one line.

    UTF-8, with or without a byte-order mark, and UTF-16 with one are read (the mark is not part of the
    first column's name); other encodings are refused naming the first byte that is not UTF-8.
    """
    try:
        return pd.read_csv(path, encoding=csv_encoding(path), **options)
    except UnicodeDecodeError as error:
        raise KitError(
            f"{path}: not a readable CSV (not UTF-8: byte 0x{error.object[error.start]:02x} at offset "
            f"{error.start}); save it as UTF-8 (e.g. `iconv -f latin1 -t utf-8`), or {fix}"
        ) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeError) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise KitError(f"{path}: not a readable CSV ({reason}); {fix}") from None


def header_names(path: Path) -> list[str]:
    """The first line's column names as written (pandas renames a repeated name 'label' to 'label.1')."""
    try:
        with open(path, encoding=csv_encoding(path), newline="") as handle:
            return next(csv.reader(handle), [])
    except (UnicodeError, csv.Error):  # parse_csv says what is wrong with such a file
        return []


def read_csv(path: Path, columns: list[str], fix: str, settings: Sequence[str] = ()) -> pd.DataFrame:
    """A CSV read as strings, with the columns we need checked and named in the error; `settings`: the
    keys that named the columns (kit.errors.KitError.settings)."""
    if not path.is_file():
        raise KitError(f"{path} not found: {fix}")
    table = parse_csv(path, dtype=str, keep_default_na=False)
    header = header_names(path)
    for column in columns:
        positions = [number for number, name in enumerate(header, start=1) if name.strip() == column]
        if len(positions) > 1:
            raise KitError(
                f"{path}: the header names column {column!r} {len(positions)} times (columns "
                f"{', '.join(map(str, positions))}); rename or remove all but the one to use"
            )
    missing = [column for column in columns if column not in table.columns]
    if missing:
        raise KitError(
            f"{path}: no column {', '.join(map(repr, missing))} (columns: {', '.join(table.columns)}); {fix}",
            settings,
        )
    return table


def load_labels(config: Config) -> LabelTable:
    """The training images and their classes."""
    raw = require_download(config.name)
    data = config.data
    _check_extension(config)
    train_dir = _inside(config, "train_dir")
    if data.labels == "csv":
        source = _inside(config, "labels_csv")
        table = read_csv(
            source,
            [data.id_column, data.label_column],
            "set data.id_column / data.label_column in competition.toml",
            ("data.id_column", "data.label_column"),
        )
        ids = _check_ids(table[data.id_column], str(source), data.extension)
        labels = list(table[data.label_column])
        for row, label in enumerate(labels, start=2):
            if not label.strip():
                raise KitError(f"{source}: empty label in row {row}; fill it or drop the row")
        places = [f"row {row}" for row in range(2, len(ids) + 2)]
        paths = found_paths([image_path(train_dir, i, data.extension) for i in ids])
    elif data.labels == "filenames":
        try:
            pattern = re.compile(data.filename_pattern)
        except re.error as error:
            raise KitError(f"{config.path}: data.filename_pattern is not a regex: {error}") from None
        if "label" not in pattern.groupindex:
            raise KitError(f"{config.path}: data.filename_pattern needs a named group (?P<label>...)")
        ids, labels, paths = [], [], []
        for path in _image_files(_folder(train_dir, config), data.extension):
            match = pattern.match(path.stem)
            if match is None:
                raise KitError(f"{path}: name does not match data.filename_pattern {pattern.pattern!r}")
            # The stem is the id: the number alone repeats across classes (cat.12.jpg, dog.12.jpg).
            ids.append(path.stem)
            labels.append(match["label"])
            paths.append(path)
        source, places = train_dir, [path.name for path in paths]
    else:  # folders: train/<class>/<image>
        ids, labels, paths = [], [], []
        for class_dir in sorted(p for p in _folder(train_dir, config).iterdir() if p.is_dir()):
            for path in _image_files(class_dir, data.extension):
                ids.append(f"{class_dir.name}/{path.stem}")
                labels.append(class_dir.name)
                paths.append(path)
        source, places = train_dir, [f"{path.parent.name}/{path.name}" for path in paths]
    if not ids:
        raise KitError(f"{source}: no training images with extension {data.extension!r} found")
    labels = _normalise_labels(labels, str(source), places)
    _check_look_alike(labels, config.competition.task, str(source), places)
    _check_unique(ids, str(source), data.extension, places, labels)
    real_paths(paths, raw.resolve(), str(source), rows=data.labels == "csv")
    try:
        task, targets, classes = tasks.read_labels(config.competition.task, labels)
    except tasks.LabelError as error:
        raise KitError(f"{source} {error}; fix that row, or set competition.task in {config.path}") from None
    if task.stratify == "classes" and len(classes) < 2:  # classes or grades: one of them says nothing
        raise KitError(
            f"{source}: every training image has the label {classes[0]!r}; a classifier needs two or more "
            f"classes: check data.{LABEL_SETTING[data.labels]} in {config.path}"
        )
    return LabelTable(ids, paths, targets, classes, task)


def _check_extension(config: Config) -> None:
    extension = config.data.extension
    if "/" in extension or "\\" in extension:
        raise KitError(
            f"{config.path}: data.extension = {extension!r} leads outside the image folder; write e.g. '.jpg'"
        )


def _folder(path: Path, config: Config) -> Path:
    if not path.is_dir():
        raise KitError(f"{path} is not a folder: check data.train_dir / data.test_dir in {config.path}")
    return path


def load_test(config: Config) -> TestTable:
    """Test images, in sample_submission.csv's order when there is one, else sorted by file name."""
    raw = require_download(config.name)
    data = config.data
    _check_extension(config)
    names = data.test_dir if isinstance(data.test_dir, tuple) else (data.test_dir,)
    folders = [_folder(_inside(config, "test_dir", name), config) for name in names]
    sample = _inside(config, "sample_submission")
    for test_dir in folders:
        if any(path.suffix.lower() == data.extension.lower() for path in test_dir.iterdir()):
            continue
        raise KitError(
            f"{test_dir}: no test images with extension {data.extension!r}; "
            "check data.test_dir / data.extension "
            f"in {config.path}, or download again (move {raw} away, then `make download COMP={config.name}`)"
        )
    if sample.is_file():
        column = config.submission.id_column
        ids = list(read_csv(sample, [column], "set submission.id_column", ["submission.id_column"])[column])
        if not ids:
            raise KitError(f"{sample}: lists no test ids; download it again")
        ids = _check_ids(ids, str(sample), data.extension)
        _check_unique(ids, str(sample), data.extension, [f"row {row}" for row in range(2, len(ids) + 2)])
        paths = [image_path(folders[0], i, data.extension) for i in ids]
        if len(folders) > 1:  # test images split over folders (Planet): each id's image where it is
            holding = {path.name: folder for folder in reversed(folders) for path in folder.iterdir()}
            paths = [holding.get(path.name, folders[0]) / path.name for path in paths]
        paths = found_paths(paths)
    else:
        paths = [path for folder in folders for path in _image_files(folder, data.extension)]
        ids = [p.stem for p in paths]
        _check_unique(ids, str(folders[0]), data.extension, [path.name for path in paths])
    real_paths(paths, raw.resolve(), str(sample), rows=sample.is_file())
    return TestTable(ids, paths)


def check_test_apart(config: Config, test: TestTable, labels: LabelTable) -> None:
    """Refuse a test image that is also a labelled training image (the same file, links followed): a leak,
    or listings mixed up. The same id alone is allowed: some competitions number train/ and test/ apart."""
    root, data = raw_dir(config.name).resolve(), config.data
    sample = raw_dir(config.name) / data.sample_submission
    training = {real: index for index, real in enumerate(real_paths(labels.paths, root, "", rows=False))}
    for index, real in enumerate(real_paths(test.paths, root, str(sample), rows=sample.is_file())):
        if real in training:
            place = f"{sample} row {index + 2}" if sample.is_file() else str(test.paths[index])
            source = f"{data.labels_csv} row {training[real] + 2}" if data.labels == "csv" else data.train_dir
            raise KitError(
                f"{place}: test image {test.paths[index].name} "
                f"is training image {labels.paths[training[real]].name} "
                f"({source}); a labelled image must not be in the test set: fix the listing or the files"
            )


def row_order(ids: list[str]) -> dict:
    return {"rows": len(ids), "ids_sha1": hashlib.sha1("\n".join(ids).encode()).hexdigest()}


def record_row_order(run_dir: Path, ids: list[str]) -> None:
    """Record the training ids, in order, that a run's out-of-fold rows follow."""
    write_json(Run(run_dir).row_order_file, row_order(ids))


def check_row_order(run_dir: Path, ids: list[str], fix: str) -> None:
    """Refuse a run whose out-of-fold rows follow other training ids, or the same in another order (the
    labels file re-sorted, rows added or removed since it trained): its predictions would meet other
    images' labels. Runs made before the record exist are left to the row-count check."""
    path = Run(run_dir).row_order_file
    if not path.is_file():
        return
    saved = read_json(path)
    if saved != row_order(ids):
        raise KitError(
            f"{run_dir.name}: trained on {saved.get('rows')} training ids in another order or other ids "
            f"than the labels file lists now ({len(ids)}; recorded in {path}): re-sorted, or rows added or "
            f"removed since; {fix}"
        )
