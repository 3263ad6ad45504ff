"""Bad input, round three (issue 32): two commands at once on one competition, labels that only look
alike, stale state not noticed, folders that cannot be written and damaged caches, a lone row in the last
training batch, and smaller cases (a sample submission's column order, a 300-character id, a link loop,
an ensemble's variant).

Concurrency cases run real processes (multiprocessing, spawn) released together by a barrier and repeat
several rounds, so the race shows on code without the locks; none trains a model.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import invoke

from kit.errors import KitError
from kit.tasks import SINGLE_LABEL


def sets(values) -> list[str]:
    return [item for value in values for item in ("--set", value)]


ROUNDS = 4  # rounds of simultaneous starts per concurrency case (one same-second start is enough)


def one_line_error(result, *fragments: str) -> str:
    """The command failed with one `Error:` line (no traceback) holding every fragment."""
    assert result.exit_code == 1, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.output
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def run_together(target, count: int, *arguments) -> list:
    """`target(barrier, queue, worker, *arguments)` in `count` spawned processes at once; their queued
    results, in no order. A worker that raises fails the test with its traceback."""
    context = multiprocessing.get_context("spawn")
    barrier, queue = context.Barrier(count), context.Queue()
    workers = [
        context.Process(target=_guarded, args=(target, barrier, queue, n, *arguments)) for n in range(count)
    ]
    for worker in workers:
        worker.start()
    results = [queue.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
    failures = [result for result in results if isinstance(result, str) and result.startswith("FAILED")]
    assert not failures, failures[0]
    return [item for result in results for item in result]


def _guarded(target, barrier, queue, worker, *arguments) -> None:
    import traceback

    try:
        queue.put(target(barrier, worker, *arguments))
    except BaseException:  # noqa: BLE001 - reported to the parent, which fails the test
        queue.put("FAILED " + traceback.format_exc())


# --- class 1: two commands at once on one competition -------------------------------------------------


def _write_submissions(barrier, worker: int, config, rounds: int) -> list[tuple[str, str, int]]:
    """What `kit predict` does last, `rounds` times, started with the other workers: the same run's CV,
    another prediction (each worker's own label in every row)."""
    from kit.predict import submission

    sample = submission.read_sample(config)
    written = []
    for round_number in range(rounds):
        frame = pd.DataFrame({"id": sample["id"], "label": str(worker % 10)})
        barrier.wait()
        path = submission.write(
            config, frame, sample, "accuracy", 0.9, [str(d) for d in range(10)], task=SINGLE_LABEL
        )
        written.append((path.name, str(worker % 10), round_number))
    return written


def test_two_predicts_in_one_second_write_two_files(digits):
    """Two `kit predict`s in the same second each get their own file (the name carries only the second),
    and each file holds what its own command wrote."""
    written = run_together(_write_submissions, 3, digits(), ROUNDS)
    names = [name for name, _, _ in written]
    assert len(set(names)) == len(names), sorted(names)
    folder = Path(os.environ["KIT_PROJECT_ROOT"]) / "submissions"
    for name, label, _ in written:
        assert set(pd.read_csv(folder / name, dtype=str)["label"]) == {label}, name


def test_submission_names_taken_are_never_reused(digits):
    """A submission file already there (an earlier prediction this second) is never replaced."""
    from kit.predict import submission

    config = digits()
    sample = submission.read_sample(config)
    frame = pd.DataFrame({"id": sample["id"], "label": "3"})
    first = submission.write(
        config, frame, sample, "accuracy", 0.5, [str(d) for d in range(10)], task=SINGLE_LABEL
    )
    before = first.read_bytes()
    frame["label"] = "4"
    second = submission.write(
        config, frame, sample, "accuracy", 0.5, [str(d) for d in range(10)], task=SINGLE_LABEL
    )
    assert second != first and first.read_bytes() == before
    assert second.name.startswith(first.stem) or second.name[:30] != first.name[:30]


def _append_rows(barrier, worker: int, count: int) -> list[str]:
    from kit import ledger

    barrier.wait()
    messages = []
    for number in range(count):
        message = f"worker {worker} row {number}"
        ledger.append_ledger({"competition": "digits", "file": f"{worker}-{number}.csv", "message": message})
        messages.append(message)
    return messages


def test_two_submits_at_once_keep_every_ledger_row(project):
    """Four `kit submit`s writing their ledger rows at the same moment: every row is kept."""
    from kit import ledger

    messages = run_together(_append_rows, 4, 25)
    kept = ledger.read_ledger()
    assert sorted(kept["message"]) == sorted(messages)
    assert len(kept) == 100


def test_ledger_row_is_appended_not_rewritten(project):
    """A row is added by appending: the rows already there are left byte for byte (a row edited by hand,
    quoted where pandas would not quote, and saved without a last newline, is not rewritten)."""
    from kit import ledger, paths

    ledger.append_ledger({"competition": "digits", "file": "a.csv", "message": "first"})
    path = paths.ledger_file()
    kept = path.read_bytes().replace(b"first", b'"first"').rstrip(b"\n")
    path.write_bytes(kept)
    ledger.append_ledger({"competition": "digits", "file": "b.csv", "message": "second"})
    assert path.read_bytes().startswith(kept)
    assert list(ledger.read_ledger()["message"]) == ["first", "second"]


def _make_run_folders(barrier, worker: int, config, rounds: int) -> list[str]:
    from kit.run_folder import new_run_dir

    made = []
    for _ in range(rounds):
        barrier.wait()
        made.append(str(new_run_dir(config, "ensemble")))
    return made


def test_two_runs_started_in_one_second_get_two_folders(digits):
    """Two `kit train`s (or `kit ensemble`s) started in the same second: each gets its own run folder, with
    its own config (no FileExistsError traceback, no run sharing another's folder)."""
    made = run_together(_make_run_folders, 4, digits(), 10 * ROUNDS)
    assert len(set(made)) == len(made) == 4 * 10 * ROUNDS
    assert all((Path(folder) / "config.json").is_file() for folder in made)


# --- class 10: a lone row in the last training batch --------------------------------------------------


@pytest.mark.parametrize(("rows", "batch_size"), [(65, 64), (129, 64), (97, 32)])
def test_last_training_batch_never_holds_one_row(rows, batch_size):
    """With batch 64, a fold of 65 or 129 training rows ended each epoch on a batch of one, and BatchNorm
    cannot normalise one image in training mode: the lone row joins the batch before it."""
    import torch
    from torch.utils.data import TensorDataset

    from kit.data.loader import make_loader

    dataset = TensorDataset(torch.randn(rows, 4), torch.arange(rows))
    loader = make_loader(dataset, batch_size, True, torch.Generator().manual_seed(0), 0)
    batches = list(loader)
    assert len(batches) == len(loader)
    assert min(len(targets) for _, targets in batches) > 1
    assert sorted(torch.cat([targets for _, targets in batches]).tolist()) == list(range(rows))
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3)).train()
    for inputs, _ in batches:
        model(inputs)  # ValueError: Expected more than 1 value per channel when training


# --- class 7: folders that cannot be written, damaged caches -------------------------------------------


class ReadOnlyFolders:
    """Folders this user may not write in. Not root: chmod 0555 (the real thing). Root, whom chmod does not
    stop (and no unprivileged user can run this virtual environment, which lives under /root): the
    kernel's check is emulated at the OS boundary instead, os.open / os.mkdir / open / os.replace /
    os.unlink refusing (EACCES) to create, rename or remove an entry directly inside such a folder."""

    def __init__(self, monkeypatch):
        self.folders: set[Path] = set()
        self.root = os.geteuid() == 0
        if self.root:
            self._patch(monkeypatch)

    def add(self, folder: Path) -> None:
        self.folders.add(Path(os.path.abspath(folder)))
        if not self.root:
            os.chmod(folder, 0o555)

    def _blocked(self, path) -> bool:
        return Path(os.path.abspath(os.fsdecode(path))).parent in self.folders

    def _refuse(self, path):
        raise PermissionError(13, "Permission denied", os.fsdecode(path))

    def _patch(self, monkeypatch) -> None:
        import builtins
        import io

        real_open, real_os_open = builtins.open, os.open
        real_mkdir, real_replace, real_rename, real_unlink = os.mkdir, os.replace, os.rename, os.unlink

        def creates(path) -> bool:
            named = isinstance(path, (str, bytes, os.PathLike))
            return named and self._blocked(path) and not os.path.exists(path)

        def guarded_open(file, mode="r", *arguments, **options):
            if any(flag in mode for flag in "wax+") and creates(file):
                self._refuse(file)
            return real_open(file, mode, *arguments, **options)

        def guarded_os_open(path, flags, *arguments, **options):
            if flags & os.O_CREAT and creates(path):
                self._refuse(path)
            return real_os_open(path, flags, *arguments, **options)

        def guarded_mkdir(path, *arguments, **options):
            if self._blocked(path):
                self._refuse(path)
            return real_mkdir(path, *arguments, **options)

        def guarded_move(real):
            def move(source, target, *arguments, **options):
                for path in (source, target):
                    if self._blocked(path):
                        self._refuse(path)
                return real(source, target, *arguments, **options)

            return move

        def guarded_unlink(path, *arguments, **options):
            if self._blocked(path):
                self._refuse(path)
            return real_unlink(path, *arguments, **options)

        monkeypatch.setattr(builtins, "open", guarded_open)
        monkeypatch.setattr(io, "open", guarded_open)
        monkeypatch.setattr(os, "open", guarded_os_open)
        monkeypatch.setattr(os, "mkdir", guarded_mkdir)
        monkeypatch.setattr(os, "replace", guarded_move(real_replace))
        monkeypatch.setattr(os, "rename", guarded_move(real_rename))
        monkeypatch.setattr(os, "unlink", guarded_unlink)
        monkeypatch.setattr(os, "remove", guarded_unlink)


@pytest.fixture
def read_only(monkeypatch):
    folders = ReadOnlyFolders(monkeypatch)
    yield folders
    if not folders.root:
        for folder in folders.folders:
            os.chmod(folder, 0o755)


def refused(*arguments, contains=()) -> str:
    return one_line_error(invoke(*arguments), *contains)


def test_interim_folder_not_writable_is_one_line(digits, project, read_only):
    interim = project / "data" / "interim" / "digits"
    interim.mkdir(parents=True, exist_ok=True)
    read_only.add(interim)
    refused("folds", "digits", contains=(str(interim), "no permission", "chmod"))
    assert not any(interim.iterdir())  # nothing half-written left there


def test_data_folder_not_writable_is_one_line(digits, project, read_only):
    data = project / "data"
    shutil.rmtree(data / "interim", ignore_errors=True)
    read_only.add(data)
    refused("folds", "digits", contains=(str(data / "interim"), "no permission", "chmod"))


def test_runs_folder_not_writable_is_one_line(digits, project, read_only):
    runs = project / "runs" / "digits"
    runs.mkdir(parents=True, exist_ok=True)
    read_only.add(runs)
    refused("train", "digits", *sets(["train.epochs=1"]), contains=(str(runs), "no permission", "chmod"))
    assert not any(runs.iterdir())


def test_submissions_folder_not_writable_is_one_line(digits, project, read_only):
    """What `kit predict` and `kit submit` write there: the submission file, its checksum, a ledger row."""
    from kit import ledger
    from kit.predict import submission

    config = digits()
    folder = project / "submissions"
    folder.mkdir()
    read_only.add(folder)
    sample = submission.read_sample(config)
    frame = pd.DataFrame({"id": sample["id"], "label": "1"})
    for write in (
        lambda: submission.write(
            config, frame, sample, "accuracy", 0.5, [str(d) for d in range(10)], task=SINGLE_LABEL
        ),
        lambda: ledger.append_ledger({"competition": "digits", "file": "a.csv"}),
    ):
        with pytest.raises(KitError) as error:
            write()
        assert str(folder) in error.value.message and "chmod" in error.value.message
        assert "\n" not in error.value.message
    assert not any(folder.iterdir())


# --- class 5 and 7: image caches that are stale, damaged, or left half-built ---------------------------


def save_image(path: Path, seed: int, side: int = 16) -> None:
    """A PPM photo: its size in bytes depends only on its side, so another picture can keep the size."""
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="PPM")


def image_files(folder: Path, count: int = 3, side: int = 16) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"image-{index}.ppm" for index in range(count)]
    for index, path in enumerate(paths):
        save_image(path, index, side)
    return paths


def rewrite_keeping_size_and_time(path: Path, change) -> None:
    status = path.stat()
    data = bytearray(path.read_bytes())
    change(data)
    path.write_bytes(bytes(data))
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns))
    assert path.stat().st_size == status.st_size and path.stat().st_mtime_ns == status.st_mtime_ns


@pytest.mark.parametrize(
    ("side", "where"),
    [(16, "whole"), (300, "start"), (300, "end")],  # 300 px: 270 KB, beyond the whole-file fingerprint
)
def test_image_changed_with_same_size_and_time_rebuilds_the_cache(tmp_path, side, where):
    from kit.data.images import image_cache

    paths = image_files(tmp_path / "raw", side=side)
    before, _ = image_cache(paths, 8, tmp_path / "interim", "train")
    before = np.array(before)

    def change(data: bytearray) -> None:
        span = slice(-3000, None) if where == "end" else slice(100, 3100)  # past the PPM header
        data[span] = bytes(255 - byte for byte in data[span])

    rewrite_keeping_size_and_time(paths[1], change)
    after, _ = image_cache(paths, 8, tmp_path / "interim", "train")
    assert not np.array_equal(after[1], before[1])  # the new picture, not the stale one
    assert np.array_equal(after[0], before[0]) and np.array_equal(after[2], before[2])


def _damage_truncated(array: Path, report: Path) -> None:
    array.write_bytes(array.read_bytes()[: array.stat().st_size // 2])


def _damage_empty(array: Path, report: Path) -> None:
    array.write_bytes(b"")


def _damage_report(array: Path, report: Path) -> None:
    report.write_text('{"half a')


def _damage_report_shape(array: Path, report: Path) -> None:
    report.write_text("[1, 2]")


def _damage_not_an_array(array: Path, report: Path) -> None:
    array.write_text("not an array at all\n" * 20)


@pytest.mark.parametrize(
    "damage", [_damage_truncated, _damage_empty, _damage_report, _damage_report_shape, _damage_not_an_array]
)
def test_damaged_image_cache_is_rebuilt_and_said(tmp_path, capsys, damage):
    from kit.data.images import image_cache

    paths = image_files(tmp_path / "raw")
    cache = tmp_path / "interim"
    first, problems = image_cache(paths, 8, cache, "train")
    first = np.array(first)
    array = next(cache.glob("train-8px-*.npy"))
    damage(array, array.with_suffix(".bad.json"))
    capsys.readouterr()
    again, problems = image_cache(paths, 8, cache, "train")
    assert np.array_equal(again, first) and problems == {}
    said = [line for line in capsys.readouterr().err.splitlines() if "damaged cache" in line]
    assert len(said) == 1 and str(array) in said[0] and "rebuilding" in said[0]


def test_killed_cache_builds_leave_no_temporary_files(tmp_path, capsys):
    """A build killed half-way (Ctrl-C twice, the OOM killer, a closed laptop) leaves its hidden temporary
    array: tens of MB each. The next build removes those no process is writing; other files stay."""
    from filelock import FileLock

    from kit.data.images import cache_key, image_cache

    paths = image_files(tmp_path / "raw")
    cache = tmp_path / "interim"
    cache.mkdir()
    key = cache_key(paths, 8)
    left = [
        cache / f".train-8px-{key}.npy.k1ll3d_1.tmp",  # this very cache, killed before
        cache / ".train-8px-0123456789abcdef.npy.k1ll3d_2.tmp",  # an older cache's, killed
        cache / ".test-8px-0123456789abcdef.bad.json.k1ll3d_3.tmp",
    ]
    busy = cache / ".test-16px-fedcba9876543210.npy.busy_123.tmp"  # being built by another command now
    theirs = cache / ".notes.tmp"  # not a cache's
    for path in [*left, busy, theirs]:
        path.write_bytes(b"\0" * 100_000)
    lock = FileLock(cache / ".test-16px-fedcba9876543210.npy.lock")
    lock.acquire()
    try:
        image_cache(paths, 8, cache, "train")
    finally:
        lock.release()
    assert not any(path.exists() for path in left)
    assert busy.exists() and theirs.exists()
    said = capsys.readouterr().err
    assert all(str(path) in said for path in left) and "interrupted cache build" in said


# --- class 4: labels that only look alike ----------------------------------------------------------------


def raw(project: Path) -> Path:
    return project / "data" / "raw" / "digits"


def edit_labels(project: Path, change) -> pd.DataFrame:
    """train.csv of the digits, changed by `change(table)` (strings; row r of the file is index r - 2)."""
    path = raw(project) / "train.csv"
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    changed = change(table)
    table = table if changed is None else changed
    table.to_csv(path, index=False)
    return table


def set_label(row: int, label: str):
    def change(table: pd.DataFrame) -> None:
        table.loc[row - 2, "label"] = label

    return change


def set_id(row: int, identifier: str):
    def change(table: pd.DataFrame) -> None:
        table.loc[row - 2, "id"] = identifier

    return change


def test_labels_01_and_1_are_refused_naming_both_rows(digits, project):
    table = edit_labels(project, lambda table: None)
    row = int(np.flatnonzero(table["label"] == "3")[1]) + 2  # the second '3' in the file
    edit_labels(project, set_label(row, "03"))
    first = int(np.flatnonzero(table["label"] == "3")[0]) + 2
    refused(
        "folds",
        "digits",
        contains=("train.csv", "'3'", f"row {first}", "'03'", f"row {row}", "number", "write them the same"),
    )


def test_labels_1_and_1_0_are_refused(digits, project):
    table = edit_labels(project, lambda table: None)
    row = int(np.flatnonzero(table["label"] == "1")[2]) + 2
    edit_labels(project, set_label(row, "1.0"))
    refused("folds", "digits", contains=("train.csv", "'1.0'", f"row {row}", "write them the same"))


@pytest.mark.parametrize("marker", ["NaN", "nan", "<NA>", "NULL"])
def test_a_label_written_as_pandas_missing_value_is_refused(digits, project, marker):
    edit_labels(project, set_label(7, marker))
    refused("folds", "digits", contains=("train.csv", "row 7", repr(marker), "missing value", "fill in"))


MULTI_LABEL = ["competition.task=multi_label", "competition.metric=f2_samples"]


def test_tags_differing_only_in_case_are_refused_like_labels(digits, project):
    """Whole labels differing in case were refused, tags were not: 'Seven' and 'seven' became two tags."""

    def change(table: pd.DataFrame) -> None:
        table.loc[0, "label"] = "3 seven"
        table.loc[4, "label"] = "Seven 1"

    edit_labels(project, change)
    refused(
        "folds",
        "digits",
        *sets(MULTI_LABEL),
        contains=("train.csv", "tags", "'seven' (row 2)", "'Seven' (row 6)", "only in case"),
    )


def test_tags_01_and_1_are_refused(digits, project):
    def change(table: pd.DataFrame) -> None:
        table.loc[1, "label"] = "4 01"

    edit_labels(project, change)
    refused("folds", "digits", *sets(MULTI_LABEL), contains=("train.csv", "'01' (row 3)", "tags"))


def test_a_tag_written_as_pandas_missing_value_is_refused(digits, project):
    edit_labels(project, set_label(9, "2 nan"))
    refused("folds", "digits", *sets(MULTI_LABEL), contains=("train.csv", "row 9", "'nan'", "missing value"))


@pytest.mark.parametrize(
    ("header", "column", "positions"), [("id,label,label", "label", "2, 3"), ("id,label,id", "id", "1, 3")]
)
def test_two_columns_with_one_name_are_refused(digits, project, header, column, positions):
    """pandas renames the second 'label' to 'label.1' and the kit read the first without a word."""
    path = raw(project) / "train.csv"
    lines = path.read_text().splitlines()
    extra = [line.split(",")[1 if column == "label" else 0] for line in lines[1:]]
    extra = [value if column == "id" else str((int(value) + 1) % 10) for value in extra]
    rows = [f"{line},{value}" for line, value in zip(lines[1:], extra, strict=True)]
    path.write_text("\n".join([header, *rows]) + "\n")
    refused(
        "folds", "digits", contains=("train.csv", repr(column), f"columns {positions}", "rename or remove")
    )


def test_sample_submission_with_a_repeated_id_column_is_refused(digits, project):
    from kit.data.labels import load_test

    path = raw(project) / "sample_submission.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(["id,label,id"] + [f"{line},x" for line in lines[1:]]) + "\n")
    with pytest.raises(KitError) as error:
        load_test(digits())
    assert "sample_submission.csv" in error.value.message and "'id' 2 times" in error.value.message


# --- class 11: a 300-character id, a link loop, a sample's column order, an ensemble's variant ---------


def test_a_300_character_id_is_refused_naming_its_row(digits, project):
    edit_labels(project, set_id(4, "x" * 300))
    refused("folds", "digits", contains=("train.csv", "row 4", "300 characters", "fix that row"))


def test_a_300_character_test_id_is_refused_naming_its_row(digits, project):
    from kit.data.labels import load_test

    path = raw(project) / "sample_submission.csv"
    table = pd.read_csv(path, dtype=str)
    table.loc[5, "id"] = "y" * 300
    table.to_csv(path, index=False)
    with pytest.raises(KitError) as error:
        load_test(digits())
    assert "sample_submission.csv row 7" in error.value.message and "300 characters" in error.value.message


def test_an_image_link_that_loops_is_refused_naming_it(digits, project):
    image = raw(project) / "train" / "digit-0005.png"
    image.unlink()
    image.symlink_to(image.name)  # digit-0005.png -> digit-0005.png
    refused("folds", "digits", contains=("digit-0005.png", "loop", "replace it"))


def test_a_train_folder_link_that_loops_is_refused_naming_it(digits, project):
    folder = raw(project) / "train"
    shutil.rmtree(folder)
    folder.symlink_to("train-again")
    (raw(project) / "train-again").symlink_to("train")  # train -> train-again -> train
    refused("folds", "digits", contains=("train", "loop", "replace it"))


def test_sample_submission_with_the_id_column_last(digits, project):
    """The sample lists 'label,id': the submission follows it (before, the kit refused its own file)."""
    from kit.predict import submission

    path = raw(project) / "sample_submission.csv"
    table = pd.read_csv(path, dtype=str)
    table[["label", "id"]].to_csv(path, index=False)
    config = digits()
    sample = submission.read_sample(config)
    classes = [str(digit) for digit in range(10)]
    probabilities = np.eye(10)[np.arange(len(sample)) % 10]
    frame = submission.build(config, list(sample["id"]), probabilities, classes, sample, task=SINGLE_LABEL)
    assert list(frame.columns) == ["label", "id"]
    assert submission.problems(config, frame, sample, classes, task=SINGLE_LABEL) == []
    assert list(frame["label"][:3]) == ["0", "1", "2"]


def test_probability_sample_with_the_id_column_last(digits, project):
    from kit.predict import submission

    path = raw(project) / "sample_submission.csv"
    table = pd.read_csv(path, dtype=str)
    classes = [str(digit) for digit in range(10)]
    columns = {name: "0.1" for name in classes}
    pd.DataFrame({**columns, "id": table["id"]}).to_csv(path, index=False)
    config = digits("submission.format=probabilities", "competition.metric=log_loss")
    sample = submission.read_sample(config)
    probabilities = np.full((len(sample), 10), 0.1)
    frame = submission.build(config, list(sample["id"]), probabilities, classes, sample, task=SINGLE_LABEL)
    assert list(frame.columns) == [*classes, "id"]
    assert submission.problems(config, frame, sample, classes, task=SINGLE_LABEL) == []


# --- class 5: stale runs blended, an edited submission uploaded ------------------------------------------


def fake_run(project: Path, name: str, ids: list[str], ensemble: bool = False) -> Path:
    """A finished run folder as `kit ensemble` reads it (no training): its config, summary, out-of-fold
    and test probabilities, and the training ids its rows follow, recorded as training records them."""
    folder = project / "runs" / "digits" / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}\n")
    classes = [str(digit) for digit in range(10)]
    try:
        from kit.run import LAYOUT  # the run records' layout this kit reads
    except ImportError:  # a kit before versioned run records
        LAYOUT = None  # noqa: N806
    summary = {
        "layout": LAYOUT,
        "metric": "accuracy",
        "cv": 0.5,
        "cv_uncalibrated": 0.5,
        "task": {"name": "single_label"},
        "decisions": {},
        "classes": classes,
        "folds_trained": [] if ensemble else [0],
        "folds": {},
    }
    if ensemble:
        summary["ensemble"] = {"runs": ["20260101-000000-a", "20260101-000000-b"], "weights": [0.5, 0.5]}
    (folder / "metrics.json").write_text(json.dumps(summary))
    rng = np.random.default_rng(len(name))
    np.save(folder / "oof.npy", rng.dirichlet(np.ones(10), len(ids)))
    test_rows = len(pd.read_csv(raw(project) / "sample_submission.csv"))
    np.save(folder / "test-probabilities.npy", rng.dirichlet(np.ones(10), test_rows))
    calibration = {"temperature": 1.0, "epsilon": 0.0, "applied": False}
    (folder / "submission.json").write_text(json.dumps({"file": "none.csv", "calibration": calibration}))
    # The training ids the rows follow, as `kit train` records them (kit.data.labels.record_row_order).
    digest = hashlib.sha1("\n".join(ids).encode()).hexdigest()
    (folder / "row-order.json").write_text(json.dumps({"rows": len(ids), "ids_sha1": digest}))
    return folder


def test_ensemble_refuses_runs_trained_before_the_labels_were_re_sorted(digits, project):
    ids = list(pd.read_csv(raw(project) / "train.csv", dtype=str)["id"])
    fake_run(project, "20260101-000000-a", ids)
    fake_run(project, "20260101-000000-b", ids)
    edit_labels(project, lambda table: table.sort_values("id"))  # same rows, other order
    refused(
        "ensemble",
        "digits",
        "20260101-000000-a",
        "20260101-000000-b",
        contains=("20260101-000000-a", "another order", "row-order.json", "train 20260101-000000-a again"),
    )
    assert not any(path.name.endswith("-ensemble") for path in (project / "runs" / "digits").iterdir())


def test_ensemble_refuses_runs_whose_ids_were_replaced_keeping_the_count(digits, project):
    ids = list(pd.read_csv(raw(project) / "train.csv", dtype=str)["id"])
    fake_run(project, "20260101-000000-a", ids)
    fake_run(project, "20260101-000000-b", ids)

    def swap(table: pd.DataFrame) -> None:  # two rows exchange their images and labels
        table.iloc[[0, 1]] = table.iloc[[1, 0]].to_numpy()

    edit_labels(project, swap)
    refused("ensemble", "digits", "20260101-000000-a", "20260101-000000-b", contains=("another order",))


def test_ensemble_of_an_ensemble_variant_is_refused(digits, project):
    ids = list(pd.read_csv(raw(project) / "train.csv", dtype=str)["id"])
    fake_run(project, "20260101-000000-a", ids)
    fake_run(project, "20260101-000001-ensemble", ids, ensemble=True)
    refused(
        "ensemble",
        "digits",
        "20260101-000001-ensemble@snapshot-1",
        "20260101-000000-a",
        contains=("20260101-000001-ensemble@snapshot-1", "is an ensemble", "20260101-000000-b"),
    )


@pytest.mark.parametrize(
    "edit",
    [
        lambda text: text.replace(",3\n", ",8\n", 1),  # one label changed: the same size
        lambda text: text.replace(",1\n", ",7\n"),  # every 1 made a 7
        lambda text: "\n".join([text.splitlines()[0], *reversed(text.splitlines()[1:])]) + "\n",  # re-sorted
    ],
    ids=["one-label", "every-1-a-7", "re-sorted"],
)
def test_submission_edited_after_predict_is_not_submitted(digits, project, edit):
    """A file edited by hand after `kit predict` was submitted (here scored by the digits' local hook)
    and recorded in the ledger with the run's CV, a CV of another file."""
    from kit import ledger
    from kit.predict import submission

    config = digits()
    ids = list(pd.read_csv(raw(project) / "train.csv", dtype=str)["id"])
    run = fake_run(project, "20260101-000000-a", ids)
    (run / "provenance.json").write_text('{"commit": "0123456789ab"}\n')
    sample = submission.read_sample(config)
    frame = pd.DataFrame({"id": sample["id"], "label": [str(n % 10) for n in range(len(sample))]})
    path = submission.write(
        config, frame, sample, "accuracy", 0.5, [str(d) for d in range(10)], task=SINGLE_LABEL
    )
    (run / "submission.json").write_text(json.dumps({"file": path.name}))
    path.write_text(edit(path.read_text()))
    edited = path.read_bytes()
    refused("submit", "digits", "--run", run.name, contains=(str(path), "changed since", "delete it"))
    assert path.read_bytes() == edited  # the user's file is left as it is
    assert len(ledger.read_ledger()) == 0


@pytest.mark.parametrize("command", ["predict", "report"])
def test_predict_and_report_refuse_a_run_trained_before_the_labels_were_re_sorted(digits, project, command):
    """Prediction calibrates on the run's OOF against today's labels, the report draws them: both would
    pair each out-of-fold row with another image's label."""
    ids = list(pd.read_csv(raw(project) / "train.csv", dtype=str)["id"])
    fake_run(project, "20260101-000000-a", ids)
    edit_labels(project, lambda table: table.sort_values("id"))
    refused(command, "digits", "20260101-000000-a", contains=("20260101-000000-a", "another order"))


@pytest.mark.slow
def test_training_records_its_rows_and_resume_refuses_re_sorted_labels(digits, project):
    """`kit train` records which training ids its out-of-fold rows follow; a run resumed after the labels
    file was re-sorted would mix rows of two orders, so --resume refuses it."""
    from conftest import TINY

    result = invoke("train", "digits", *sets([*TINY, "stages=[{cycle_len=0.05}]", "predict.tta=0"]))
    assert result.exit_code == 0, result.output
    (run,) = [path for path in (project / "runs" / "digits").iterdir() if path.is_dir()]
    ids = list(pd.read_csv(raw(project) / "train.csv", dtype=str)["id"])
    record = json.loads((run / "row-order.json").read_text())
    assert record == {"rows": len(ids), "ids_sha1": hashlib.sha1("\n".join(ids).encode()).hexdigest()}
    (run / "metrics.json").unlink()  # as if stopped before the end: a run to resume
    edit_labels(project, lambda table: table.sort_values("id"))
    refused("train", "digits", "--resume", contains=(run.name, "another order", "start a new run"))


@pytest.mark.parametrize("damage", ["truncated", "empty", "other-rows"])
def test_damaged_feature_cache_is_rebuilt_and_said(tmp_path, capsys, damage):
    """Precomputed body features live in data/interim too: a damaged file is computed again."""
    import torch

    from kit import models
    from kit.train.features import body_features_cached

    torch.manual_seed(0)
    model = models.create_model("test_efficientnet", 3, pretrained=False)
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    first = body_features_cached(model, images, "test", tmp_path, 4, 32)
    (path,) = tmp_path.glob("features-*.npy")
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        np.save(path, np.zeros((3, first.shape[1]), dtype=np.float32))
    capsys.readouterr()
    again = body_features_cached(model, images, "test", tmp_path, 4, 32)
    assert np.allclose(again, first, atol=1e-5)
    said = capsys.readouterr().err
    assert str(path) in said and "damaged cache" in said and "rebuilding" in said


def _need_cache(barrier, worker: int, paths: list[Path], cache: Path) -> list[tuple[bool, str]]:
    """What `kit train` and `kit predict` started together do first: take the image cache. Whether this
    process decoded the images (its progress bar) and a digest of the array it got."""
    import contextlib
    import io

    from kit.data.images import image_cache

    said = io.StringIO()
    barrier.wait()
    with contextlib.redirect_stderr(said):
        images, _ = image_cache(paths, 16, cache, "train")
    return [("cache train" in said.getvalue(), hashlib.sha1(np.ascontiguousarray(images)).hexdigest())]


def test_two_commands_needing_one_cache_build_it_once(tmp_path):
    """Two commands started together on a competition without a cache both decoded every image (minutes
    on a real set), each renaming its own copy over the other's: the second now waits and reads it."""
    paths = image_files(tmp_path / "raw", count=300, side=96)
    results = run_together(_need_cache, 3, paths, tmp_path / "interim")
    assert sum(built for built, _ in results) == 1, results
    assert len({digest for _, digest in results}) == 1
    assert len(list((tmp_path / "interim").glob("train-16px-*.npy"))) == 1


@pytest.mark.parametrize("archives", [["dogs.zip"], ["train.zip", "test.zip"]])
def test_kit_new_from_raw_on_unextracted_zips_says_to_extract_them(project, archives):
    """Class 11: a hand-filled folder still holding the competition's zip archives (not extracted) is one
    line naming the archives and the command that extracts them; nothing is written or extracted."""
    import zipfile

    raw = project / "data" / "raw" / "kittens"
    raw.mkdir(parents=True)
    for name in archives:
        with zipfile.ZipFile(raw / name, "w") as archive:
            archive.writestr("train/cat.1.jpg", b"not read")
    before = sorted(path.name for path in raw.iterdir())
    result = invoke("new", "kittens", "--from-raw")
    assert result.exit_code == 1 and "not extracted" in result.output and archives[0] in result.output
    assert f"unzip -q {sorted(archives)[0]}" in result.output and len(result.output.strip().splitlines()) == 1
    assert sorted(path.name for path in raw.iterdir()) == before
    assert not (project / "competitions" / "kittens").exists()
