"""Forking: kit.kaggle.scaffold's inference on the common layouts, and `kit new` end to end."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
import tomllib
from conftest import invoke, tiny_recipe
from kaggle_standin import KaggleStandIn, image_bytes, kaggle_env, make_zip

from kit.competitions import load_competition
from kit.config_build import config_from_dict
from kit.data import labels as data
from kit.errors import KitError
from kit.kaggle import raw_layout, scaffold

SEEDLINGS_SLUG = "plant-seedlings-classification"
SPECIES = {"Black-grass": (40, 40, 40), "Charlock": (240, 220, 40), "Common wheat": (40, 160, 60)}
TINY_RECIPE = tiny_recipe((1, 1, 1), tta=0)


def write_files(root: Path, files: dict) -> Path:
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    return root


def image(number: int) -> bytes:
    return image_bytes((number * 40 % 255, 90, 160), number, "PNG", size=8)


def breeds_layout(root: Path) -> Path:
    """dog-breed-identification: labels.csv (id,breed), train/<id>.jpg, probabilities per breed."""
    ids = [f"{n:04x}" for n in range(12)]
    breeds = ["pug", "beagle", "collie"] * 4
    return write_files(
        root,
        {
            **{f"train/{i}.jpg": image(n) for n, i in enumerate(ids)},
            "test/t1.jpg": image(50),
            "test/t2.jpg": image(51),
            "labels.csv": pd.DataFrame({"id": ids, "breed": breeds}).to_csv(index=False),
            "sample_submission.csv": "id,beagle,collie,pug\nt1,0.3,0.3,0.4\nt2,0.3,0.3,0.4\n",
        },
    )


def cats_layout(root: Path) -> Path:
    """dogs-vs-cats-redux: train/cat.0.jpg ..., numeric test ids, id,label = P(dog)."""
    files = {f"train/{animal}.{n}.jpg": image(n) for animal in ("cat", "dog") for n in range(6)}
    return write_files(
        root,
        {
            **files,
            "test/1.jpg": image(60),
            "test/2.jpg": image(61),
            "sample_submission.csv": "id,label\n1,0.5\n2,0.5\n",
        },
    )


def seedlings_files(per_species: int = 8, tests: int = 4) -> dict:
    """plant-seedlings-classification: train/<species>/<hash>.png, test/<hash>.png, file,species."""
    files = {
        f"train/{name}/{index:03d}{k}abc.png": image_bytes(color, 10 * index + k, "PNG")
        for index, (name, color) in enumerate(SPECIES.items())
        for k in range(per_species)
    }
    test_names = [f"{k:02d}test.png" for k in range(tests)]
    files.update(
        {f"test/{name}": image_bytes((40, 40, 40), 900 + k, "PNG") for k, name in enumerate(test_names)}
    )
    files["sample_submission.csv"] = pd.DataFrame({"file": test_names, "species": "Charlock"}).to_csv(
        index=False
    )
    return files


def loads(layout: raw_layout.Layout, metric: str = "log_loss", slug: str = "some-slug"):
    """render's text must be a valid competition.toml."""
    return config_from_dict(
        tomllib.loads(scaffold.render("forked", slug, layout, metric)), Path("/x/forked/competition.toml")
    )


def test_label_csv_layout(tmp_path):
    layout = raw_layout.inspect(breeds_layout(tmp_path))
    assert layout.data == {
        "labels": "csv", "labels_csv": "labels.csv", "id_column": "id", "label_column": "breed",
        "train_dir": "train", "test_dir": "test", "extension": ".jpg",
        "sample_submission": "sample_submission.csv",
    }  # fmt: skip
    assert layout.submission == {"format": "probabilities", "id_column": "id"}
    assert layout.class_counts == {"pug": 4, "beagle": 4, "collie": 4}
    assert layout.notes == ("the rarest class has 4 images: train.folds lowered to fit",)
    config = loads(layout)
    assert config.train.folds == 4  # the rarest class has 4 images
    assert (
        config.competition.kaggle == "some-slug"
        and config.data.label_column == "breed"
        and len(config.stages) == 3
    )


def test_file_name_labels_with_binary_submission(tmp_path):
    layout = raw_layout.inspect(cats_layout(tmp_path))
    assert layout.data["labels"] == "filenames" and sorted(layout.class_counts) == ["cat", "dog"]
    assert layout.submission == {
        "format": "binary",
        "id_column": "id",
        "label_column": "label",
        "positive_class": "dog",
    }
    assert any("positive_class" in note for note in layout.notes)  # a guess: the column does not name a class
    pattern = loads(layout).data.filename_pattern
    assert re.match(pattern, "cat.12")["label"] == "cat" and re.match(pattern, "dog.3")["label"] == "dog"


def test_binary_positive_class_named_by_the_column(tmp_path):
    cats_layout(tmp_path)
    (tmp_path / "sample_submission.csv").write_text("id,is_dog\n1,0.5\n2,0.5\n")
    layout = raw_layout.inspect(tmp_path)
    assert layout.submission["positive_class"] == "dog" and layout.submission["label_column"] == "is_dog"
    assert not any("positive_class" in note for note in layout.notes)


def test_class_folders_with_label_submission(tmp_path):
    layout = raw_layout.inspect(write_files(tmp_path, seedlings_files()))
    assert layout.data["labels"] == "folders" and sorted(layout.class_counts) == sorted(SPECIES)
    assert layout.submission == {"format": "label", "id_column": "file", "label_column": "species"}
    assert (
        scaffold.default_metric(layout.submission["format"]) == "accuracy"
        and layout.data["extension"] == ".png"
    )
    assert loads(layout, "f1_micro").competition.metric == "f1_micro"


def test_nested_folders_and_upper_case_extension(tmp_path):
    files = {
        "images/train/a/1.JPG": b"",
        "images/train/a/2.JPG": b"",
        "images/train/b/3.JPG": b"",
        "images/test/9.JPG": b"",
    }
    write_files(tmp_path, {**files, "sampleSubmission.csv": "id,a,b\n9,0.5,0.5\n"})
    data = raw_layout.inspect(tmp_path).data
    assert (data["train_dir"], data["test_dir"], data["extension"]) == ("images/train", "images/test", ".JPG")
    assert data["sample_submission"] == "sampleSubmission.csv" and data["labels"] == "folders"


@pytest.mark.parametrize(
    "files, message",
    [
        ({"train/a.jpg": b"", "test/b.jpg": b""}, "no sample_submission"),
        ({"test/b.jpg": b"", "sample_submission.csv": "id,label\nb,0\n"}, "no folder named train*"),
        (
            {
                "train/a1.jpg": b"",
                "train/b2.jpg": b"",
                "test/c.jpg": b"",
                "sample_submission.csv": "id,label\nc,0\n",
            },
            "cannot tell where the labels are",
        ),
        (
            {
                "train/a/1.jpg": b"",
                "train/b/2.jpg": b"",
                "test/c.jpg": b"",
                "sample_submission.csv": "id,x,y\nc,0,0\n",
            },
            "are not training classes",
        ),
    ],
    ids=["no-sample", "no-train-folder", "no-labels", "foreign-columns"],
)
def test_unknown_layouts_are_one_line_errors(tmp_path, files, message):
    write_files(tmp_path, files)
    with pytest.raises(KitError) as caught:
        raw_layout.inspect(tmp_path)
    assert message in caught.value.message and "\n" not in caught.value.message


def test_write_new_never_replaces_a_file(tmp_path):
    target = tmp_path / "comp" / "competition.toml"
    scaffold.write_new(target, "first")
    with pytest.raises(KitError, match="already exists"):
        scaffold.write_new(target, "second")
    assert target.read_text() == "first" and [p.name for p in target.parent.iterdir()] == ["competition.toml"]
    with pytest.raises(KitError, match="lowercase"):
        scaffold.check_name("Bad Name", tmp_path / "x")


def test_kit_new_from_kaggle_then_train_and_dry_run_submit_unedited(project, monkeypatch, tmp_path):
    kaggle_env(monkeypatch, tmp_path)
    bundle = make_zip(seedlings_files())
    with KaggleStandIn(competitions={SEEDLINGS_SLUG: bundle}) as stand_in:
        result = invoke("new", "seedlings", "--kaggle", SEEDLINGS_SLUG, "--metric", "f1_micro")
        assert result.exit_code == 0, result.output
        assert (
            "one folder per class" in result.output
            and "format label" in result.output
            and "check:" in result.output
        )
        config = load_competition("plant")  # the slug's prefix finds the fork
        assert (config.name, config.competition.kaggle, config.competition.metric) == (
            "seedlings",
            SEEDLINGS_SLUG,
            "f1_micro",
        )
        assert (config.submission.id_column, config.submission.label_column) == ("file", "species")

        result = invoke("train", "seedlings", *[item for value in TINY_RECIPE for item in ("--set", value)])
        assert result.exit_code == 0, result.output
        result = invoke("submit", "seedlings", "--dry-run", "-m", "fork")
        assert result.exit_code == 0, result.output
        assert stand_in.uploads == []
        again = invoke("new", "seedlings", "--kaggle", SEEDLINGS_SLUG)
    assert again.exit_code == 1 and "already exists" in again.output
    ledger = pd.read_csv(project / "submissions" / "ledger.csv", dtype=str)
    assert ledger.loc[0, "status"] == "dry run (not uploaded)" and ledger.loc[0, "metric"] == "f1_micro"
    (written,) = (project / "submissions").glob("seedlings-*.csv")
    frame = pd.read_csv(written, dtype=str)
    assert list(frame.columns) == ["file", "species"] and set(frame["species"]) <= set(SPECIES)
    assert list(frame["file"]) == [f"{k:02d}test.png" for k in range(4)]


def test_kit_new_from_raw_needs_no_network(project):
    cats_layout(project / "data" / "raw" / "kittens")
    result = invoke("new", "kittens", "--from-raw")
    assert result.exit_code == 0, result.output
    config = load_competition("kittens")
    labels = data.load_labels(config)  # ids are whole stems: cat.0 and dog.0 do not collide
    assert len(labels.ids) == 12 and labels.classes == ["cat", "dog"] and config.competition.kaggle == ""
    assert config.submission.positive_class == "dog" and "check: submission.positive_class" in result.output


def test_kit_new_bad_input(project, monkeypatch, tmp_path):
    kaggle_env(monkeypatch, tmp_path)
    with KaggleStandIn(competitions={SEEDLINGS_SLUG: None}):
        unknown = invoke("new", "typo", "--kaggle", "plant-seedlings-clasification")
    assert unknown.exit_code == 1 and "unknown competition 'plant-seedlings-clasification'" in unknown.output
    assert (
        not (project / "competitions" / "typo").exists() and not (project / "data" / "raw" / "typo").exists()
    )
    metric = invoke("new", "other", "--kaggle", SEEDLINGS_SLUG, "--metric", "f2")
    assert metric.exit_code == 1 and "f1_micro" in metric.output
    existing = invoke("new", "digits", "--kaggle", SEEDLINGS_SLUG)
    assert existing.exit_code == 1 and "already exists" in existing.output
    missing = invoke("new", "nothing")
    assert missing.exit_code == 1 and "--kaggle SLUG" in missing.output
    for result in (unknown, metric, existing, missing):
        assert len(result.output.strip().splitlines()) == 1
