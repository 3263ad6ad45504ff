"""Kaggle as a new user meets it (issue 25): the real client in its production shape (`/v1/...` on the API
host, signed links on a second host) and in its TEST environment, every case in both: the first-time
errors named right, a notebook never run for nothing, credentials as the client finds them, listings that
cannot truncate without a word, no private kagglesdk part without a one-line fix, links refreshed once."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner
from kaggle_standin import (  # kaggle_environment: every test in PROD and TEST
    STANDIN_KEY,
    STANDIN_TOKEN,
    STANDIN_USERNAME,
    KaggleStandIn,
    KernelVersion,
    kaggle_env,
    kaggle_environment,  # noqa: F401 (a fixture)
    make_zip,
    noise_bundle,
    notebooks,
    secrets,
)

from kit.cli import main
from kit.errors import KitError
from kit.kaggle import answers, client, credentials, download, kernels

pytestmark = pytest.mark.usefixtures("kaggle_environment")

SLUG = "dog-breeds"
DOG_SLUG = "dog-breed-identification"  # competitions/dog-breeds' Kaggle slug
KERNEL = f"{STANDIN_USERNAME}/kit-dog-breeds-predict"
RULES = f"https://www.kaggle.com/competitions/{DOG_SLUG}/rules"


def bundle(size: int = 5 * download.CHUNK_BYTES) -> bytes:
    return noise_bundle(size, seed=1)


def invoke(*arguments):
    return CliRunner().invoke(main, [str(a) for a in arguments])


def error_line(result) -> str:
    """The command failed with one `Error:` line (other lines may be notices), without any secret."""
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and result.output.rstrip().endswith(errors[0]), result.output
    for secret in secrets():
        assert secret not in result.output
    return errors[0]


# The first-time errors, as production words them.


def test_download_rules_not_accepted_gives_the_rules_url(project, monkeypatch, tmp_path):
    kaggle_env(monkeypatch, tmp_path, credentials="token-env")
    with KaggleStandIn(competitions={DOG_SLUG: bundle()}, rules_not_accepted={DOG_SLUG}) as stand_in:
        line = error_line(invoke("download", "dog-breeds"))
    assert RULES in line and "download host" not in line and "resumes" not in line
    assert stand_in.storage_gets() == []


def test_download_participate_denied_gives_join_and_phone_fix(project, monkeypatch, tmp_path):
    kaggle_env(monkeypatch, tmp_path, credentials="key-env")
    with KaggleStandIn(competitions={DOG_SLUG: bundle()}, not_joined={DOG_SLUG}):
        line = error_line(invoke("download", "dog-breeds"))
    assert "competitions.participate" in line and "Join Competition" in line and "phone" in line
    assert "download host" not in line


@pytest.mark.parametrize("refusal", ["rules_not_accepted", "not_joined"])
def test_submit_refusals_name_the_fix_not_the_download_host(project, monkeypatch, tmp_path, refusal):
    from test_kaggle_loop import fake_run, valid_breeds_frame

    kaggle_env(monkeypatch, tmp_path, credentials="token-env")
    fake_run(project, "dog-breeds", valid_breeds_frame())
    valid_breeds_frame().to_csv(project / "submissions" / "dog-breeds-fake.csv", index=False)
    with KaggleStandIn(competitions={DOG_SLUG: None}, **{refusal: {DOG_SLUG}}) as stand_in:
        line = error_line(invoke("submit", "dog-breeds", "-m", "first"))
    assert (RULES in line) if refusal == "rules_not_accepted" else ("Join Competition" in line)
    assert "download host" not in line and stand_in.uploads == []


def test_storage_and_api_are_told_apart_by_host_not_path(monkeypatch, tmp_path):
    """A 403 from the API, its URL without /api/v1/ (production), is Kaggle's; storage's is storage's."""
    kaggle_env(monkeypatch, tmp_path)
    with KaggleStandIn(rules_not_accepted=()) as stand_in:
        api_answer = requests.Response()
        api_answer.status_code, api_answer.url = 403, f"{stand_in.url}/v1/competitions.X/DownloadDataFiles"
        api_answer._content = json.dumps({"code": 403, "message": "You must accept the rules"}).encode()
        storage_answer = requests.Response()
        storage_answer.status_code, storage_answer.url = 403, f"{stand_in.storage_url}/api/v1/x.zip?sig=1"
        storage_answer._content = b"<Error><Code>AccessDenied</Code></Error>"
        from_api = answers.error_message(requests.HTTPError(response=api_answer), DOG_SLUG)
        from_storage = answers.error_message(requests.HTTPError(response=storage_answer), DOG_SLUG)
    assert RULES in from_api and "download host" in from_storage and RULES not in from_storage


# Signed links: a refused one is replaced once; resumes without an ETag; the link's own file name.


@pytest.mark.parametrize("fault", ["expired-400", "expired", "forbidden"])
def test_refused_link_fetches_a_fresh_one_once_and_resumes(monkeypatch, tmp_path, waits, fault):
    kaggle_env(monkeypatch, tmp_path, credentials="token-env")
    content = bundle()
    with KaggleStandIn(competitions={SLUG: content}) as stand_in:
        stand_in.fail_next("storage", "drop", after_bytes=2 * download.CHUNK_BYTES)
        stand_in.fail_next("storage", fault)
        assert download.download_competition(SLUG, tmp_path / "raw" / SLUG) is True
        assert stand_in.api_calls("DownloadDataFiles") == 2
        assert stand_in.settle().bytes_served == len(content)  # resumed: nothing fetched twice
    assert (tmp_path / "raw" / SLUG / "labels.csv").is_file()


def test_kit_download_resumes_after_a_400_expired_link(project, monkeypatch, tmp_path, waits):
    kaggle_env(monkeypatch, tmp_path, credentials="token-env")
    content = bundle()
    with KaggleStandIn(competitions={DOG_SLUG: content}) as stand_in:
        stand_in.fail_next("storage", "drop", after_bytes=download.CHUNK_BYTES)
        stand_in.fail_next("storage", "expired-400")
        result = invoke("download", "dog-breeds")
        assert result.exit_code == 0, result.output
        assert "asking Kaggle for a fresh one" in result.output
        assert stand_in.settle().bytes_served == len(content)
    assert (project / "data" / "raw" / "dog-breeds" / "labels.csv").is_file()


def test_a_link_refused_twice_stops_in_one_line(monkeypatch, tmp_path, waits):
    kaggle_env(monkeypatch, tmp_path, credentials="token-env")
    with KaggleStandIn(competitions={SLUG: bundle()}) as stand_in:
        stand_in.fail_next("storage", "expired-400").fail_next("storage", "expired-400")
        with pytest.raises(KitError) as caught:
            download.download_competition(SLUG, tmp_path / "raw" / SLUG)
    assert "expired" in caught.value.message and "ExpiredToken (HTTP 400)" not in caught.value.message
    assert stand_in.api_calls("DownloadDataFiles") == 2 and waits == []


def test_resume_uses_last_modified_when_storage_sends_no_etag(monkeypatch, tmp_path, waits):
    kaggle_env(monkeypatch, tmp_path, credentials="token-env")
    content = bundle()
    with KaggleStandIn(competitions={SLUG: content}, etag=False) as stand_in:
        stand_in.fail_next("storage", "drop", after_bytes=3 * download.CHUNK_BYTES)
        assert download.download_competition(SLUG, tmp_path / "raw" / SLUG) is True
        ranges = [request.range for request in stand_in.storage_gets(SLUG)]
        assert stand_in.settle().bytes_served == len(content)
    assert ranges == [None, f"bytes={3 * download.CHUNK_BYTES}-"]


def test_the_bundle_keeps_its_links_file_name(monkeypatch, tmp_path):
    """A competition whose download is one CSV (not a zip) lands as that CSV, not as a broken <slug>.zip."""
    kaggle_env(monkeypatch, tmp_path, credentials="token-env")
    with KaggleStandIn(competitions={SLUG: b"id,label\n1,cat\n"}, bundle_names={SLUG: "train.csv"}):
        assert download.download_competition(SLUG, tmp_path / "raw" / SLUG) is True
    assert (tmp_path / "raw" / SLUG / "train.csv").read_bytes() == b"id,label\n1,cat\n"
    assert not (tmp_path / "raw" / SLUG / f"{SLUG}.zip").exists()


def test_a_client_that_follows_the_redirect_itself_still_downloads(monkeypatch, tmp_path):
    kaggle_env(monkeypatch, tmp_path, credentials="token-env")
    monkeypatch.setattr(download, "no_redirects", lambda kaggle: None)  # as a kagglesdk that follows it
    with KaggleStandIn(competitions={SLUG: bundle()}):
        assert download.download_competition(SLUG, tmp_path / "raw" / SLUG) is True
    assert (tmp_path / "raw" / SLUG / "labels.csv").is_file()


# Private parts of kagglesdk: each behind one function, and the pinned client has them.


def test_the_pinned_client_has_every_private_part_the_kit_uses(monkeypatch, tmp_path):
    kaggle_env(monkeypatch, tmp_path, credentials="token-env")
    with KaggleStandIn():
        api = client.authenticated_api()
        with api.build_kaggle_client() as kaggle:
            download.no_redirects(kaggle)  # KaggleHttpClient._session
            assert client.private_part(kaggle.http_client(), "_session", requests.Session).max_redirects == 0


def test_a_missing_private_part_is_one_line_with_versions_and_pin(monkeypatch, tmp_path):
    kaggle_env(monkeypatch, tmp_path, credentials="token-env")
    from kagglesdk.kaggle_http_client import KaggleHttpClient

    with KaggleStandIn(competitions={SLUG: bundle()}):
        api = client.authenticated_api()
        monkeypatch.setattr(KaggleHttpClient, "_init_session", lambda self: None)  # a release without it
        with pytest.raises(KitError) as caught:
            download.signed_link(api, SLUG)
    message = caught.value.message
    assert "\n" not in message and "KaggleHttpClient._session" in message
    assert re.search(r"kaggle \d+\.\d+\.\d+, kagglesdk \d+\.\d+\.\d+", message)
    assert "pip install kaggle==2.2.5 kagglesdk==0.1.38" in message


# Paging that cannot truncate silently.


def submission_rows(count: int) -> list[dict]:
    return [{"ref": n, "date": "2024-01-01T00:00:00.000Z", "fileName": f"{n}.csv"} for n in range(count)]


def test_a_server_paging_by_page_number_lists_every_submission(monkeypatch, tmp_path):
    kaggle_env(monkeypatch, tmp_path, credentials="token-env")
    warned = []
    with KaggleStandIn(submissions={SLUG: submission_rows(45)}, page_mode="page-only"):
        names = [row["file_name"] for row in client.list_submissions(SLUG, warned.append)]
    assert names == [f"{n}.csv" for n in range(45)] and warned == []


def test_kit_ledger_lists_all_45_submissions_of_a_page_numbered_server(project, monkeypatch, tmp_path):
    kaggle_env(monkeypatch, tmp_path, credentials="token-env")
    rows = [{**row, "publicScore": "0.5"} for row in submission_rows(45)]
    with KaggleStandIn(submissions={DOG_SLUG: rows}, page_mode="page-only"):
        result = invoke("ledger", "dog-breeds")
    assert result.exit_code == 0, result.output
    assert result.output.count("(not in ledger)") == 45  # made elsewhere: every one listed, not 20


@pytest.mark.parametrize("mode", ["page-only", "stuck"])
def test_files_and_leaderboard_of_a_server_ignoring_tokens_say_so(monkeypatch, tmp_path, mode):
    kaggle_env(monkeypatch, tmp_path, credentials="token-env")
    members = {f"file-{n:02d}.csv": b"x" for n in range(30)}
    board = [{"teamId": n, "teamName": f"team {n}", "score": f"{n}"} for n in range(150)]
    warned = []
    with KaggleStandIn(competitions={SLUG: make_zip(members)}, leaderboards={SLUG: board}, page_mode=mode):
        listed = client.list_files(SLUG, warned.append)
        standing = client.leaderboard(SLUG, 120, warned.append)  # pages of 100
    teams = [row["team"] for row in standing.top]
    assert len(set(teams)) == len(teams)  # never a page counted twice
    assert len(listed) == 20 and len(warned) == 2 and all("may be incomplete" in line for line in warned)


# Credentials exactly as the client resolves them.


def test_username_in_kaggle_json_and_key_in_the_environment_are_merged(monkeypatch, tmp_path):
    home = kaggle_env(monkeypatch, tmp_path, credentials=False)
    (home.config_directory / "kaggle.json").write_text(json.dumps({"username": STANDIN_USERNAME}))
    (home.config_directory / "kaggle.json").chmod(0o600)
    monkeypatch.setenv("KAGGLE_KEY", STANDIN_KEY)
    with KaggleStandIn(competitions={SLUG: None}) as stand_in:
        api = client.authenticated_api()
        assert client.list_files(SLUG) == []
    assert "KAGGLE_KEY" in api.credentials.name and "username in kaggle.json" in api.credentials.name
    assert {request.auth for request in stand_in.requests} == {"Basic"}


def test_the_environment_overrides_kaggle_json_key_by_key(monkeypatch, tmp_path):
    home = kaggle_env(monkeypatch, tmp_path, credentials="kaggle-json")
    (home.config_directory / "kaggle.json").write_text(json.dumps({"username": "x", "key": "wrong-key"}))
    (home.config_directory / "kaggle.json").chmod(0o600)
    monkeypatch.setenv("KAGGLE_USERNAME", STANDIN_USERNAME)
    monkeypatch.setenv("KAGGLE_KEY", STANDIN_KEY)
    with KaggleStandIn(competitions={SLUG: None}):
        api = client.authenticated_api()
        assert client.list_files(SLUG) == []
    assert api.credentials.name == "KAGGLE_USERNAME/KAGGLE_KEY"


@pytest.mark.parametrize("where", ["KAGGLE_API_TOKEN", "access_token"])
def test_a_revoked_token_with_a_valid_legacy_key_says_what_the_client_will_send(monkeypatch, tmp_path, where):
    home = kaggle_env(monkeypatch, tmp_path, credentials="kaggle-json")
    if where == "KAGGLE_API_TOKEN":
        monkeypatch.setenv("KAGGLE_API_TOKEN", "KGAT_revoked00000000000000000000")
    else:
        (home.home / ".kaggle").mkdir(exist_ok=True)
        (home.home / ".kaggle" / "access_token").write_text("KGAT_revoked00000000000000000000\n")
    warned = []
    with KaggleStandIn(competitions={SLUG: None}), pytest.raises(KitError) as caught:
        client.list_files(SLUG, warned.append)
    message = caught.value.message
    assert "not active" in message and "keeps sending it" in message and "kaggle.json" in message
    assert "KGAT_revoked" not in message and not any("using kaggle.json" in line for line in warned)


def test_kaggle_api_v1_token_inside_a_kaggle_notebook(monkeypatch, tmp_path):
    kaggle_env(monkeypatch, tmp_path, credentials=False)
    token_file = tmp_path / "v1-token"
    token_file.write_text(STANDIN_TOKEN)
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Batch")
    monkeypatch.setenv("KAGGLE_DATA_PROXY_URL", "http://data-proxy.invalid")
    monkeypatch.setenv("KAGGLE_API_V1_TOKEN", str(token_file))
    with KaggleStandIn(competitions={SLUG: None}) as stand_in:
        api = client.authenticated_api()
        assert client.list_files(SLUG) == []
    assert api.credentials.name.startswith("KAGGLE_API_V1_TOKEN")
    assert {request.auth for request in stand_in.requests if request.path.endswith("ListDataFiles")} == {
        "Bearer"
    }


def test_readme_lists_the_credential_forms_in_the_clients_order():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("1. **Credentials") : readme.index("2. **Join the competition")]
    order = section[section.index("The kit asks the official client") :]
    names = ["KAGGLE_API_V1_TOKEN", "KAGGLE_API_TOKEN", "access_token", "KAGGLE_USERNAME", "kaggle.json"]
    positions = [order.index(name) for name in [*names, "credentials.json"]]
    assert positions == sorted(positions)
    assert "the environment overrides the file" in section
    for form in credentials.FORM_NAMES:  # the names the kit's messages use
        assert form.split(" ")[0].split("/")[-1] in section


# Code competitions: ask Kaggle before building anything; a kept output is submitted without a new run.


def notebook_run(project: Path):
    from test_kaggle_loop import fake_run, valid_breeds_frame

    config = fake_run(project, "dog-breeds", valid_breeds_frame())
    return project / "runs" / config.name / "20250101-000000-fake"


NOTEBOOK_SETTINGS = ["--set", "competition.submission=notebook", "--set", "notebook.poll_seconds=0.01"]
BUILT = ("StartBlobUpload", "CreateDataset", "CreateDatasetVersion", "SaveKernel", "CreateCodeSubmission")


@pytest.mark.parametrize(
    "refusal, expected",
    [
        ({"rules_not_accepted": {DOG_SLUG}}, RULES),
        ({"not_joined": {DOG_SLUG}}, "Join Competition"),
        ({"daily_limit": 0}, "no submissions left today"),
        ({"notebook_only": ()}, "takes submission files, not notebooks"),
    ],
    ids=["rules", "not-joined", "no-submission-left", "takes-files"],
)
def test_kit_notebook_submit_asks_kaggle_before_building_anything(
    project, monkeypatch, tmp_path, refusal, expected
):
    kaggle_env(monkeypatch, tmp_path, credentials="token-env")
    notebook_run(project)
    settings = {"notebook_only": {DOG_SLUG}, **refusal}
    with KaggleStandIn(competitions={DOG_SLUG: None}, **settings) as stand_in:
        line = error_line(invoke("notebook", "dog-breeds", "--submit", "-m", "x", *NOTEBOOK_SETTINGS))
    assert expected in line and "nothing was built" in line or "nothing uploaded" in line
    assert not set(stand_in.api_methods()) & set(BUILT)
    assert notebooks(stand_in).datasets == {} and notebooks(stand_in).kernels == {}


def completed_kernel(stand_in, output: bytes) -> None:
    """A notebook version that ran to completion on Kaggle (an earlier `kit notebook`)."""
    state = notebooks(stand_in)
    request = {"enableInternet": False, "competitionDataSources": [DOG_SLUG]}
    state.kernels[KERNEL] = [KernelVersion(1, request, {})]
    state.kernel_polls[(KERNEL, 1)] = 99
    state.outputs = {"submission.csv": output}


def kept_output(run_dir: Path) -> bytes:
    from test_kaggle_loop import valid_breeds_frame

    output = valid_breeds_frame().to_csv(index=False).encode()
    (run_dir / "kaggle" / "output").mkdir(parents=True)
    (run_dir / "kaggle" / "output" / "submission.csv").write_bytes(output)
    kernels.record_pushed(run_dir / "kaggle", kernels.Pushed(KERNEL, 1, ""))
    return output


def test_a_failed_code_submission_names_the_fix_and_the_kept_output(project, monkeypatch, tmp_path):
    kaggle_env(monkeypatch, tmp_path, credentials="token-env")
    run_dir = notebook_run(project)
    output = kept_output(run_dir)
    with KaggleStandIn(competitions={DOG_SLUG: None}, notebook_only={DOG_SLUG}) as stand_in:
        completed_kernel(stand_in, output)
        stand_in.fail_next("CreateCodeSubmission", "503")
        refused = invoke("notebook", "dog-breeds", "--submit-only", "-m", "kept", *NOTEBOOK_SETTINGS)
        line = error_line(refused)
        assert "--submit-only" in line and str(run_dir / "kaggle" / "output") in line
        submitted = invoke("notebook", "dog-breeds", "--submit-only", "-m", "kept", *NOTEBOOK_SETTINGS)
        assert submitted.exit_code == 0, submitted.output
        assert not {"SaveKernel", "CreateDataset", "StartBlobUpload"} & set(stand_in.api_methods())
        (code_submission,) = notebooks(stand_in).code_submissions
    assert code_submission.kernel == KERNEL and code_submission.version == 1
    assert "kept" in (project / "submissions" / "ledger.csv").read_text()


def test_a_code_submission_refused_for_rules_gives_the_rules_url(monkeypatch, tmp_path):
    kaggle_env(monkeypatch, tmp_path, credentials="token-env")
    with KaggleStandIn(competitions={DOG_SLUG: None}, notebook_only={DOG_SLUG}) as stand_in:
        completed_kernel(stand_in, b"id\n")
        stand_in.rules_not_accepted.add(DOG_SLUG)  # after `kit notebook` checked: the rules changed
        api = client.authenticated_api()
        with pytest.raises(KitError) as caught:
            kernels.submit_code(api, DOG_SLUG, kernels.Pushed(KERNEL, 1, ""), "submission.csv", "m", "KEPT")
    assert RULES in caught.value.message and caught.value.message.endswith("; KEPT")


def test_submit_only_without_a_completed_notebook_is_one_line(project, monkeypatch, tmp_path):
    kaggle_env(monkeypatch, tmp_path, credentials="token-env")
    notebook_run(project)
    with KaggleStandIn(competitions={DOG_SLUG: None}, notebook_only={DOG_SLUG}) as stand_in:
        line = error_line(invoke("notebook", "dog-breeds", "--submit-only", *NOTEBOOK_SETTINGS))
    assert "pushed.json missing" in line and "--submit" in line
    assert not set(stand_in.api_methods()) & set(BUILT)


def test_delete_old_versions_is_passed_to_kaggle(monkeypatch, tmp_path):
    kaggle_env(monkeypatch, tmp_path, credentials="token-env")
    folder = tmp_path / "package"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    dataset_id = f"{STANDIN_USERNAME}/kit-dog-breeds"
    (folder / "dataset-metadata.json").write_text(
        json.dumps({"id": dataset_id, "title": "kit dog breeds", "licenses": [{"name": "CC0-1.0"}]})
    )
    with KaggleStandIn() as stand_in:
        api = client.authenticated_api()
        for keep in (True, True, False):
            kernels.publish_dataset(api, folder, dataset_id, "run", delete_old_versions=not keep)
        versions = notebooks(stand_in).datasets[dataset_id].versions
    assert len(versions) == 1  # the third upload deleted the two before it
