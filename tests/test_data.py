"""Label tables, test ids and folds, from tiny competitions written by the tests themselves."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from kit.competitions import load_competition
from kit.data.folds import assign_folds, load_folds, small_classes
from kit.data.labels import load_labels, load_test
from kit.errors import KitError


def competition(project: Path, name: str, data_section: str = "", extra: str = "", overrides=()):
    """A competition folder with a competition.toml, and its (empty) raw folder; returns (config, raw)."""
    folder = project / "competitions" / name
    folder.mkdir(parents=True)
    (folder / "competition.toml").write_text(f"[data]\n{data_section}\n{extra}")
    raw = project / "data" / "raw" / name
    raw.mkdir(parents=True)
    return load_competition(name, overrides), raw


def image(path: Path, value: int = 0) -> Path:
    """A tiny real image file (the format follows the extension)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 4, 3), value, dtype=np.uint8)).save(path)
    return path


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text.strip() + "\n")
    return path


def error_message(function, *arguments) -> str:
    with pytest.raises((click.ClickException, KitError)) as raised:
        function(*arguments)
    message = raised.value.message
    assert "\n" not in message
    return message


# Labels -------------------------------------------------------------------------------------------------


def test_labels_from_csv(project):
    config, raw = competition(
        project,
        "breeds",
        'labels_csv = "labels.csv"\nid_column = "image"\nlabel_column = "breed"\nextension = ".jpg"',
    )
    write_csv(raw / "labels.csv", "image,breed,extra\n0a1,pug,x\n0a2,beagle,y\n0a3,pug,z\n007,akita,w")
    labels = load_labels(config)
    assert labels.ids == ["0a1", "0a2", "0a3", "007"]  # strings: the leading zeros survive
    assert labels.classes == ["akita", "beagle", "pug"]
    assert labels.targets.tolist() == [2, 1, 2, 0] and labels.targets.dtype == np.int64
    assert labels.paths == [raw / "train" / f"{i}.jpg" for i in labels.ids]


def test_labels_from_file_names(project):
    config, raw = competition(project, "cats", 'labels = "filenames"\nextension = ".jpg"')
    for name in ["cat.12.jpg", "dog.3.jpg", "cat.0.jpg", "dog.12.jpg", "cat.1.JPG"]:
        image(raw / "train" / name)
    (raw / "train" / "notes.txt").write_text("not an image")
    labels = load_labels(config)
    assert [labels.classes[t] for t in labels.targets] == ["cat", "cat", "cat", "dog", "dog"]
    assert labels.classes == ["cat", "dog"]
    assert [p.name for p in labels.paths] == [
        "cat.0.jpg",
        "cat.1.JPG",
        "cat.12.jpg",
        "dog.12.jpg",
        "dog.3.jpg",
    ]
    # Ids identify images: cat.12 and dog.12 are two images, so their ids differ.
    assert len(set(labels.ids)) == 5


def test_file_name_that_does_not_match_the_pattern(project):
    config, raw = competition(project, "cats", 'labels = "filenames"\nextension = ".png"')
    image(raw / "train" / "cat.1.png")
    image(raw / "train" / "nodot.png")
    message = error_message(load_labels, config)
    assert "nodot.png" in message and "filename_pattern" in message


@pytest.mark.parametrize(
    "pattern, expected", [(r"^(?P<kind>[^.]+)\\.", "(?P<label>"), (r"^(?P<label>[^.]+", "not a regex")]
)
def test_bad_file_name_pattern(project, pattern, expected):
    config, raw = competition(project, "cats", f"labels = \"filenames\"\nfilename_pattern = '{pattern}'")
    image(raw / "train" / "cat.1.jpg")
    message = error_message(load_labels, config)
    assert str(config.path) in message and expected in message


def test_labels_from_one_folder_per_class(project):
    config, raw = competition(project, "flowers", 'labels = "folders"\nextension = ".png"')
    for path in ["train/rose/a.png", "train/rose/b.png", "train/tulip/a.png", "train/daisy/c.png"]:
        image(raw / path)
    labels = load_labels(config)
    assert labels.classes == ["daisy", "rose", "tulip"]
    assert labels.ids == ["daisy/c", "rose/a", "rose/b", "tulip/a"]
    assert labels.targets.tolist() == [0, 1, 1, 2]
    assert all(path.exists() for path in labels.paths)


def test_no_download_says_how_to_get_it(project):
    (project / "competitions" / "later").mkdir()
    (project / "competitions" / "later" / "competition.toml").write_text("")
    message = error_message(load_labels, load_competition("later"))
    assert "make download COMP=later" in message


def test_label_csv_without_the_configured_columns(project):
    config, raw = competition(project, "breeds", 'labels_csv = "labels.csv"\nlabel_column = "breed"')
    source = write_csv(raw / "labels.csv", "id,label\na,pug\nb,akita")
    message = error_message(load_labels, config)
    assert str(source) in message and "'breed'" in message and "label_column" in message


def test_missing_label_csv(project):
    config, raw = competition(project, "breeds", 'labels_csv = "labels.csv"')
    write_csv(raw / "other.csv", "id,label\na,b")
    assert str(raw / "labels.csv") in error_message(load_labels, config)


@pytest.mark.parametrize(
    "rows, expected",
    [
        ("id,label\na,pug\nb,akita\na,pug", ["duplicate id 'a'", "row 4"]),
        ("id,label\na,pug\nb,\nc,akita", ["empty label", "row 3"]),
        ("id,label\na,pug\nb,   \nc,akita", ["empty label", "row 3"]),
        ("id,label\na,pug\n../secret,akita", ["'../secret'"]),
        ("id,label\na,pug\nsub/b,akita", ["'sub/b'"]),
        ("id,label\n..,pug", ["'..'"]),
        ("id,label\n,pug", ["''"]),
        ("id,label", ["no training images"]),
    ],
)
def test_bad_label_rows(project, rows, expected):
    config, raw = competition(project, "breeds", 'labels_csv = "labels.csv"')
    source = write_csv(raw / "labels.csv", rows)
    message = error_message(load_labels, config)
    assert str(source) in message
    assert all(part in message for part in expected), message


# Test ids -----------------------------------------------------------------------------------------------


def test_test_ids_follow_sample_submission_order(project):
    config, raw = competition(project, "breeds", 'extension = ".png"')
    for name in ["b", "a", "c"]:
        image(raw / "test" / f"{name}.png")
    write_csv(raw / "sample_submission.csv", "id,pug,akita\nc,0.5,0.5\na,0.5,0.5\nb,0.5,0.5")
    test = load_test(config)
    assert test.ids == ["c", "a", "b"]
    assert test.paths == [raw / "test" / f"{i}.png" for i in ["c", "a", "b"]]


def test_test_ids_from_the_folder_without_a_sample(project):
    config, raw = competition(project, "breeds", 'extension = ".png"')
    for name in ["b", "a", "10"]:
        image(raw / "test" / f"{name}.png")
    (raw / "test" / "readme.txt").write_text("x")
    test = load_test(config)
    assert test.ids == ["10", "a", "b"]
    assert [p.name for p in test.paths] == ["10.png", "a.png", "b.png"]


def test_test_folder_with_no_images(project):
    config, raw = competition(project, "breeds", 'extension = ".png"')
    image(raw / "test" / "a.jpg")  # the wrong extension
    message = error_message(load_test, config)
    assert str(raw / "test") in message and "no test images" in message and "'.png'" in message


def test_missing_test_folder(project):
    config, raw = competition(project, "breeds", 'test_dir = "test_images"')
    (raw / "train.csv").write_text("id,label\n")
    message = error_message(load_test, config)
    assert str(raw / "test_images") in message and "data.test_dir" in message


@pytest.mark.parametrize(
    "rows, expected",
    [
        ("id,label\na,x\nb,x\na,x", ["duplicate id 'a'", "row 4"]),
        ("id,label\na,x\n../b,x", ["'../b'"]),
        ("image,label\na,x", ["'id'", "submission.id_column"]),
    ],
)
def test_bad_sample_submission(project, rows, expected):
    config, raw = competition(project, "breeds", 'extension = ".png"')
    image(raw / "test" / "a.png")
    sample = write_csv(raw / "sample_submission.csv", rows)
    message = error_message(load_test, config)
    assert str(sample) in message and all(part in message for part in expected), message


# Folds --------------------------------------------------------------------------------------------------


TARGETS = np.repeat([0, 1, 2], [30, 12, 8])  # unbalanced classes


def test_folds_are_stratified():
    folds = assign_folds(TARGETS, 4, seed=0)
    assert folds.shape == TARGETS.shape and set(folds.tolist()) == {0, 1, 2, 3}
    for fold in range(4):
        counts = np.bincount(TARGETS[folds == fold], minlength=3)
        assert (counts >= 2).all()  # every class in every fold, in proportion
        assert abs(counts[0] - 30 / 4) <= 1 and abs(counts[2] - 8 / 4) <= 1


def test_folds_are_seeded():
    first = assign_folds(TARGETS, 4, seed=1)
    assert np.array_equal(first, assign_folds(TARGETS, 4, seed=1))
    assert not np.array_equal(first, assign_folds(TARGETS, 4, seed=2))


def test_a_class_with_fewer_images_than_folds_is_spread_over_as_many_folds():
    """scikit-learn allows it while some class fills every fold: the folds are made, the class named."""
    targets = np.array([0] * 9 + [1] * 2 + [2])
    folds = assign_folds(targets, 3, seed=0)
    assert sorted(set(folds.tolist())) == [0, 1, 2]
    assert len(set(folds[targets == 1].tolist())) == 2  # its two images validate in two different folds
    assert all(np.bincount(folds[targets == 0], minlength=3) == 3)
    notice = small_classes(targets, ["pug", "akita", "beagle"], 3)
    assert "'akita' (2)" in notice and "'beagle' (1)" in notice and "'pug'" not in notice
    assert small_classes(targets, ["pug", "akita", "beagle"], 2) == "'beagle' (1)".join(
        ["1 classes have fewer images than train.folds = 2, so some folds validate without them: ", ""]
    )


@pytest.mark.parametrize(
    ("targets", "folds", "fix"),
    [([0, 0, 1, 1, 2], 3, "at most 2"), ([0, 1], 3, "add images"), ([0, 0, 0, 1], 5, "at most 3")],
)
def test_folds_scikit_learn_cannot_make_are_refused_with_the_largest_possible(targets, folds, fix):
    with pytest.raises(KitError) as raised:
        assign_folds(np.array(targets), folds, seed=0)
    assert fix in raised.value.message and "the largest, '0'," in raised.value.message


def test_folds_are_written_once_and_reused(project):
    rows = "\n".join(f"img{i},{label}" for i, label in enumerate(["pug", "akita", "beagle"] * 6))
    config, raw = competition(project, "breeds", 'labels_csv = "labels.csv"', "[train]\nfolds = 3\nseed = 7")
    write_csv(raw / "labels.csv", "id,label\n" + rows)
    labels = load_labels(config)
    folds = load_folds(config, labels)
    path = project / "data" / "interim" / "breeds" / "folds.csv"
    saved = pd.read_csv(path, dtype=str)
    assert list(saved.columns) == ["id", "label", "fold"]
    assert list(saved["id"]) == labels.ids and saved["fold"].astype(int).tolist() == folds.tolist()
    assert np.array_equal(folds, assign_folds(labels.targets, 3, 7))

    written = path.stat().st_mtime_ns, path.read_bytes()
    again = load_folds(config, labels)
    assert np.array_equal(again, folds)
    assert (path.stat().st_mtime_ns, path.read_bytes()) == written  # read, not rewritten

    # The file is the record: an edited (still valid) split is what later runs use, and another fold
    # count does not replace it (issue 32).
    edited = saved.assign(fold=np.roll(saved["fold"].astype(int).to_numpy(), 1))
    edited.to_csv(path, index=False)
    assert np.array_equal(load_folds(config, labels), edited["fold"].to_numpy())
    five = load_competition("breeds", ["train.folds=5"])
    assert "set train.folds = 3" in error_message(load_folds, five, labels)

    # The kit's own split, unedited, is made again for another fold count.
    path.write_bytes(written[1])
    refolded = load_folds(five, labels)
    assert set(refolded.tolist()) == {0, 1, 2, 3, 4}
    assert pd.read_csv(path)["fold"].tolist() == refolded.tolist()


def test_folds_are_rebuilt_when_the_images_change(project):
    rows = [f"img{i},{label}" for i, label in enumerate(["pug", "akita"] * 6)]
    config, raw = competition(project, "breeds", 'labels_csv = "labels.csv"', "[train]\nfolds = 3")
    write_csv(raw / "labels.csv", "id,label\n" + "\n".join(rows))
    load_folds(config, load_labels(config))
    write_csv(raw / "labels.csv", "id,label\n" + "\n".join(rows + ["img99,pug", "img98,akita"]))
    labels = load_labels(config)
    folds = load_folds(config, labels)
    assert len(folds) == 14
    assert (
        list(pd.read_csv(project / "data" / "interim" / "breeds" / "folds.csv", dtype=str)["id"])
        == labels.ids
    )


def test_another_seed_makes_new_folds(project, capsys):
    names = ["pug", "akita", "beagle"] * 6 + ["pug"] * 4
    rows = "\n".join(f"img{i},{label}" for i, label in enumerate(names))
    config, raw = competition(project, "breeds", 'labels_csv = "labels.csv"', "[train]\nfolds = 3")
    write_csv(raw / "labels.csv", "id,label\n" + rows)
    labels = load_labels(config)
    path = project / "data" / "interim" / "breeds" / "folds.csv"
    assert np.array_equal(load_folds(config, labels), assign_folds(labels.targets, 3, 42))
    seven = load_competition("breeds", ["train.seed=7"])
    assert np.array_equal(load_folds(seven, labels), assign_folds(labels.targets, 3, 7))
    assert pd.read_csv(path)["fold"].tolist() == assign_folds(labels.targets, 3, 7).tolist()
    assert np.array_equal(load_folds(config, labels), assign_folds(labels.targets, 3, 42))

    # A hand-edited split is the user's: another seed is refused rather than overwriting it.
    saved = pd.read_csv(path, dtype=str)
    saved.assign(fold=np.roll(saved["fold"].astype(int).to_numpy(), 1)).to_csv(path, index=False)
    edited = path.read_bytes()
    message = error_message(load_folds, seven, labels)
    assert str(path) in message and "train.seed = 42" in message and "move" in message
    assert path.read_bytes() == edited


def test_changed_labels_make_new_folds(project):
    rows = [f"img{i},{label}" for i, label in enumerate(["pug", "akita"] * 6)]
    config, raw = competition(project, "breeds", 'labels_csv = "labels.csv"', "[train]\nfolds = 3")
    write_csv(raw / "labels.csv", "id,label\n" + "\n".join(rows))
    load_folds(config, load_labels(config))
    rows[0] = "img0,akita"
    write_csv(raw / "labels.csv", "id,label\n" + "\n".join(rows))
    labels = load_labels(config)
    load_folds(config, labels)
    saved = pd.read_csv(project / "data" / "interim" / "breeds" / "folds.csv", dtype=str)
    assert saved["label"].tolist() == [labels.classes[t] for t in labels.targets]


def test_small_classes_are_named_when_folds_are_made(project, capsys):
    rows = [f"img{i},pug" for i in range(6)] + ["img6,akita", "img7,akita", "img8,beagle"]
    config, raw = competition(project, "breeds", 'labels_csv = "labels.csv"', "[train]\nfolds = 3")
    write_csv(raw / "labels.csv", "id,label\n" + "\n".join(rows))
    load_folds(config, load_labels(config))
    said = capsys.readouterr().err.strip().splitlines()
    assert len(said) == 1 and "'akita' (2)" in said[0] and "'beagle' (1)" in said[0]


# Names that look the same ---------------------------------------------------------------------------------

NFD_CAFE, NFC_CAFE = "cafe\u0301", "caf\u00e9"  # 'café' spelled with a combining accent, and precomposed


def test_labels_are_read_as_a_person_reads_them(project):
    config, raw = competition(project, "breeds", 'labels_csv = "labels.csv"')
    write_csv(raw / "labels.csv", f"id,label\na,pug \nb, pug\nc,{NFD_CAFE}\nd,{NFC_CAFE}\ne,akita\n f ,akita")
    labels = load_labels(config)
    assert labels.classes == ["akita", NFC_CAFE, "pug"]
    assert labels.targets.tolist() == [2, 2, 1, 1, 0, 0]
    assert labels.ids[-1] == "f" and labels.paths[-1].name == "f.jpg"


@pytest.mark.parametrize(
    ("first", "second"),
    [("img1", "img1.jpg"), ("img1", "IMG1"), ("Img1.JPG", "img1"), (NFC_CAFE, NFD_CAFE), ("img1", " img1 ")],
    ids=["extension", "case", "case-and-extension", "unicode", "spaces"],
)
def test_one_image_under_two_ids_is_refused_naming_both_rows(project, first, second):
    config, raw = competition(project, "breeds", 'labels_csv = "labels.csv"')
    write_csv(raw / "labels.csv", f"id,label\nimg0,pug\n{first},pug\nimg2,akita\n{second},akita")
    message = error_message(load_labels, config)
    if first == second.strip():  # the same id once spaces are dropped
        assert "duplicate id 'img1' (row 5, and row 3)" in message, message
    else:
        assert f"row 3 {first!r} and row 5 {second!r} name the same image" in message, message
        assert "(labels 'pug' and 'akita')" in message


def test_labels_differing_only_in_case_are_refused_naming_both_rows(project):
    config, raw = competition(project, "breeds", 'labels_csv = "labels.csv"')
    write_csv(raw / "labels.csv", "id,label\na,pug\nb,akita\nc,Pug")
    message = error_message(load_labels, config)
    assert "'pug' (row 2)" in message and "'Pug' (row 4)" in message and "differ only in case" in message


def test_class_folders_differing_only_in_case_are_refused(project):
    config, raw = competition(project, "breeds", 'labels = "folders"\nextension = ".png"')
    for name in ("Pug/1.png", "pug/2.png", "akita/3.png"):
        image(raw / "train" / name)
    message = error_message(load_labels, config)
    assert "'Pug' (Pug/1.png)" in message and "'pug' (pug/2.png)" in message


def test_test_ids_naming_one_image_twice_are_refused(project):
    config, raw = competition(project, "breeds", 'extension = ".png"')
    image(raw / "test" / "a.png")
    write_csv(raw / "sample_submission.csv", "id,label\na,x\nb,x\nA.png,x")
    message = error_message(load_test, config)
    assert "row 2 'a' and row 4 'A.png' name the same image" in message


def test_an_extension_in_another_case_finds_the_file(project):
    config, raw = competition(project, "breeds", 'labels_csv = "labels.csv"\nextension = ".jpg"')
    write_csv(raw / "labels.csv", f"id,label\na,pug\nb,akita\n{NFD_CAFE},akita")
    for name in ("a.JPG", "B.jpg", f"{NFC_CAFE}.Jpg"):
        image(raw / "train" / name)
    labels = load_labels(config)
    assert [path.name for path in labels.paths] == ["a.JPG", "B.jpg", f"{NFC_CAFE}.Jpg"]
    assert all(path.is_file() for path in labels.paths)
