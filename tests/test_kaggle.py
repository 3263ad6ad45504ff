"""kit.kaggle against a local stand-in of the Kaggle API, driven through the official client."""

import base64
import socket
import stat
import zipfile

import click
import pytest
from click.testing import CliRunner
from kaggle_standin import (  # kaggle_environment: every test in PROD and TEST
    STANDIN_KEY,
    STANDIN_USERNAME,
    KaggleStandIn,
    kaggle_env,
    kaggle_environment,  # noqa: F401 (a fixture)
    make_zip,
)

from kit.cli import Commands
from kit.errors import KitError
from kit.kaggle import answers, credentials, download
from kit.kaggle import client as kaggle

pytestmark = pytest.mark.usefixtures("kaggle_environment")

SLUG = "dog-breeds"


def competition_zip() -> bytes:
    """Shaped like a Kaggle bundle: nested train.zip/test.zip next to a plain csv."""
    train = make_zip({"train/a.jpg": b"image-a", "train/b.jpg": b"image-b"})
    test = make_zip({"test/c.jpg": b"image-c"})
    return make_zip({"train.zip": train, "test.zip": test, "labels.csv": b"id,breed\na,pug\nb,collie\n"})


@pytest.fixture
def environment(monkeypatch, tmp_path):
    return kaggle_env(monkeypatch, tmp_path)


def assert_key_not_printed(capsys) -> None:
    """Neither the key nor the Basic-auth header that encodes it may reach the terminal."""
    captured = capsys.readouterr()
    basic_auth = base64.b64encode(f"{STANDIN_USERNAME}:{STANDIN_KEY}".encode()).decode()
    for secret in (STANDIN_KEY, basic_auth):
        assert secret not in captured.out + captured.err


def assert_one_line_without_key(error: KitError) -> str:
    message = error.message
    assert "\n" not in message
    assert STANDIN_KEY not in message
    return message


def test_download_round_trip_extracts_nested_zips_and_is_idempotent(environment, tmp_path, capsys):
    raw_dir = tmp_path / "data" / "raw" / SLUG
    with KaggleStandIn(competitions={SLUG: competition_zip()}) as stand_in:
        assert download.download_competition(SLUG, raw_dir) is True
        requests_after_first = len(stand_in.requests)
        assert download.download_competition(SLUG, raw_dir) is False
        assert len(stand_in.requests) == requests_after_first
        assert stand_in.download_count(SLUG) == 1
    assert (raw_dir / "train" / "a.jpg").read_bytes() == b"image-a"
    assert (raw_dir / "train" / "b.jpg").read_bytes() == b"image-b"
    assert (raw_dir / "test" / "c.jpg").read_bytes() == b"image-c"
    assert (raw_dir / "labels.csv").read_text().startswith("id,breed")
    assert (raw_dir / download.DOWNLOAD_MARKER).is_file()
    assert not list(raw_dir.rglob("*.zip"))
    assert sorted(path.name for path in raw_dir.parent.iterdir()) == [SLUG]
    assert_key_not_printed(capsys)


@pytest.mark.parametrize("nested", [False, True], ids=["top-level", "inside-train.zip"])
def test_download_refuses_parent_traversal_and_writes_nothing(environment, tmp_path, nested):
    evil = make_zip({"ok.txt": b"fine", "../evil": b"pwned"})
    bundle = make_zip({"train.zip": evil}) if nested else evil
    raw_dir = tmp_path / "data" / "raw" / SLUG
    with KaggleStandIn(competitions={SLUG: bundle}), pytest.raises(KitError) as caught:
        download.download_competition(SLUG, raw_dir)
    message = assert_one_line_without_key(caught.value)
    assert "'../evil'" in message and (".zip" in message)
    assert not raw_dir.exists()
    assert list(tmp_path.rglob("evil")) == []
    assert list(tmp_path.rglob("ok.txt")) == []
    assert not (raw_dir.parent / f".partial-{SLUG}").exists()


@pytest.mark.parametrize(
    "member_name, reason",
    [("{absolute}", "absolute path"), ("C:/windows/evil", "drive letter"), ("a/../../evil", "'..'")],
)
def test_safe_extract_refuses_escaping_members(tmp_path, member_name, reason):
    absolute_target = tmp_path / "absolute-evil"
    member_name = member_name.format(absolute=absolute_target.as_posix())
    zip_path = tmp_path / "bad.zip"
    zip_path.write_bytes(make_zip({"harmless.txt": b"x", member_name: b"pwned"}))
    destination = tmp_path / "out"
    with pytest.raises(KitError) as caught:
        download.safe_extract(zip_path, destination)
    message = assert_one_line_without_key(caught.value)
    assert "bad.zip" in message and repr(member_name) in message and reason in message
    assert not absolute_target.exists()
    assert not destination.exists()


def test_safe_extract_refuses_symlink_member(tmp_path):
    link = zipfile.ZipInfo("link")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    zip_path = tmp_path / "links.zip"
    with zipfile.ZipFile(zip_path, "w") as archive:
        archive.writestr(link, "/etc/passwd")
    with pytest.raises(KitError, match="symbolic link"):
        download.safe_extract(zip_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_safe_extract_extracts_ordinary_members(tmp_path):
    zip_path = tmp_path / "good.zip"
    zip_path.write_bytes(make_zip({"folder/file.txt": b"hello", "top.csv": b"a,b\n"}))
    download.safe_extract(zip_path, tmp_path / "out")
    assert (tmp_path / "out" / "folder" / "file.txt").read_bytes() == b"hello"
    assert (tmp_path / "out" / "top.csv").read_bytes() == b"a,b\n"


def test_interrupted_download_leaves_no_raw_dir_and_next_try_replaces_partial(environment, tmp_path):
    raw_dir = tmp_path / "data" / "raw" / SLUG
    partial = raw_dir.parent / f".partial-{SLUG}"
    with (
        KaggleStandIn(competitions={SLUG: b"PK\x03\x04 truncated"}),
        pytest.raises(KitError, match="not a valid zip"),
    ):
        download.download_competition(SLUG, raw_dir)
    assert not raw_dir.exists() and not partial.exists()
    partial.mkdir(parents=True)  # as left by a killed process
    (partial / "stale.bin").write_bytes(b"half")
    with KaggleStandIn(competitions={SLUG: competition_zip()}):
        assert download.download_competition(SLUG, raw_dir) is True
    assert not partial.exists()
    assert not (raw_dir / "stale.bin").exists()
    assert (raw_dir / "train" / "a.jpg").is_file()


def test_download_refuses_foreign_nonempty_raw_dir(environment, tmp_path):
    raw_dir = tmp_path / SLUG
    raw_dir.mkdir()
    (raw_dir / "mine.txt").write_text("user data")
    with pytest.raises(KitError, match="no completed download"):
        download.download_competition(SLUG, raw_dir)
    assert (raw_dir / "mine.txt").read_text() == "user data"


def test_submit_uploads_exact_bytes_and_message(environment, tmp_path, capsys):
    csv_path = tmp_path / "submission.csv"
    csv_bytes = b"id,label\n1,0.25\n2,0.75\n"
    csv_path.write_bytes(csv_bytes)
    with KaggleStandIn(competitions={SLUG: None}) as stand_in:
        kaggle.submit(SLUG, csv_path, "resnet34 fold 0, tta")
        rows = kaggle.list_submissions(SLUG)
    assert stand_in.uploads == [(SLUG, "submission.csv", csv_bytes, "resnet34 fold 0, tta")]
    assert rows[0]["file_name"] == "submission.csv"
    assert rows[0]["description"] == "resnet34 fold 0, tta"
    assert rows[0]["status"] == "pending" and rows[0]["public_score"] is None
    assert_key_not_printed(capsys)


def test_failed_upload_is_an_error_not_a_silent_success(environment, tmp_path):
    csv_path = tmp_path / "submission.csv"
    csv_path.write_bytes(b"id,label\n1,0\n")
    with (
        KaggleStandIn(competitions={SLUG: None}, failing_uploads=True) as stand_in,
        pytest.raises(KitError, match="uploading submission.csv to dog-breeds failed"),
    ):
        kaggle.submit(SLUG, csv_path, "never arrives")
    assert stand_in.uploads == []


def test_list_submissions_returns_server_rows_across_pages(environment):
    seeded = [
        {
            "date": "2024-05-01T12:30:00.000Z",
            "fileName": "best.csv",
            "description": "best",
            "status": "COMPLETE",
            "publicScore": "0.912",
            "privateScore": "0.905",
        },
        {"date": "2024-04-30T08:00:00.000Z", "fileName": "broken.csv", "status": "ERROR"},
    ]
    filler = [
        {
            "date": "2024-01-01T00:00:00.000Z",
            "fileName": f"old{index}.csv",
            "status": "COMPLETE",
            "publicScore": "0.5",
        }
        for index in range(kaggle.PAGE_SIZE)
    ]
    with KaggleStandIn(submissions={SLUG: seeded + filler}):
        rows = kaggle.list_submissions(SLUG)
    assert len(rows) == 2 + kaggle.PAGE_SIZE
    assert rows[0] == {
        "date": "2024-05-01T12:30:00",
        "file_name": "best.csv",
        "description": "best",
        "status": "complete",
        "public_score": "0.912",
        "private_score": "0.905",
    }
    assert rows[1] == {
        "date": "2024-04-30T08:00:00",
        "file_name": "broken.csv",
        "description": None,
        "status": "error",
        "public_score": None,
        "private_score": None,
    }
    assert rows[-1]["file_name"] == f"old{kaggle.PAGE_SIZE - 1}.csv"


def test_missing_credentials_give_one_line_fix_without_traceback(monkeypatch, tmp_path, capsys):
    kaggle_env(monkeypatch, tmp_path, credentials=False)
    with pytest.raises(KitError) as caught:
        kaggle.authenticated_api()
    message = assert_one_line_without_key(caught.value)
    positions = [message.index(form) for form in credentials.FORM_NAMES]  # every form, in the client's order
    assert positions == sorted(positions)
    assert capsys.readouterr().out == ""  # the client's multi-line banner is swallowed

    @click.group(cls=Commands)  # the kit's command line: a KitError becomes click's one line
    def group():
        pass

    @group.command()
    def command():
        kaggle.authenticated_api()

    result = CliRunner().invoke(group, ["command"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [f"Error: {message}"]


def test_credentials_from_kaggle_json_in_config_dir(monkeypatch, tmp_path):
    settings = kaggle_env(monkeypatch, tmp_path, credentials=False)
    config_file = settings.config_directory / "kaggle.json"
    config_file.write_text(f'{{"username": "{settings.username}", "key": "{settings.key}"}}')
    config_file.chmod(0o600)
    with KaggleStandIn(submissions={SLUG: []}):
        assert kaggle.list_submissions(SLUG) == []


def test_wrong_key_is_reported_without_leaking_it(environment, capsys):
    with (
        KaggleStandIn(submissions={SLUG: []}, key="the-real-key-is-different"),
        pytest.raises(KitError) as caught,
    ):
        kaggle.list_submissions(SLUG)
    message = assert_one_line_without_key(caught.value)
    assert "401" in message and "credentials" in message
    assert_key_not_printed(capsys)


def test_rules_not_accepted_points_at_rules_page(environment, tmp_path):
    raw_dir = tmp_path / "rules-not-accepted"
    with (
        KaggleStandIn(competitions={"rules-not-accepted": competition_zip()}),
        pytest.raises(KitError) as caught,
    ):
        download.download_competition("rules-not-accepted", raw_dir)
    message = assert_one_line_without_key(caught.value)
    assert "https://www.kaggle.com/competitions/rules-not-accepted/rules" in message
    assert not raw_dir.exists() and not (tmp_path / ".partial-rules-not-accepted").exists()


def test_unknown_slug_says_so(environment, tmp_path):
    with KaggleStandIn(competitions={SLUG: competition_zip()}), pytest.raises(KitError) as caught:
        download.download_competition("dog-bredes", tmp_path / "dog-bredes")
        with pytest.raises(KitError, match="unknown competition 'dog-bredes'"):
            kaggle.list_submissions("dog-bredes")
    assert "unknown competition 'dog-bredes'" in assert_one_line_without_key(caught.value)
    assert not (tmp_path / "dog-bredes").exists()


def test_unreachable_server_says_no_network(environment, monkeypatch, tmp_path):
    from kagglesdk import kaggle_env as sdk_environment

    with socket.socket() as probe:  # a port that was just free, so nothing answers there
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    monkeypatch.setitem(
        sdk_environment._env_to_endpoint, sdk_environment.get_env(), f"http://127.0.0.1:{closed_port}"
    )
    waits = []
    monkeypatch.setattr(answers, "pause", waits.append)
    with pytest.raises(KitError) as caught:
        download.download_competition(SLUG, tmp_path / SLUG)
    assert assert_one_line_without_key(caught.value).startswith("cannot reach Kaggle (no network?)")
    assert waits == []  # no connection at all: said at once, as for a token (issue 32), not after 30 s
    assert not (tmp_path / SLUG).exists()
