"""Folds that respect groups (issue 26): a group is never split, whatever the task, groups and seed;
near-duplicate photos are found (real photos with planted copies) and grouped."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import invoke
from PIL import Image, ImageOps

from kit.competitions import load_competition
from kit.data.folds import assign_binned_folds, assign_folds, assign_tag_folds, balance_line, load_folds
from kit.data.groups import join_groups, obvious_group_column
from kit.data.labels import load_labels
from kit.errors import KitError

PHOTOS = Path("/work/shared/data/dog-breed-identification-sample")


def one_fold_per_group(folds: np.ndarray, groups: np.ndarray) -> bool:
    return all(len(np.unique(folds[groups == group])) == 1 for group in np.unique(groups))


@pytest.mark.parametrize("task", ["classes", "tags", "bins"])
def test_a_grouped_split_never_splits_a_group(task):
    """A property over random data: 40 draws of rows, group sizes, labels, fold counts and seeds."""
    for draw in range(40):
        random = np.random.default_rng(draw)
        rows, n_folds = int(random.integers(30, 200)), int(random.integers(2, 6))
        groups = random.integers(0, int(random.integers(n_folds, rows // 2)), rows)
        groups[:n_folds] = np.arange(n_folds) + groups.max() + 1  # at least n_folds groups
        seed = int(random.integers(0, 2**31))
        if task == "classes":
            targets = random.integers(0, int(random.integers(2, 6)), rows)
            targets[: n_folds * 2] = 0  # some class fills every fold
            folds = assign_folds(targets, n_folds, seed, groups=groups)
        elif task == "tags":
            targets = (random.random((rows, 4)) < 0.3).astype(np.int64)
            folds = assign_tag_folds(targets, n_folds, seed, groups=groups)
        else:
            folds = assign_binned_folds(random.normal(size=rows), n_folds, seed, groups=groups)
        assert one_fold_per_group(folds, groups), (draw, task)
        assert sorted(np.unique(folds).tolist()) == list(range(n_folds)), (draw, task)


def test_grouped_classes_stay_stratified_and_seeded():
    random = np.random.default_rng(0)
    groups = np.repeat(np.arange(100), 3)  # 100 patients of 3 photos
    targets = np.repeat(random.integers(0, 2, 100), 3)
    folds = assign_folds(targets, 5, seed=1, groups=groups)
    shares = [targets[folds == fold].mean() for fold in range(5)]
    assert max(shares) - min(shares) < 0.15, shares
    assert np.array_equal(folds, assign_folds(targets, 5, seed=1, groups=groups))
    assert not np.array_equal(folds, assign_folds(targets, 5, seed=2, groups=groups))


def test_fewer_groups_than_folds_is_refused():

    with pytest.raises(KitError) as raised:
        assign_folds(np.array([0, 1] * 10), 5, seed=0, groups=np.array([0, 1, 2] * 6 + [0, 1]))
    assert "3 groups" in raised.value.message and "train.folds to at most 3" in raised.value.message


def test_duplicate_pairs_join_groups():
    joined = join_groups(np.array([0, 0, 1, 2, 3, 3]), np.array([[1, 2], [4, 4]]), 6)
    assert joined.tolist() == [0, 0, 0, 1, 2, 2]
    assert join_groups(None, np.array([[0, 3]]), 4).tolist() == [0, 1, 2, 0]


def test_obvious_group_columns_are_detected():
    assert obvious_group_column(["image", "label", "Patient_ID"]) == "Patient_ID"
    assert obvious_group_column(["id", "breed"]) == ""


def breeds(project: Path, data: str = "", hooks: str = "", rows: int = 60) -> Path:
    folder = project / "competitions" / "breeds"
    folder.mkdir(parents=True)
    (folder / "competition.toml").write_text(
        f'[data]\nlabels_csv = "labels.csv"\n{data}\n[train]\nfolds = 3\n'
    )
    if hooks:
        (folder / "hooks.py").write_text(hooks)
    raw = project / "data" / "raw" / "breeds"
    (raw / "train").mkdir(parents=True)
    labels = ["pug", "akita"] * (rows // 2)
    patients = [f"p{index // 4}" for index in range(rows)]  # 15 groups of 4
    pd.DataFrame({"id": [f"img{i}" for i in range(rows)], "label": labels, "patient_id": patients}).to_csv(
        raw / "labels.csv", index=False
    )
    return raw


def test_a_group_column_keeps_groups_whole_and_is_recorded(project):
    breeds(project, 'group_column = "patient_id"')
    config = load_competition("breeds")
    labels = load_labels(config)
    folds = load_folds(config, labels)
    patients = np.array([f"p{index // 4}" for index in range(60)])
    assert one_fold_per_group(folds, patients)
    interim = project / "data" / "interim" / "breeds"
    assert pd.read_json(interim / "folds.json", typ="series")["group_column"] == "patient_id"
    assert not one_fold_per_group(
        load_folds(load_competition("breeds", ["data.group_column="]), labels), patients
    )
    line = balance_line(folds, labels)
    assert re.match(r"folds: 3 of \d+-\d+ rows; every share within [\d.]+ points of the whole", line), line


def test_a_groups_hook_keeps_groups_whole(project):
    breeds(project, hooks="def groups(ids, raw_dir):\n    return [int(i[3:]) // 6 for i in ids]\n")
    config = load_competition("breeds")
    folds = load_folds(config, load_labels(config))
    assert one_fold_per_group(folds, np.arange(60) // 6)


def test_a_hand_made_split_that_splits_a_group_is_refused(project):
    breeds(project, 'group_column = "patient_id"')
    path = project / "data" / "interim" / "breeds" / "folds.csv"
    path.parent.mkdir(parents=True)
    pd.DataFrame({"id": [f"img{i}" for i in range(60)], "fold": [i % 3 for i in range(60)]}).to_csv(
        path, index=False
    )
    result = invoke("folds", "breeds")
    assert (
        result.exit_code == 1
        and "puts one group (patient_id, the group of 'img0') in folds [0, 1, 2]" in (result.output)
    ), result.output


def planted(project: Path, data: str = "") -> tuple[list[str], dict[str, str]]:
    """18 real dog photos as a competition, 3 of them with a copy in train (re-encoded, mirrored, cropped
    10%) and one with a copy in test; returns the train ids and {copy: original}."""
    photos = sorted((PHOTOS / "train").glob("*.jpg"))[:18]
    breeds_of = pd.read_csv(PHOTOS / "labels.csv").set_index("id")["breed"]
    folder = project / "competitions" / "dogs"
    folder.mkdir(parents=True)
    (folder / "competition.toml").write_text(
        f'[data]\nlabels_csv = "labels.csv"\nlabel_column = "breed"\n{data}\n[train]\nfolds = 3\n'
    )
    raw = project / "data" / "raw" / "dogs"
    (raw / "train").mkdir(parents=True)
    (raw / "test").mkdir()
    rows, copies = [], {}
    for photo in photos:
        (raw / "train" / photo.name).write_bytes(photo.read_bytes())
        rows.append((photo.stem, breeds_of[photo.stem]))
    makes = {
        "reencoded": lambda image: image,
        "mirrored": ImageOps.mirror,
        "cropped": lambda image: image.crop(
            (image.width // 10, image.height // 10, image.width * 9 // 10, image.height * 9 // 10)
        ),
    }
    for index, (kind, make) in enumerate(makes.items()):
        source = photos[index]
        make(Image.open(source).convert("RGB")).save(raw / "train" / f"copy-{kind}.jpg", quality=40)
        label = breeds_of[source.stem] if kind != "cropped" else "not-" + breeds_of[source.stem]
        rows.append((f"copy-{kind}", label))
        copies[f"copy-{kind}"] = source.stem
    for photo in sorted((PHOTOS / "test").glob("*.jpg"))[:5]:
        (raw / "test" / photo.name).write_bytes(photo.read_bytes())
    Image.open(photos[5]).convert("RGB").resize((200, 150)).save(raw / "test" / "leaked.jpg", quality=60)
    pd.DataFrame(rows, columns=["id", "breed"]).to_csv(raw / "labels.csv", index=False)
    test_ids = [path.stem for path in sorted((raw / "test").glob("*.jpg"))]
    pd.DataFrame({"id": test_ids}).to_csv(raw / "sample_submission.csv", index=False)
    return [row[0] for row in rows], {**copies, "leaked": photos[5].stem}


@pytest.mark.skipif(not PHOTOS.is_dir(), reason="the shared real photos are not here")
def test_planted_duplicates_are_found_listed_and_grouped(project):
    ids, copies = planted(project)
    result = invoke("duplicates", "dogs")
    assert result.exit_code == 0, (result.output, result.exc_info)
    found = pd.read_csv(project / "data" / "interim" / "dogs" / "duplicates.csv", dtype=str)
    pairs = {frozenset((row.id, row.other_id)): row.kind for row in found.itertuples()}
    for copy, original in copies.items():
        kind = "train-test" if copy == "leaked" else "train"
        assert pairs.get(frozenset((copy, original))) == kind, (copy, found)
    assert len(pairs) == len(copies), found  # the other real photos pair with nothing
    assert (
        "3 near-duplicate pairs within 21 training images, 1 of them with different labels" in result.output
    )
    assert f"train/test: {copies['leaked']}" in result.output and "~ leaked" in result.output
    assert "labels differ" in result.output and "copy-cropped" in result.output

    grouped = load_competition("dogs", ["data.duplicates=group", "train.folds=2"])
    folds = load_folds(grouped, load_labels(grouped))
    fold_of = dict(zip(ids, folds.tolist(), strict=True))
    for copy, original in copies.items():
        if copy != "leaked":
            assert fold_of[copy] == fold_of[original], copy


def test_kit_new_detects_an_obvious_group_column_and_says_so(tmp_path):
    import tomllib

    from kit.kaggle import raw_layout, scaffold

    raw = tmp_path / "raw"
    (raw / "train").mkdir(parents=True)
    (raw / "test").mkdir()
    ids = [f"scan{n}" for n in range(12)]
    for identifier in ids + ["t1"]:
        folder = raw / ("test" if identifier == "t1" else "train")
        Image.fromarray(np.full((8, 8, 3), 90, dtype=np.uint8)).save(folder / f"{identifier}.jpg")
    table = {"image": ids, "Patient_ID": [f"p{n // 3}" for n in range(12)], "target": ["a", "b"] * 6}
    pd.DataFrame(table).to_csv(raw / "train.csv", index=False)
    (raw / "sample_submission.csv").write_text("image,target\nt1,a\n")
    layout = raw_layout.inspect(raw)
    assert layout.data["group_column"] == "Patient_ID"
    written = tomllib.loads(scaffold.render("scans", "", layout, "accuracy"))
    assert written["data"]["group_column"] == "Patient_ID"
    said = scaffold.report(layout, "accuracy", tmp_path / "competition.toml")
    assert "groups: 'Patient_ID' (data.group_column): folds never split a group" in said

    pd.DataFrame({key: table[key] for key in ("image", "target")}).to_csv(raw / "train.csv", index=False)
    layout = raw_layout.inspect(raw)
    assert "group_column" not in layout.data
    assert "no group column found" in scaffold.report(layout, "accuracy", tmp_path / "competition.toml")



def test_kit_new_takes_no_flag_named_group_for_groups():
    """Pawpularity's train.csv has a 0/1 photo feature called 'Group': it is no grouping of images (folds
    over 2 groups could not even be made), nor is a column whose values are all distinct."""
    from kit.kaggle import raw_layout

    ids = [f"pet{n}" for n in range(12)]
    for group, expected in (
        ([n % 2 for n in range(12)], ""),
        ([f"g{n}" for n in range(12)], ""),
        ([f"g{n // 3}" for n in range(12)], "Group"),
    ):
        table = pd.DataFrame({"Id": ids, "Group": group, "Pawpularity": list(range(1, 13))})
        assert raw_layout.group_column_of(table, "Id", "Pawpularity") == expected
