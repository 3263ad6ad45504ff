"""Kaggle as it is today, through the official client against the production-like stand-in: every credential
form, Kaggle's own messages with the kit's fix, retries, resumable downloads, free space, token paging,
submission limits, files and the leaderboard."""

from __future__ import annotations

import datetime
import errno
import os
import shutil

import pytest
from click.testing import CliRunner
from kaggle_standin import (  # kaggle_environment: every test in PROD and TEST
    PARTICIPATE_MESSAGE,
    RULES_MESSAGE,
    STANDIN_TOKEN,
    KaggleStandIn,
    kaggle_env,
    kaggle_environment,  # noqa: F401 (a fixture)
    make_zip,
    noise_bundle,
    secrets,
)

from kit.cli import main
from kit.errors import KitError
from kit.files import human_size
from kit.kaggle import answers, client, download

pytestmark = pytest.mark.usefixtures("kaggle_environment")

SLUG = "dog-breeds"
CHUNK = download.CHUNK_BYTES


def big_bundle(chunks: int = 12) -> bytes:
    """A bundle of `chunks` transfer chunks (the zip's own 200 bytes or so included): resumes are exact."""
    return noise_bundle(chunks * CHUNK - 200, seed=0)


def one_line(error: KitError) -> str:
    message = error.message
    assert "\n" not in message
    for secret in secrets():
        assert secret not in message
    return message


def no_signature(message: str, stand_in: KaggleStandIn) -> None:
    assert "X-Goog-Signature" not in message
    for signature in stand_in.signatures:
        assert signature not in message


def invoke(*arguments):
    return CliRunner().invoke(main, [str(a) for a in arguments])


# Credentials in every form.


@pytest.mark.parametrize(
    "form, scheme",
    [("token-env", "Bearer"), ("token-file", "Bearer"), ("kaggle-json", "Basic"), ("key-env", "Basic")],
)
def test_every_credential_form_works(monkeypatch, tmp_path, form, scheme, capsys):
    kaggle_env(monkeypatch, tmp_path, credentials=form)
    with KaggleStandIn(
        submissions={SLUG: [{"fileName": "a.csv", "date": "2024-01-01T00:00:00.000Z"}]}
    ) as stand_in:
        rows = client.list_submissions(SLUG)
    assert [row["file_name"] for row in rows] == ["a.csv"]
    call = next(r for r in stand_in.requests if r.path.endswith("/ListSubmissions"))
    assert call.auth == scheme
    assert stand_in.api_calls("IntrospectToken") == (1 if scheme == "Bearer" else 0)
    captured = capsys.readouterr()
    for secret in secrets():
        assert secret not in captured.out + captured.err


def test_missing_credentials_name_every_form_in_order(monkeypatch, tmp_path):
    kaggle_env(monkeypatch, tmp_path, credentials=False)
    with pytest.raises(KitError) as caught:
        client.authenticated_api()
    message = one_line(caught.value)
    positions = [message.index(form) for form in client.credential_forms.FORM_NAMES]
    assert positions == sorted(positions)
    assert "https://www.kaggle.com/settings/api" in message


def test_refused_token_names_its_form_never_its_value(monkeypatch, tmp_path):
    kaggle_env(monkeypatch, tmp_path, credentials="token-file")
    with KaggleStandIn(submissions={SLUG: []}, token="KGAT_another-token"):
        with pytest.raises(KitError) as caught:
            client.list_submissions(SLUG)
    message = one_line(caught.value)
    assert "~/.kaggle/access_token" in message and "not active" in message


def test_401_names_the_form_used_and_all_forms(monkeypatch, tmp_path):
    kaggle_env(monkeypatch, tmp_path, credentials="key-env")
    with KaggleStandIn(submissions={SLUG: []}, key="the-real-key-is-different"):
        with pytest.raises(KitError) as caught:
            client.list_submissions(SLUG)
    message = one_line(caught.value)
    assert "HTTP 401" in message and "KAGGLE_USERNAME/KAGGLE_KEY" in message
    assert "Unauthenticated" in message  # Kaggle's own word
    for form in client.credential_forms.FORM_NAMES:
        assert form in message


def test_token_pasted_as_legacy_key_says_where_tokens_go(monkeypatch, tmp_path):
    kaggle_env(monkeypatch, tmp_path, credentials="key-env")
    monkeypatch.setenv("KAGGLE_KEY", STANDIN_TOKEN)  # the new token, sent as Basic auth: refused
    with KaggleStandIn(submissions={SLUG: []}):
        with pytest.raises(KitError) as caught:
            client.list_submissions(SLUG)
    message = one_line(caught.value)
    assert "KAGGLE_KEY holds an API token" in message and "KAGGLE_API_TOKEN" in message


def test_credentials_file_readable_by_others_is_warned_once(monkeypatch, tmp_path):
    settings = kaggle_env(monkeypatch, tmp_path, credentials="token-file")
    token_file = settings.home / ".kaggle" / "access_token"
    token_file.chmod(0o644)
    lines: list[str] = []
    with KaggleStandIn(submissions={SLUG: []}):
        client.authenticated_api(lines.append)
    assert lines == [f"warning: {token_file} is readable by other users: chmod 600 {token_file}"]


def test_old_client_is_refused_naming_its_version(monkeypatch):
    monkeypatch.setattr(client.importlib.metadata, "version", lambda name: "1.7.4.5")
    with pytest.raises(KitError) as caught:
        client.check_client_version()
    message = one_line(caught.value)
    assert "kaggle 1.7.4.5 is installed" in message and "kaggle>=2.2.4,<3" in message


# Kaggle's own words, and the kit's fix.


def test_403_rules_shows_kaggles_text_and_rules_page(monkeypatch, tmp_path):
    kaggle_env(monkeypatch, tmp_path, credentials="token-env")
    with KaggleStandIn(competitions={SLUG: big_bundle(1)}, rules_not_accepted={SLUG}):
        with pytest.raises(KitError) as caught:
            download.download_competition(SLUG, tmp_path / "raw" / SLUG)
    message = one_line(caught.value)
    assert RULES_MESSAGE in message and f"https://www.kaggle.com/competitions/{SLUG}/rules" in message


def test_403_participate_says_join_and_verify_phone_not_rules(monkeypatch, tmp_path):
    kaggle_env(monkeypatch, tmp_path, credentials="token-env")
    with KaggleStandIn(competitions={SLUG: big_bundle(1)}, not_joined={SLUG}):
        with pytest.raises(KitError) as caught:
            download.download_competition(SLUG, tmp_path / "raw" / SLUG)
    message = one_line(caught.value)
    assert PARTICIPATE_MESSAGE in message and "join" in message and "phone" in message
    assert "/rules" not in message


def test_expired_link_is_replaced_by_a_fresh_one(monkeypatch, tmp_path, waits):
    kaggle_env(monkeypatch, tmp_path, credentials="token-env")
    bundle = big_bundle(2)
    with KaggleStandIn(competitions={SLUG: bundle}) as stand_in:
        stand_in.fail_next("storage", "expired")
        assert download.download_competition(SLUG, tmp_path / "raw" / SLUG) is True
    assert stand_in.api_calls("DownloadDataFiles") == 2  # the second link was fresh
    assert stand_in.bytes_served == len(bundle)


def test_link_that_stays_expired_is_one_line_without_signature(monkeypatch, tmp_path, waits):
    kaggle_env(monkeypatch, tmp_path, credentials="token-env")
    with KaggleStandIn(competitions={SLUG: big_bundle(1)}, link_lifetime=0) as stand_in:
        with pytest.raises(KitError) as caught:
            download.download_competition(SLUG, tmp_path / "raw" / SLUG)
    message = one_line(caught.value)
    assert "expired" in message and "run the command again" in message
    no_signature(message, stand_in)
    assert stand_in.api_calls("DownloadDataFiles") == 2  # one fresh link, then the command stops


def test_400_daily_limit_says_how_many_tomorrow(monkeypatch, tmp_path):
    kaggle_env(monkeypatch, tmp_path, credentials="token-env")
    csv_path = tmp_path / "submission.csv"
    csv_path.write_text("id,label\n1,0.5\n")
    today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    with KaggleStandIn(submissions={SLUG: [{"date": today, "fileName": "a.csv"}]}, daily_limit=1) as stand_in:
        with pytest.raises(KitError) as caught:
            client.submit(SLUG, csv_path, "one too many")
    message = one_line(caught.value)
    assert "daily Submission allowance (1)" in message and "daily limit reached; 1 left tomorrow" in message
    assert stand_in.uploads == []


def test_400_notebook_only(monkeypatch, tmp_path):
    kaggle_env(monkeypatch, tmp_path, credentials="token-env")
    csv_path = tmp_path / "submission.csv"
    csv_path.write_text("id,label\n1,0.5\n")
    with KaggleStandIn(competitions={SLUG: None}, notebook_only={SLUG}) as stand_in:
        with pytest.raises(KitError) as caught:
            client.submit(SLUG, csv_path, "csv")
    assert "this competition takes notebook submissions only" in one_line(caught.value)
    assert stand_in.uploads == []


def test_429_then_ok_waits_as_told(monkeypatch, tmp_path, waits):
    kaggle_env(monkeypatch, tmp_path, credentials="token-env")
    with KaggleStandIn(submissions={SLUG: []}) as stand_in:
        stand_in.fail_next("ListSubmissions", "429", retry_after="7").fail_next("ListSubmissions", "503")
        assert client.list_submissions(SLUG) == []
    assert waits == [7.0, answers.RETRY_FIRST_WAIT * 2]  # Retry-After, then the second doubling step
    assert stand_in.api_calls("ListSubmissions") == 3


def test_429_forever_is_bounded_and_one_line(monkeypatch, tmp_path, waits):
    kaggle_env(monkeypatch, tmp_path, credentials="token-env")
    with KaggleStandIn(submissions={SLUG: []}) as stand_in:
        for _ in range(answers.RETRY_ATTEMPTS + 2):
            stand_in.fail_next("ListSubmissions", "429", retry_after="3600")
        with pytest.raises(KitError) as caught:
            client.list_submissions(SLUG)
    assert "HTTP 429" in one_line(caught.value)
    assert stand_in.api_calls("ListSubmissions") == answers.RETRY_ATTEMPTS
    assert waits == [answers.RETRY_LONGEST_WAIT] * (answers.RETRY_ATTEMPTS - 1)  # Retry-After, capped


# Downloads that survive.


def test_dropped_connection_then_resume_transfers_only_the_rest(monkeypatch, tmp_path, waits):
    kaggle_env(monkeypatch, tmp_path, credentials="token-env")
    bundle = big_bundle(12)
    raw_dir = tmp_path / "data" / "raw" / SLUG
    with KaggleStandIn(competitions={SLUG: bundle}) as stand_in:
        for _ in range(answers.RETRY_ATTEMPTS):
            stand_in.fail_next("storage", "drop", after_bytes=CHUNK)
        with pytest.raises(KitError) as caught:
            download.download_competition(SLUG, raw_dir)
        message = one_line(caught.value)
        no_signature(message, stand_in)
        assert "connection dropped" in message and "run it again to resume" in message
        (partial,) = [p for p in (raw_dir.parent).rglob(f"{SLUG}.zip")]
        kept = partial.stat().st_size
        assert kept == answers.RETRY_ATTEMPTS * CHUNK  # every retry went on from where the last one stopped
        assert not raw_dir.exists() and raw_dir not in partial.parents  # the partial is a hidden sibling
        served_before = stand_in.settle().bytes_served
        assert download.download_competition(SLUG, raw_dir) is True
    assert stand_in.settle().bytes_served - served_before == len(bundle) - kept
    assert stand_in.storage_gets(SLUG)[-1].range == f"bytes={kept}-"
    assert (raw_dir / "labels.csv").read_bytes() == b"id,breed\na,pug\n"
    assert not partial.exists()


def test_too_little_free_space_up_front_says_how_much_is_missing(monkeypatch, tmp_path):
    kaggle_env(monkeypatch, tmp_path, credentials="token-env")
    bundle = big_bundle(4)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(download.shutil, "disk_usage", lambda path: usage._replace(free=len(bundle)))
    raw_dir = tmp_path / "data" / "raw" / SLUG
    with KaggleStandIn(competitions={SLUG: bundle}):
        with pytest.raises(KitError) as caught:
            download.download_competition(SLUG, raw_dir)
    message = one_line(caught.value)
    assert "not enough free space for downloading dog-breeds.zip (its size × 2: to extract it)" in message
    assert f"free {human_size(len(bundle))} more" in message  # twice the archive is needed
    assert not raw_dir.exists() and not list(raw_dir.parent.rglob("*.zip"))


def test_too_little_free_space_before_extracting(monkeypatch, tmp_path):
    kaggle_env(monkeypatch, tmp_path, credentials="token-env")
    bundle = big_bundle(4)
    usage = shutil.disk_usage(tmp_path)
    answers = iter([usage._replace(free=10 * len(bundle)), usage._replace(free=len(bundle) // 2)])
    monkeypatch.setattr(download.shutil, "disk_usage", lambda path: next(answers))
    raw_dir = tmp_path / "data" / "raw" / SLUG
    with KaggleStandIn(competitions={SLUG: bundle}) as stand_in:
        with pytest.raises(KitError) as caught:
            download.download_competition(SLUG, raw_dir)
    message = one_line(caught.value)
    assert "not enough free space for extracting dog-breeds.zip" in message
    assert not raw_dir.exists()
    assert stand_in.bytes_served == len(bundle)  # the archive is kept for the next run


@pytest.mark.parametrize("reason", [errno.ENOSPC, errno.EDQUOT])  # the disk full, or the user's quota
def test_disk_full_in_the_middle_of_writing(monkeypatch, tmp_path, reason):
    kaggle_env(monkeypatch, tmp_path, credentials="token-env")
    bundle = big_bundle(6)
    real_open = open

    class FullDisk:
        """A file that takes two chunks, then the disk (or the quota) is full."""

        def __init__(self, *arguments, **options):
            self.file = real_open(*arguments, **options)

        def write(self, data):
            if self.file.tell() >= 2 * CHUNK:
                raise OSError(reason, os.strerror(reason))
            return self.file.write(data)

        def __enter__(self):
            return self

        def __exit__(self, *exception_info):
            self.file.close()

    raw_dir = tmp_path / "data" / "raw" / SLUG
    with KaggleStandIn(competitions={SLUG: bundle}) as stand_in:
        monkeypatch.setattr(download, "open", FullDisk, raising=False)
        with pytest.raises(KitError) as caught:
            download.download_competition(SLUG, raw_dir)
        message = one_line(caught.value)
        assert "disk filled up" in message and "run it again to resume" in message
        monkeypatch.undo()
        kaggle_env(monkeypatch, tmp_path, credentials="token-env")
        served_before = stand_in.settle().bytes_served
        assert download.download_competition(SLUG, raw_dir) is True
    assert stand_in.settle().bytes_served - served_before == len(bundle) - 2 * CHUNK


# Paging, limits, files, leaderboard.


@pytest.mark.parametrize("mode", ["ignore-page", "stuck"])
def test_submissions_are_paged_by_token(monkeypatch, tmp_path, mode):
    kaggle_env(monkeypatch, tmp_path, credentials="token-env")
    rows = [{"ref": n, "date": "2024-01-01T00:00:00.000Z", "fileName": f"{n}.csv"} for n in range(45)]
    warned = []
    with KaggleStandIn(submissions={SLUG: rows}, page_mode=mode) as stand_in:
        names = [row["file_name"] for row in client.list_submissions(SLUG, warned.append)]
    if mode == "ignore-page":
        assert names == [f"{n}.csv" for n in range(45)]
        assert stand_in.api_calls("ListSubmissions") == 3
        assert warned == []
    else:  # the server repeats its first page for any token and any page: the kit says it may be incomplete
        assert names == [f"{n}.csv" for n in range(20)]
        assert len(warned) == 1 and "may be incomplete" in warned[0]


DOG_SLUG = "dog-breed-identification"


def test_kit_submit_with_no_submissions_left_uploads_nothing(project, monkeypatch, tmp_path):
    from test_kaggle_loop import fake_run, valid_breeds_frame

    kaggle_env(monkeypatch, tmp_path, credentials="token-env")
    fake_run(project, "dog-breeds", valid_breeds_frame())
    valid_breeds_frame().to_csv(project / "submissions" / "dog-breeds-fake.csv", index=False)
    today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    used = [{"date": today, "fileName": f"{n}.csv"} for n in range(2)]
    with KaggleStandIn(
        competitions={DOG_SLUG: None}, submissions={DOG_SLUG: used}, daily_limit=2
    ) as stand_in:
        result = invoke("submit", "dog-breeds", "-m", "one more")
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1
    assert lines[0].startswith("Error: no submissions left today for dog-breed-identification (2 used")
    assert stand_in.uploads == [] and stand_in.api_calls("StartSubmissionUpload") == 0
    assert not (project / "submissions" / "ledger.csv").exists()


def test_kit_submit_says_how_many_are_left(project, monkeypatch, tmp_path):
    from test_kaggle_loop import fake_run, valid_breeds_frame

    kaggle_env(monkeypatch, tmp_path, credentials="token-env")
    fake_run(project, "dog-breeds", valid_breeds_frame())
    valid_breeds_frame().to_csv(project / "submissions" / "dog-breeds-fake.csv", index=False)
    with KaggleStandIn(competitions={DOG_SLUG: None}, daily_limit=3) as stand_in:
        result = invoke("submit", "dog-breeds", "-m", "first")
    assert result.exit_code == 0, result.output
    assert "3 submissions left today" in result.output
    assert len(stand_in.uploads) == 1


def test_kit_files_lists_names_and_sizes(project, monkeypatch, tmp_path):
    kaggle_env(monkeypatch, tmp_path, credentials="token-env")
    members = {f"test/{n:03d}.jpg": bytes(n + 1) for n in range(25)} | {"labels.csv": b"x" * 2500}
    with KaggleStandIn(competitions={DOG_SLUG: make_zip(members)}, page_mode="ignore-page") as stand_in:
        result = invoke("files", "dog-breeds")
    assert result.exit_code == 0, result.output
    assert "labels.csv" in result.output and "2.5 KB" in result.output
    assert "test/024.jpg" in result.output  # on the second page
    assert "26 files" in result.output
    assert stand_in.api_calls("ListDataFiles") == 2


def test_kit_leaderboard_top_and_own_rank(project, monkeypatch, tmp_path):
    kaggle_env(monkeypatch, tmp_path, credentials="token-env")
    board = [
        {
            "teamId": n,
            "teamName": f"team {n}",
            "submissionDate": "2024-05-01T00:00:00.000Z",
            "score": f"{1 - n / 100:.2f}",
        }
        for n in range(1, 31)
    ]
    board[24]["teamName"] = "kit-test-team"
    with KaggleStandIn(competitions={DOG_SLUG: None}, leaderboards={DOG_SLUG: board}):
        result = invoke("leaderboard", "dog-breeds", "--top", "5")
    assert result.exit_code == 0, result.output
    assert "team 1" in result.output and "team 5" in result.output and "team 6" not in result.output
    assert "your team: rank 25 of 30" in result.output


def test_kit_leaderboard_without_a_public_score_says_so(project, monkeypatch, tmp_path):
    # Kaggle leaves userRank out for a team with no public score; kagglesdk reads that as rank 0.
    kaggle_env(monkeypatch, tmp_path, credentials="token-env")
    board = [{"teamId": 1, "teamName": "team 1", "submissionDate": "2024-05-01T00:00:00Z", "score": "0.90"}]
    with KaggleStandIn(competitions={DOG_SLUG: None}, leaderboards={DOG_SLUG: board}):
        result = invoke("leaderboard", "dog-breeds", "--top", "5")
    assert result.exit_code == 0, result.output
    assert "your team: no public score yet" in result.output and "rank 0" not in result.output


def test_kit_download_one_file_then_the_whole_competition(project, monkeypatch, tmp_path):
    kaggle_env(monkeypatch, tmp_path, credentials="token-env")
    members = {"sample_submission.csv": b"id,pug\na,1\n", "train.zip": make_zip({"train/a.jpg": b"x"})}
    raw = project / "data" / "raw" / "dog-breeds"
    with KaggleStandIn(competitions={DOG_SLUG: make_zip(members)}) as stand_in:
        result = invoke("download", "dog-breeds", "--file", "sample_submission.csv")
        assert result.exit_code == 0, result.output
        assert "sample_submission.csv in data/raw/dog-breeds/sample_submission.csv" in result.output
        assert (raw / "sample_submission.csv").read_bytes() == b"id,pug\na,1\n"
        assert stand_in.download_count(DOG_SLUG) == 0 and stand_in.bytes_served == len(
            members["sample_submission.csv"]
        )
        whole = invoke("download", "dog-breeds")
        assert whole.exit_code == 0, whole.output  # the single file does not block the whole
    assert (raw / "train" / "a.jpg").read_bytes() == b"x" and (raw / "sample_submission.csv").is_file()
    assert not list(raw.parent.glob(".download-*"))


def test_kit_download_unknown_file_is_one_line(project, monkeypatch, tmp_path):
    kaggle_env(monkeypatch, tmp_path, credentials="token-env")
    with KaggleStandIn(competitions={DOG_SLUG: make_zip({"labels.csv": b"id\n"})}):
        result = invoke("download", "dog-breeds", "--file", "label.csv")
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1
    assert "HTTP 404" in lines[0] and "no file 'label.csv' in dog-breed-identification" in lines[0]
    assert not (project / "data" / "raw").exists() or not list((project / "data" / "raw").iterdir())
