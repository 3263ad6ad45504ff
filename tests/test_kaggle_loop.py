"""The Kaggle loop for the two shipped competitions, against the local stand-in of Kaggle's API:
download -> train (tiny) -> predict -> submit -> ledger, and every bad input refused before upload."""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pandas as pd
import pytest
from conftest import invoke, tiny_recipe
from kaggle_standin import (  # kaggle_environment: every test in PROD and TEST
    STANDIN_KEY,
    KaggleStandIn,
    image_bytes,
    kaggle_env,
    kaggle_environment,  # noqa: F401 (a fixture)
    make_zip,
)

from kit.competitions import load_competition, resolve_name
from kit.predict import submission
from kit.run import LAYOUT
from kit.tasks import SINGLE_LABEL

pytestmark = pytest.mark.usefixtures("kaggle_environment")

DOG_SLUG = "dog-breed-identification"
CATS_SLUG = "dogs-vs-cats-redux-kernels-edition"
BREEDS = {"pug": (200, 60, 60), "beagle": (60, 200, 60), "collie": (60, 60, 200)}
# The recipe's three stages, each cut to a cycle or two, and fewer TTA views: seconds on a CPU.
TINY_RECIPE = tiny_recipe((1, 1, 2), tta=1)


def succeeds(*arguments):
    result = invoke(*arguments)
    assert result.exit_code == 0, result.output
    return result


def visible_lines(output: str) -> list[str]:
    """The lines a terminal shows: a progress bar redraws its line after "\r" and, closed, blanks it."""
    return [shown for line in output.split("\n") if (shown := line.rsplit("\r", 1)[-1].strip())]


def refused(*arguments) -> str:
    """The command fails with one error line, last (notices such as which run is submitted may come before
    it; no traceback), and no secret; returns that line."""
    result = invoke(*arguments)
    assert result.exit_code == 1, result.output
    lines = visible_lines(result.output)
    assert lines[-1].startswith("Error: ") and sum(line.startswith("Error: ") for line in lines) == 1
    assert "Traceback" not in result.output and STANDIN_KEY not in result.output
    return lines[-1]


def overrides(values):
    return [item for value in values for item in ("--set", value)]


def hex_id(number: int) -> str:
    return hashlib.md5(str(number).encode()).hexdigest()  # 32 hex digits, like the real ids


def dog_breeds_bundle(per_breed: int = 8, tests: int = 6) -> bytes:
    """Laid out like the real download: labels.csv, sample_submission.csv, train.zip, test.zip.

    sample_submission.csv lists the breeds in an order that is not alphabetical, so the test sees that the
    submission follows it.
    """
    names = list(BREEDS)
    train_ids = [hex_id(n) for n in range(per_breed * len(names))]
    breeds = [names[n % len(names)] for n in range(len(train_ids))]
    test_ids = [hex_id(1000 + n) for n in range(tests)]
    labels = pd.DataFrame({"id": train_ids, "breed": breeds}).to_csv(index=False)
    sample = pd.DataFrame({"id": test_ids, **{name: 1 / len(names) for name in names}}).to_csv(index=False)
    train = make_zip(
        {
            f"train/{i}.jpg": image_bytes(BREEDS[b], n)
            for n, (i, b) in enumerate(zip(train_ids, breeds, strict=True))
        }
    )
    test = make_zip(
        {f"test/{i}.jpg": image_bytes(BREEDS[names[n % 3]], 500 + n) for n, i in enumerate(test_ids)}
    )
    return make_zip(
        {
            "labels.csv": labels.encode(),
            "sample_submission.csv": sample.encode(),
            "train.zip": train,
            "test.zip": test,
        }
    )


def cats_vs_dogs_bundle(per_class: int = 12, tests: int = 6) -> bytes:
    """Laid out like the real download: sample_submission.csv (id,label), train.zip with train/cat.0.jpg ...,
    test.zip with test/1.jpg ... (numeric ids)."""
    colors = {"cat": (220, 120, 40), "dog": (40, 120, 220)}
    train = make_zip(
        {
            f"train/{animal}.{n}.jpg": image_bytes(color, n + 100 * k)
            for k, (animal, color) in enumerate(colors.items())
            for n in range(per_class)
        }
    )
    test = make_zip(
        {
            f"test/{n}.jpg": image_bytes(colors["cat" if n % 2 else "dog"], 900 + n)
            for n in range(1, tests + 1)
        }
    )
    sample = pd.DataFrame({"id": range(1, tests + 1), "label": 0.5}).to_csv(index=False)
    return make_zip({"sample_submission.csv": sample.encode(), "train.zip": train, "test.zip": test})


@pytest.fixture
def environment(project, monkeypatch, tmp_path):
    kaggle_env(monkeypatch, tmp_path)
    return project


def test_names_slugs_and_prefixes_resolve(project):
    assert resolve_name("dog-breed") == "dog-breeds"
    assert resolve_name(DOG_SLUG) == "dog-breeds"
    assert resolve_name("dogs-vs-cats") == "cats-vs-dogs"
    assert resolve_name("cats") == "cats-vs-dogs"
    assert "ambiguous" in refused("download", "do") and "dog-breeds" in refused("download", "do")


@pytest.mark.slow
@pytest.mark.parametrize(
    "query, name, slug, bundle, columns",
    [
        ("dog-breed", "dog-breeds", DOG_SLUG, dog_breeds_bundle, ["id", *BREEDS]),
        ("cats", "cats-vs-dogs", CATS_SLUG, cats_vs_dogs_bundle, ["id", "label"]),
    ],
    ids=["dog-breeds", "cats-vs-dogs"],
)
def test_download_train_predict_submit_ledger(environment, query, name, slug, bundle, columns):
    project = environment
    with KaggleStandIn(competitions={slug: bundle()}) as stand_in:
        assert "downloaded in data/raw/" + name in succeeds("download", query).output
        raw = project / "data" / "raw" / name
        assert (raw / "sample_submission.csv").is_file() and not list(raw.rglob("*.zip"))
        assert len(list((raw / "train").glob("*.jpg"))) == 24 and len(list((raw / "test").glob("*.jpg"))) == 6

        succeeds("train", query, *overrides(TINY_RECIPE))
        (run_dir,) = (project / "runs" / name).iterdir()
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["metric"] == "log_loss" and np.isfinite(metrics["cv"])
        last_stage = load_competition(query, TINY_RECIPE).stages[-1]  # a snapshot per cycle, if it takes any
        expected = last_stage.n_cycles if last_stage.snapshots else 0
        assert len(list((run_dir / "fold-0").glob("snapshot-*.pt"))) == expected
        assert (run_dir / "fold-0" / "last.pt").is_file()
        succeeds("predict", query)
        succeeds("submit", query, "-m", "tiny test")

        (upload,) = stand_in.uploads
        config = load_competition(query)
        sent = pd.read_csv(io.BytesIO(upload.content), dtype={"id": str})
        sample = submission.read_sample(config)
        assert upload.slug == slug and list(sent.columns) == columns
        assert submission.problems(config, sent, sample, metrics["classes"], task=SINGLE_LABEL) == []
        assert list(sent["id"]) == list(sample["id"])
        commit = json.loads((run_dir / "provenance.json").read_text())["commit"]
        for part in (
            "tiny test",
            f"CV log_loss {metrics['cv']:.4f}",
            f"run {run_dir.name}",
            f"commit {commit}",
        ):
            assert part in upload.message
        ledger = pd.read_csv(project / "submissions" / "ledger.csv", dtype=str, keep_default_na=False)
        assert ledger.loc[0, ["competition", "run", "commit", "status"]].tolist() == [
            name,
            run_dir.name,
            commit,
            "uploaded",
        ]
        assert ledger.loc[0, "file"] == upload.file_name and ledger.loc[0, "message"] == upload.message
        assert (project / "submissions" / upload.file_name).is_file()

        # Kaggle scores it; `kit ledger` fetches the score and shows it beside the CV.
        stand_in.submissions[slug][0].update(status="COMPLETE", publicScore="0.6931")
        stand_in.submissions[slug].append(
            {
                "date": "2020-01-01T00:00:00.000Z",
                "fileName": "web.csv",
                "status": "COMPLETE",
                "publicScore": "0.9",
            }
        )
        output = succeeds("ledger", query).output
    row = next(line for line in output.splitlines() if upload.file_name in line)
    assert "0.6931" in row and ledger.loc[0, "cv"] in row and "uploaded, complete" in row
    assert "web.csv" in output and "not in ledger" in output
    refreshed = pd.read_csv(project / "submissions" / "ledger.csv", dtype=str, keep_default_na=False)
    assert refreshed.loc[0, "public_score"] == "0.6931" and len(refreshed) == 1


def fake_run(project, query: str, frame: pd.DataFrame):
    """A finished run whose submission file is `frame`, without training (the checks are what is tested)."""
    config = load_competition(query)
    raw = project / "data" / "raw" / config.name
    raw.mkdir(parents=True)
    frame.assign(**{c: 1 / (len(frame.columns) - 1) for c in frame.columns[1:]}).to_csv(
        raw / "sample_submission.csv", index=False
    )
    run_dir = project / "runs" / config.name / "20250101-000000-fake"
    run_dir.mkdir(parents=True)
    (project / "submissions").mkdir(exist_ok=True)
    classes = sorted(frame.columns[1:])
    for file, value in {
        "config.json": config.to_dict(),
        "provenance.json": {"commit": "0123456789ab"},
        "metrics.json": {
            "layout": LAYOUT,
            "metric": "log_loss",
            "cv": 0.5,
            "classes": classes,
            "folds_trained": [0],
            "task": {"name": "single_label"},  # as every run records it
        },
        "submission.json": {"file": "dog-breeds-fake.csv", "weights": []},
    }.items():
        (run_dir / file).write_text(json.dumps(value, default=str))
    return config


def valid_breeds_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": ["a", "b", "c"],
            "pug": [0.2, 0.5, 0.1],
            "beagle": [0.3, 0.25, 0.8],
            "collie": [0.5, 0.25, 0.1],
        }
    )


@pytest.mark.parametrize(
    "corrupt, reason",
    [
        (lambda frame: frame.iloc[1:], "1 ids of sample_submission.csv are missing, e.g. 'a'"),
        (
            lambda frame: frame.assign(extra=0.0),
            "columns differ from sample_submission.csv (extra: ['extra']",
        ),
        (
            lambda frame: frame.assign(pug=[0.2, np.nan, 0.1]),
            "row 3 has a missing, NaN or infinite probability",
        ),
        (lambda frame: pd.concat([frame, frame.iloc[:1]]), "id 'a' appears more than once"),
    ],
    ids=["missing-id", "extra-column", "nan-probability", "duplicate-id"],
)
def test_invalid_submission_is_refused_and_nothing_uploaded(environment, corrupt, reason):
    project = environment
    fake_run(project, "dog-breeds", valid_breeds_frame())
    corrupt(valid_breeds_frame()).to_csv(project / "submissions" / "dog-breeds-fake.csv", index=False)
    with KaggleStandIn(competitions={DOG_SLUG: None}) as stand_in:
        assert reason in refused("submit", "dog-breeds")
    assert stand_in.uploads == [] and not (project / "submissions" / "ledger.csv").exists()


def test_valid_submission_is_clipped_for_log_loss_and_dry_run_uploads_nothing(environment):
    project = environment
    fake_run(project, "dog-breeds", valid_breeds_frame())
    frame = valid_breeds_frame().assign(pug=[0.0, 0.5, 0.1], beagle=[0.5, 0.25, 0.8])
    frame.to_csv(project / "submissions" / "dog-breeds-fake.csv", index=False)
    with KaggleStandIn(competitions={DOG_SLUG: None}) as stand_in:
        assert "dry run" in succeeds("submit", "dog-breeds", "--dry-run").output
        assert stand_in.uploads == []
        succeeds("submit", "dog-breeds")
    (upload,) = stand_in.uploads
    assert upload.file_name == "dog-breeds-fake.csv"
    assert pd.read_csv(io.BytesIO(upload.content))["pug"].min() == pytest.approx(1e-15)  # clipped, not 0
    ledger = pd.read_csv(project / "submissions" / "ledger.csv", dtype=str)
    assert ledger["status"].tolist() == ["dry run (not uploaded)", "uploaded"]
    kept = (project / "submissions" / "dog-breeds-fake.csv").read_text()
    assert "0.0," in kept  # the file kept in submissions/ is not clipped
    assert not list((project / "submissions").glob(".upload-*"))


def test_ledger_without_network_still_shows_local_rows(environment, monkeypatch, tmp_path):
    fake_run(environment, "dog-breeds", valid_breeds_frame())
    valid_breeds_frame().to_csv(environment / "submissions" / "dog-breeds-fake.csv", index=False)
    succeeds("submit", "dog-breeds", "--dry-run")
    kaggle_env(monkeypatch, tmp_path, credentials=False)
    result = invoke("ledger", "dog-breed")
    assert result.exit_code == 0 and "scores not refreshed: no Kaggle credentials" in result.output
    assert "dog-breeds-fake.csv" in result.output and "0.500000" in result.output


def test_submit_without_credentials_stops_before_training(project, monkeypatch, tmp_path):
    kaggle_env(monkeypatch, tmp_path, credentials=False)
    from kit.kaggle.credentials import IN_ORDER

    assert IN_ORDER in refused("submit", "cats")  # every form, in the client's order
    assert not (project / "runs" / "cats-vs-dogs").exists()


def test_download_without_credentials(project, monkeypatch, tmp_path):
    kaggle_env(monkeypatch, tmp_path, credentials=False)
    assert "no Kaggle credentials" in refused("download", "dog-breed")
    assert not (project / "data" / "raw" / "dog-breeds").exists()


def test_download_rules_not_accepted_gives_rules_page(environment):
    with KaggleStandIn(competitions={DOG_SLUG: dog_breeds_bundle()}, rules_not_accepted={DOG_SLUG}):
        assert f"https://www.kaggle.com/competitions/{DOG_SLUG}/rules" in refused("download", "dog-breeds")
    assert not (environment / "data" / "raw" / "dog-breeds").exists()


def test_download_unknown_slug(environment):
    with KaggleStandIn(competitions={"some-other-competition": None}):
        assert f"unknown competition '{DOG_SLUG}'" in refused("download", "dog-breeds")
    assert not (environment / "data" / "raw" / "dog-breeds").exists()


def test_download_refuses_parent_traversal(environment):
    hostile = make_zip(
        {
            "train.zip": make_zip({"train/a.jpg": b"x", "../../evil.jpg": b"pwned"}),
            "labels.csv": b"id,breed\n",
        }
    )
    with KaggleStandIn(competitions={DOG_SLUG: hostile}):
        assert "'../../evil.jpg' has a '..' component" in refused("download", "dog-breeds")
    assert not (environment / "data" / "raw" / "dog-breeds").exists()
    assert not list(environment.parent.rglob("evil.jpg"))


def test_download_normalises_folder_layouts(environment):
    """Loose images in test.zip land in test/; a doubled train/train/ becomes train/."""
    bundle = make_zip(
        {
            "sample_submission.csv": b"id,label\n1,0.5\n",
            "train.zip": make_zip({"train/train/cat.0.jpg": b"c", "train/train/dog.0.jpg": b"d"}),
            "test.zip": make_zip({"1.jpg": b"1", "2.jpg": b"2"}),
            "labels.csv.zip": make_zip({"labels.csv": b"id,label\n"}),
        }
    )
    with KaggleStandIn(competitions={CATS_SLUG: bundle}):
        succeeds("download", "cats-vs-dogs")
    raw = environment / "data" / "raw" / "cats-vs-dogs"
    assert sorted(p.name for p in (raw / "train").iterdir()) == ["cat.0.jpg", "dog.0.jpg"]
    assert sorted(p.name for p in (raw / "test").iterdir()) == ["1.jpg", "2.jpg"]
    assert (raw / "labels.csv").is_file()
