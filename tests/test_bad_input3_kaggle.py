"""Bad inputs, round three (issue 32), on the Kaggle side, every case against the stand-in in Kaggle's PROD
shape and in its TEST environment: two `kit download`s at once (real processes), a kaggle.json that is
not JSON, a legacy key with no network."""

from __future__ import annotations

import json
import socket
import subprocess
import time

import pytest
from click.testing import CliRunner
from kaggle_standin import (  # kaggle_environment: every test in PROD and TEST
    STANDIN_USERNAME,
    KaggleStandIn,
    kaggle_env,
    kaggle_environment,  # noqa: F401 (a fixture)
    kit_command,
    make_zip,
    secrets,
)

from kit.cli import main
from kit.errors import KitError

pytestmark = pytest.mark.usefixtures("kaggle_environment")

DOG_SLUG = "dog-breed-identification"  # competitions/dog-breeds' Kaggle slug
CHUNK = 1 << 16


def invoke(*arguments):
    return CliRunner().invoke(main, [str(a) for a in arguments])


def error_line(result) -> str:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[-1].startswith("Error: ") and sum(line.startswith("Error: ") for line in lines) == 1
    for secret in secrets():
        assert secret not in result.output
    return lines[-1]


def bundle_members() -> dict[str, bytes]:
    pictures = {f"train/{n}.jpg": bytes([n]) * (2 * CHUNK) for n in range(6)}  # stored: 12 slow chunks
    return {"train.zip": make_zip(pictures), "labels.csv": b"id,breed\n0,pug\n"}


# Class 1: two commands at once on one competition.


@pytest.mark.slow
def test_two_downloads_at_once_take_turns_and_fetch_once(project, monkeypatch, tmp_path):
    """Two `kit download` processes started together, three times: each time both succeed, the archive is
    fetched once (the second waits, then finds it done) and the folder holds exactly the bundle. Before
    the lock they shared one hidden folder, both streamed into one partial file and the result was marked
    complete half-filled or refused as a broken zip."""
    kaggle_env(monkeypatch, tmp_path, credentials="token-env")
    members = bundle_members()
    raw = project / "data" / "raw" / "dog-breeds"
    with KaggleStandIn(competitions={DOG_SLUG: make_zip(members)}, storage_seconds=0.15) as stand_in:
        for attempt in range(3):
            command = kit_command(stand_in, "download", "dog-breeds")
            processes = [
                subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                for _ in range(2)
            ]
            outputs = [process.communicate(timeout=240)[0] for process in processes]
            assert [process.returncode for process in processes] == [0, 0], outputs
            assert stand_in.download_count(DOG_SLUG) == attempt + 1, outputs
            assert sorted(output.strip().splitlines()[-1] for output in outputs) == [
                "dog-breeds: already downloaded in data/raw/dog-breeds",
                "dog-breeds: downloaded in data/raw/dog-breeds",
            ]
            assert (raw / "labels.csv").read_bytes() == members["labels.csv"]
            pictures = sorted(path.name for path in (raw / "train").iterdir())
            assert pictures == [f"{n}.jpg" for n in range(6)]
            assert all((raw / "train" / f"{n}.jpg").read_bytes() == bytes([n]) * 2 * CHUNK for n in range(6))
            assert not list(raw.parent.glob(".download-*")) and not list(raw.parent.glob(".partial-*"))
            if attempt < 2:
                for path in sorted(raw.rglob("*"), reverse=True):  # start over for the next pair
                    path.unlink() if path.is_file() else path.rmdir()
                raw.rmdir()


# Class 11: a kaggle.json that is not JSON is said to be malformed, naming the file.


@pytest.mark.parametrize(
    "content, said",
    [
        (b'{"username": "kit-test-user", "key": ', "is not valid JSON (line 1, column"),
        (b"username=kit-test-user\nkey=abc\n", "is not valid JSON (line 1, column 1"),
        (b"", "is not valid JSON"),
        (b'["kit-test-user", "abc"]', "holds a JSON list, not an object"),
        ('{"username": "kit-test-user"}'.encode("utf-16"), "is not UTF-8 text"),
    ],
    ids=["cut-short", "not-json", "empty", "a-list", "utf-16"],
)
def test_a_malformed_kaggle_json_is_named_not_called_missing(project, monkeypatch, tmp_path, content, said):
    home = kaggle_env(monkeypatch, tmp_path, credentials=False)
    config_file = home.config_directory / "kaggle.json"
    config_file.write_bytes(content)
    config_file.chmod(0o600)
    with KaggleStandIn(competitions={DOG_SLUG: None}) as stand_in:
        line = error_line(invoke("files", "dog-breeds"))
    assert f"{config_file} {said}" in line and "no Kaggle credentials found" not in line
    assert '{"username": "<user>", "key": "<key>"}' in line and "KAGGLE_API_TOKEN" in line
    assert stand_in.requests == []


def test_a_malformed_kaggle_json_beside_a_token_is_a_warning(project, monkeypatch, tmp_path):
    home = kaggle_env(monkeypatch, tmp_path, credentials="token-env")
    config_file = home.config_directory / "kaggle.json"
    config_file.write_text('{"username": ')
    config_file.chmod(0o600)
    with KaggleStandIn(competitions={DOG_SLUG: make_zip({"labels.csv": b"id\n"})}):
        result = invoke("files", "dog-breeds")
    assert result.exit_code == 0, result.output
    assert f"warning: {config_file} is not valid JSON" in result.output and "labels.csv" in result.output


def test_a_kaggle_json_that_stops_the_client_is_refused_even_beside_a_token(project, monkeypatch, tmp_path):
    """JSON that is not an object makes the client's own config merge raise a TypeError (a traceback)."""
    home = kaggle_env(monkeypatch, tmp_path, credentials="token-env")
    config_file = home.config_directory / "kaggle.json"
    config_file.write_text('"kit-test-user"')
    with KaggleStandIn(competitions={DOG_SLUG: None}):
        line = error_line(invoke("files", "dog-breeds"))
    assert f"{config_file} holds a JSON str, not an object" in line and "stops the kaggle client" in line


# Class 11: a legacy key with no network fails as fast as a token does, without 30 s of retries.


def point_the_client_at_nothing(monkeypatch) -> None:
    """kagglesdk's endpoint for the environment in use: a port where nothing listens (no network)."""
    from kagglesdk import kaggle_env as sdk_environment

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.setitem(sdk_environment._env_to_endpoint, sdk_environment.get_env(), closed)


@pytest.mark.parametrize("credentials", ["key-env", "kaggle-json"])  # a token failed fast already
@pytest.mark.parametrize(
    "command",
    [["files", "dog-breeds"], ["download", "dog-breeds"], ["leaderboard", "dog-breeds", "--top", "3"]],
    ids=["files", "download", "leaderboard"],
)
def test_no_network_fails_at_once_whatever_the_credentials(
    project, monkeypatch, tmp_path, credentials, command
):
    kaggle_env(monkeypatch, tmp_path, credentials=credentials)
    with KaggleStandIn(competitions={DOG_SLUG: None}):  # running, but the client is sent elsewhere
        point_the_client_at_nothing(monkeypatch)
        started = time.monotonic()
        line = error_line(invoke(*command))
        seconds = time.monotonic() - started
    assert line.startswith("Error: cannot reach Kaggle (no network?)")
    assert seconds < 10, f"{seconds:.0f} s"  # it was 31 s for a legacy key (four waits: 2 + 4 + 8 + 16 s)
    assert not (project / "data" / "raw" / "dog-breeds").exists()


def test_no_network_while_listing_submissions_is_one_line_at_once(project, monkeypatch, tmp_path):

    from kit.kaggle import client

    home = kaggle_env(monkeypatch, tmp_path, credentials=False)
    (home.config_directory / "kaggle.json").write_text(json.dumps({"username": STANDIN_USERNAME, "key": "k"}))
    point_the_client_at_nothing(monkeypatch)
    started = time.monotonic()
    with pytest.raises(KitError) as caught:
        client.list_submissions(DOG_SLUG)
    assert caught.value.message.startswith("cannot reach Kaggle") and time.monotonic() - started < 10
