"""The stand-in answers the official client (kaggle 2.2.5 / kagglesdk) the way production does.

These drive the client directly, not the kit, so the kit's tests rest on a stand-in that is checked
against the client's own request and response code.
"""

import contextlib
import datetime
import io

import pytest
import requests
from kaggle_standin import (  # kaggle_environment: every test in PROD and TEST
    DAILY_LIMIT_MESSAGE,
    PARTICIPATE_MESSAGE,
    STANDIN_USERNAME,
    KaggleStandIn,
    kaggle_env,
    kaggle_environment,  # noqa: F401 (a fixture)
    make_zip,
)

pytestmark = pytest.mark.usefixtures("kaggle_environment")

SLUG = "dog-breeds"
BUNDLE = make_zip(
    {"labels.csv": b"id,breed\n" + b"a,pug\n" * 5000, "train.zip": make_zip({"train/a.jpg": b"x"})}
)


def client():
    from kagglesdk import KaggleClient
    from kagglesdk.kaggle_env import get_env

    return KaggleClient(env=get_env())


def official_api():
    """The official KaggleApi, asked to use the TEST endpoint (it hard-codes production otherwise)."""
    with contextlib.redirect_stdout(io.StringIO()):
        from kaggle.api.kaggle_api_extended import KaggleApi
    from kagglesdk import KaggleClient
    from kagglesdk.kaggle_env import get_env

    class TestApi(KaggleApi):
        def build_kaggle_client(self):
            return KaggleClient(
                env=get_env(),
                username=self.config_values.get(self.CONFIG_NAME_USER),
                password=self.config_values.get(self.CONFIG_NAME_KEY),
                api_token=self.config_values.get(self.CONFIG_NAME_TOKEN),
            )

    return TestApi()


def download_request(slug=SLUG):
    from kagglesdk.competitions.types.competition_api_service import ApiDownloadDataFilesRequest

    request = ApiDownloadDataFilesRequest()
    request.competition_name = slug
    return request


@pytest.mark.parametrize("form", ["token-env", "token-file"])
def test_token_is_introspected_then_sent_as_bearer(monkeypatch, tmp_path, form):
    kaggle_env(monkeypatch, tmp_path, credentials=form)
    with KaggleStandIn(competitions={SLUG: BUNDLE}) as stand_in:
        api = official_api()
        api.authenticate()
        assert api.config_values["username"] == STANDIN_USERNAME  # the name came from introspection
        assert stand_in.api_calls("IntrospectToken") == 1
        with api.build_kaggle_client() as kaggle:
            response = kaggle.competitions.competition_api_client.download_data_files(download_request())
            assert response.content == BUNDLE
    api_request = next(r for r in stand_in.requests if r.path.endswith("/DownloadDataFiles"))
    assert api_request.auth == "Bearer"
    (storage_request,) = stand_in.storage_gets(SLUG)
    assert storage_request.auth is None  # the signed link on the other host never sees the token
    assert stand_in.bytes_served == len(BUNDLE)


def test_unknown_token_is_inactive_and_wrong_basic_key_is_401(monkeypatch, tmp_path):
    kaggle_env(monkeypatch, tmp_path, credentials="key-env")
    monkeypatch.setenv("KAGGLE_API_TOKEN", "KGAT_not-a-token-the-server-issued")
    with KaggleStandIn(competitions={SLUG: BUNDLE}, key="another-key"):
        api = official_api()
        api.authenticate()  # the inactive token is skipped; the legacy key is used instead
        assert api.config_values["auth_method"].endswith("LEGACY_API_KEY")
        with pytest.raises(requests.HTTPError) as caught, api.build_kaggle_client() as kaggle:
            kaggle.competitions.competition_api_client.download_data_files(download_request())
    assert caught.value.response.status_code == 401 and str(caught.value) == "Unauthenticated"


def test_kaggle_messages_reach_the_client_exception(monkeypatch, tmp_path):
    from kagglesdk.competitions.types.competition_api_service import ApiCreateSubmissionRequest

    kaggle_env(monkeypatch, tmp_path, credentials="token-env")
    today = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")}
    with (
        KaggleStandIn(competitions={SLUG: BUNDLE}, not_joined={"closed"}, submissions={"closed": []}),
        client() as kaggle,
    ):
        with pytest.raises(requests.HTTPError) as caught:
            kaggle.competitions.competition_api_client.download_data_files(download_request("closed"))
        assert caught.value.response.status_code == 403 and str(caught.value) == PARTICIPATE_MESSAGE
    with (
        KaggleStandIn(submissions={SLUG: [today]}, daily_limit=1),
        client() as kaggle,
        pytest.raises(requests.HTTPError) as caught,
    ):
        request = ApiCreateSubmissionRequest()
        request.competition_name = SLUG
        kaggle.competitions.competition_api_client.create_submission(request)
    assert caught.value.response.status_code == 400
    assert str(caught.value).startswith(DAILY_LIMIT_MESSAGE.split("(")[0])


def test_official_download_resumes_with_ranges_after_a_dropped_connection(monkeypatch, tmp_path):
    kaggle_env(monkeypatch, tmp_path, credentials="token-env")
    outfile = tmp_path / "bundle.zip"
    chunk = 1 << 20  # the client writes 1 MiB chunks: a chunk cut short is fetched again
    bundle = make_zip({"big.bin": bytes(range(256)) * (6 * chunk // 256 // 4)})  # 1.5 MiB
    with KaggleStandIn(competitions={SLUG: bundle}) as stand_in:
        stand_in.fail_next("storage", "drop", after_bytes=chunk + 1000)
        monkeypatch.setattr("time.sleep", lambda seconds: None)  # the client's own backoff (once started)
        api = official_api()
        api.authenticate()
        with api.build_kaggle_client() as kaggle:
            response = kaggle.competitions.competition_api_client.download_data_files(download_request())
            api.download_file(response, str(outfile), kaggle.http_client(), quiet=True, resume=True)
    assert outfile.read_bytes() == bundle
    first, second = stand_in.storage_gets(SLUG)
    assert first.range is None and second.range == f"bytes={chunk}-"
    assert stand_in.bytes_served == len(bundle) + 1000  # only the cut chunk's 1000 bytes were sent twice


def test_expired_link_is_403_with_storage_body_and_the_client_error_names_the_signed_url(
    monkeypatch, tmp_path
):
    kaggle_env(monkeypatch, tmp_path, credentials="token-env")
    with KaggleStandIn(competitions={SLUG: BUNDLE}, link_lifetime=0) as stand_in, client() as kaggle:
        with pytest.raises(requests.HTTPError) as caught:
            kaggle.competitions.competition_api_client.download_data_files(download_request())
    assert caught.value.response.status_code == 403 and b"ExpiredToken" in caught.value.response.content
    assert stand_in.bytes_served == 0
    (signature,) = stand_in.signatures
    assert signature in str(caught.value)  # why the kit must never print the client's error as is


@pytest.mark.parametrize("mode, pages", [("normal", 3), ("ignore-page", 3), ("stuck", None)])
def test_submissions_page_by_token(monkeypatch, tmp_path, mode, pages):
    from kagglesdk.competitions.types.competition_api_service import ApiListSubmissionsRequest

    kaggle_env(monkeypatch, tmp_path, credentials="token-env")
    rows = [{"ref": n, "date": "2024-01-01T00:00:00.000Z", "fileName": f"{n}.csv"} for n in range(45)]
    seen, token = [], ""
    with KaggleStandIn(submissions={SLUG: rows}, page_mode=mode), client() as kaggle:
        for _ in range(5):
            request = ApiListSubmissionsRequest()
            request.competition_name = SLUG
            request.page_size = 20
            request.page_token = token
            response = kaggle.competitions.competition_api_client.list_submissions(request)
            seen.append([submission.file_name for submission in response.submissions])
            token = response.next_page_token
            if not token:
                break
        # A client paging by `page` gets page 2 only where the server honours it.
        request = ApiListSubmissionsRequest()
        request.competition_name, request.page_size, request.page = SLUG, 20, 2
        by_page = (
            kaggle.competitions.competition_api_client.list_submissions(request).submissions[0].file_name
        )
    if pages is None:
        assert len(seen) == 5 and all(page == seen[0] for page in seen) and token == "stuck-token"
    else:
        assert len(seen) == pages and [name for page in seen for name in page] == [
            f"{n}.csv" for n in range(45)
        ]
    assert by_page == ("20.csv" if mode == "normal" else "0.csv")


def test_429_carries_retry_after(monkeypatch, tmp_path):
    kaggle_env(monkeypatch, tmp_path, credentials="token-env")
    with KaggleStandIn(competitions={SLUG: BUNDLE}) as stand_in, client() as kaggle:
        stand_in.fail_next("DownloadDataFiles", "429", retry_after="7")
        with pytest.raises(requests.HTTPError) as caught:
            kaggle.competitions.competition_api_client.download_data_files(download_request())
        assert caught.value.response.status_code == 429
        assert caught.value.response.headers["Retry-After"] == "7"
        assert (
            kaggle.competitions.competition_api_client.download_data_files(download_request()).content
            == BUNDLE
        )
