"""Planet, Pawpularity and APTOS 2019 as stand-in downloads laid out like the real ones: `kit new`
recognises each kind (tags, a number, grades) from the files, and both its config and the shipped one
in competitions/ train and write a valid submission."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import invoke
from kaggle_standin import image_bytes

from kit.competitions import load_competition
from kit.data import labels as data
from kit.kaggle import package, raw_layout, scaffold

TAGS = ["agriculture", "clear", "cloudy", "haze", "partly_cloudy", "primary", "road", "water"]
PAW_FEATURES = ["Subject Focus", "Eyes", "Face", "Near", "Action", "Accessory", "Group", "Collage"]


def write(root: Path, files: dict) -> Path:
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    return root


def picture(number: int, kind: str = "JPEG") -> bytes:
    return image_bytes((number * 37 % 255, number * 11 % 255, 120), number, kind, size=16)


def planet(root: Path, train: int = 30) -> Path:
    """train-jpg/train_N.jpg, train_v2.csv image_name,tags; test chips split over test-jpg/ and
    test-jpg-additional/, both listed in sample_submission_v2.csv."""
    rng = np.random.default_rng(0)
    tags = [" ".join(sorted({*rng.choice(TAGS, rng.integers(1, 4), replace=False)})) for _ in range(train)]
    tests = [f"test_{n}" for n in range(6)] + [f"file_{n}" for n in range(4)]
    return write(
        root,
        {
            **{f"train-jpg/train_{n}.jpg": picture(n) for n in range(train)},
            **{f"test-jpg/test_{n}.jpg": picture(100 + n) for n in range(6)},
            **{f"test-jpg-additional/file_{n}.jpg": picture(200 + n) for n in range(4)},
            "train_v2.csv": pd.DataFrame(
                {"image_name": [f"train_{n}" for n in range(train)], "tags": tags}
            ).to_csv(index=False),
            "sample_submission_v2.csv": pd.DataFrame({"image_name": tests, "tags": "clear primary"}).to_csv(
                index=False
            ),
            "test_v2_file_mapping.csv": "old,new\nfile_0.tif,file_0.tif\n",
        },
    )


def pawpularity(root: Path, train: int = 30) -> Path:
    """train/<Id>.jpg, train.csv Id,<photo features>,Pawpularity (1-100), test.csv, sample Id,Pawpularity."""
    rng = np.random.default_rng(1)
    ids = [f"{n:032x}" for n in range(train)]
    table = pd.DataFrame({"Id": ids, **{f: rng.integers(0, 2, train) for f in PAW_FEATURES}})
    table["Pawpularity"] = rng.integers(1, 101, train)
    tests = [f"{n + 1000:032x}" for n in range(5)]
    return write(
        root,
        {
            **{f"train/{i}.jpg": picture(n) for n, i in enumerate(ids)},
            **{f"test/{i}.jpg": picture(300 + n) for n, i in enumerate(tests)},
            "train.csv": table.to_csv(index=False),
            "test.csv": pd.DataFrame({"Id": tests, **{f: 0 for f in PAW_FEATURES}}).to_csv(index=False),
            "sample_submission.csv": pd.DataFrame({"Id": tests, "Pawpularity": 67.75}).to_csv(index=False),
        },
    )


def aptos(root: Path, train: int = 30) -> Path:
    """train_images/<id_code>.png, train.csv id_code,diagnosis (0-4), test_images/, sample too."""
    ids = [f"{n * 7919:012x}" for n in range(train)]
    tests = [f"{n * 104729:012x}" for n in range(1, 6)]
    return write(
        root,
        {
            **{f"train_images/{i}.png": picture(n, "PNG") for n, i in enumerate(ids)},
            **{f"test_images/{i}.png": picture(400 + n, "PNG") for n, i in enumerate(tests)},
            "train.csv": pd.DataFrame({"id_code": ids, "diagnosis": [n % 5 for n in range(train)]}).to_csv(
                index=False
            ),
            "test.csv": pd.DataFrame({"id_code": tests}).to_csv(index=False),
            "sample_submission.csv": pd.DataFrame({"id_code": tests, "diagnosis": 0}).to_csv(index=False),
        },
    )


# name: (stand-in, task, metric, id column, label column, a check of one submitted label)
KINDS = {
    "planet": (
        planet,
        "multi_label",
        "f2_samples",
        "image_name",
        "tags",
        lambda v: set(v.split()) <= set(TAGS),
    ),
    "pawpularity": (pawpularity, "regression", "rmse", "Id", "Pawpularity", lambda v: np.isfinite(float(v))),
    "aptos": (aptos, "ordinal", "qwk", "id_code", "diagnosis", lambda v: v in {"0", "1", "2", "3", "4"}),
}
TINY = [
    "train.model=test_efficientnet",
    "train.pretrained=false",
    "train.image_size=32",
    "train.batch_size=16",
    "train.lr_find=false",
    "train.folds=3",
    "stages=[{}]",
    "predict.tta=1",
]


@pytest.mark.parametrize("name", list(KINDS))
def test_scaffold_recognises_the_kind(tmp_path, name):
    make, task, metric, id_column, label_column, _ = KINDS[name]
    layout = raw_layout.inspect(make(tmp_path / name))
    assert layout.task == task and scaffold.default_metric(layout.submission["format"], task) == metric
    assert (layout.data["id_column"], layout.data["label_column"]) == (id_column, label_column)
    assert layout.submission == {"format": "label", "id_column": id_column, "label_column": label_column}
    if name == "planet":  # the test chips are split over two folders, both kept
        assert layout.data["test_dir"] == ["test-jpg", "test-jpg-additional"]
        assert sorted(layout.class_counts) == sorted({t for t in TAGS if layout.class_counts.get(t)})
    text = scaffold.render(name, "slug", layout, metric)
    assert f'task = "{task}"' in text and f'metric = "{metric}"' in text


@pytest.mark.slow
@pytest.mark.parametrize("name", list(KINDS))
def test_kit_new_and_the_shipped_config_train_and_submit(project, name):
    make, task, metric, id_column, label_column, valid = KINDS[name]
    raw = make(project / "data" / "raw" / f"{name}-fork")
    result = invoke("new", f"{name}-fork", "--from-raw")
    assert result.exit_code == 0, result.output
    assert f"task {task}" in result.output and f"check: task = '{task}'" in result.output
    shutil.copytree(raw, project / "data" / "raw" / name)  # the shipped config, on the same files
    sets = [item for value in TINY for item in ("--set", value)]
    for competition in (f"{name}-fork", name):
        config = load_competition(competition)
        assert (config.competition.task, config.competition.metric) == (task, metric)
        assert len(data.load_test(config).ids) == len(pd.read_csv(next(raw.glob("sample_submission*.csv"))))
        result = invoke("train", competition, *sets)
        assert result.exit_code == 0, result.output
        result = invoke("predict", competition)  # pawpularity and aptos take notebooks: no `kit submit`
        assert result.exit_code == 0, result.output
        (written,) = (project / "submissions").glob(f"{competition}-2*.csv")
        frame = pd.read_csv(written, dtype=str, keep_default_na=False)
        assert list(frame.columns) == [id_column, label_column]
        assert all(valid(value) for value in frame[label_column])
        # What a Kaggle notebook checks before it submits: the file, for the run's task.
        (run_dir,) = (project / "runs" / competition).iterdir()
        summary = json.loads((run_dir / "metrics.json").read_text())
        package.check_submission(config, written, summary["classes"], summary["task"])
    assert load_competition(name).competition.submission == ("csv" if name == "planet" else "notebook")
