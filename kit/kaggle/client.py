"""The official `kaggle` client, used the way today's Kaggle needs: every credential form, Kaggle's own
error messages with the kit's fix, bounded retries, token paging, submission limits and the leaderboard.

Every failure the user can fix surfaces as a one-line `click.ClickException`. No message ever holds a
credential, nor a signed link (the client's own HTTPError text names the URL it fetched, signature and
all, so the kit builds its messages from the response's JSON `message` instead). The client's verbose
mode (which prints the Authorization header) is never switched on.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import importlib.metadata
import io
import pathlib
import re
import time
from collections.abc import Callable, Iterator
from typing import NamedTuple, TypeVar

import click
import requests

from kit.kaggle import credentials as credential_forms

MINIMUM_CLIENT = "2.2.4"  # below it: no COMPETITION_SUBMIT_UPLOAD_FAILED_MESSAGE, `import kaggle` may exit(1)
CLIENT_REQUIREMENT = "kaggle>=2.2.4,<3"
PAGE_SIZE = 20  # the official client's own default, so every server honours it
MAXIMUM_PAGES = 50
RETRY_ATTEMPTS = 5  # tries in all for a call Kaggle answers 429/5xx, or a dropped connection
RETRY_FIRST_WAIT = 2.0  # seconds; doubles each try
RETRY_LONGEST_WAIT = 60.0  # seconds: the cap on a wait, Retry-After included
RULES_URL = "https://www.kaggle.com/competitions/{slug}/rules"
COMPETITION_URL = "https://www.kaggle.com/competitions/{slug}"
PHONE_URL = "https://www.kaggle.com/settings"

T = TypeVar("T")


def check_client_version() -> None:
    """Refuse, in one line, a missing client or one outside kaggle>=2.2.4,<3, before importing it."""
    from packaging.version import Version

    try:
        installed = importlib.metadata.version("kaggle")
    except importlib.metadata.PackageNotFoundError:
        raise click.ClickException(
            f"the official kaggle client is not installed: pip install '{CLIENT_REQUIREMENT}'"
        ) from None
    if not Version(MINIMUM_CLIENT) <= Version(installed) < Version("3"):
        raise click.ClickException(
            f"kaggle {installed} is installed; the kit needs {CLIENT_REQUIREMENT}: "
            f"pip install -U '{CLIENT_REQUIREMENT}'"
        )


@functools.cache
def _api_class():
    """Import the official client lazily and return a KaggleApi that honours KAGGLE_API_ENVIRONMENT.

    Importing anything under `kaggle` runs `kaggle/__init__.py`, which authenticates and prints a help
    banner when credentials are missing, so the import is deferred to first use and its output swallowed.
    KaggleApi.build_kaggle_client hard-codes the production endpoint unless `--local` style flags are in
    its argv; kagglesdk's own `get_env()` reads KAGGLE_API_ENVIRONMENT (TEST means http://localhost:7777),
    so the subclass asks it instead. With the variable unset that is production, exactly as before.
    """
    check_client_version()
    with contextlib.redirect_stdout(io.StringIO()):
        from kaggle.api.kaggle_api_extended import KaggleApi
    from kagglesdk.kaggle_client import KaggleClient
    from kagglesdk.kaggle_env import get_env

    class EnvironmentAwareKaggleApi(KaggleApi):
        credentials: credential_forms.Credentials | None = None  # the form in use, for messages

        def build_kaggle_client(self):
            return KaggleClient(
                env=get_env(),
                verbose=False,  # verbose dumps request headers, which carry the key
                username=self.config_values.get(self.CONFIG_NAME_USER),
                password=self.config_values.get(self.CONFIG_NAME_KEY),
                api_token=self.config_values.get(self.CONFIG_NAME_TOKEN),
                response_processor=self.get_response_processor(),
            )

    return EnvironmentAwareKaggleApi


def missing_credentials_message() -> str:
    return (
        f"no Kaggle credentials found (the kit looks in {credential_forms.IN_ORDER}, in that order): "
        f"create an API token at {credential_forms.SETTINGS_URL}, then export KAGGLE_API_TOKEN=<token> "
        "or save "
        "it in ~/.kaggle/access_token (chmod 600)"
    )


def refused_credentials_message(used: credential_forms.Credentials | None, kaggle_says: str) -> str:
    """The 401 message: the form used (never its value), Kaggle's words, the fix, every form in order."""
    where = used.name if used is not None else "your credentials"
    fix = (
        f"create a new API token at {credential_forms.SETTINGS_URL} and put it in KAGGLE_API_TOKEN or "
        "~/.kaggle/access_token"
    )
    if used is not None and used.token_as_key:
        fix = (
            f"{'KAGGLE_KEY' if used.file is None else 'the key in ' + str(used.file)} holds an API token "
            f"({credential_forms.TOKEN_PREFIX}...), "
            "which Kaggle refuses as a legacy key: put it in KAGGLE_API_TOKEN or ~/.kaggle/access_token "
            "instead"
        )
    return (
        f"Kaggle refused the credentials from {where} (HTTP 401: {kaggle_says}): {fix} "
        f"(the kit looks in {credential_forms.IN_ORDER}, in that order)"
    )


_warned: set[str] = set()  # one warning per file and process, however many calls authenticate


def _warn_once(warn: Callable[[str], None], line: str) -> None:
    if line not in _warned:
        _warned.add(line)
        warn(line)


def authenticated_api(warn: Callable[[str], None] = lambda line: None):
    """An authenticated official KaggleApi, or a one-line ClickException saying how to log in.

    `warn` receives one-line warnings: a credentials file readable by others, or a token Kaggle says is
    not active while the legacy key is used instead. `api.credentials` names the form in use.
    """
    api = _api_class()()
    config_directory = credential_forms.config_directory()
    api.config_dir, api.config = str(config_directory), str(config_directory / api.config_file)
    present = credential_forms.found()
    if not present:
        raise click.ClickException(missing_credentials_message())
    for form in present:
        if credential_forms.readable_by_others(form):
            _warn_once(warn, f"warning: {form.file} is readable by other users: chmod 600 {form.file}")
    api.credentials = present[0]
    try:
        # authenticate() prints a multi-line banner and calls exit(1) when nothing is usable.
        with translate_errors(None, api), contextlib.redirect_stdout(io.StringIO()):
            api.authenticate()
    except SystemExit:
        raise click.ClickException(
            f"Kaggle says the API token in {present[0].name} is not active (expired or revoked): "
            f"create a new one at {credential_forms.SETTINGS_URL} "
            f"(the kit looks in {credential_forms.IN_ORDER}, in that order)"
        ) from None
    method = str(api.config_values.get(api.CONFIG_NAME_AUTH_METHOD, ""))
    legacy = [form for form in present if not form.token]
    if method.endswith("LEGACY_API_KEY") and legacy:
        api.credentials = legacy[0]
        if present[0].token:
            _warn_once(
                warn,
                f"warning: Kaggle says the API token in {present[0].name} is not active; "
                f"using {legacy[0].name}",
            )
    elif method.endswith("OAUTH"):
        api.credentials = present[-1]
    return api


def kaggle_message(error: requests.HTTPError) -> str:
    """Kaggle's own words for an error: the JSON `message`, else the storage error's code, else the status.

    Never str(error) for a non-JSON answer: requests puts the URL (a signed link) in it.
    """
    response = error.response
    if response is None:
        return "no answer"
    try:
        payload = response.json()
        if isinstance(payload, dict) and payload.get("message"):
            return str(payload["message"]).strip()
    except ValueError:
        pass
    code = re.search(r"<Code>([^<]{1,80})</Code>", response.text or "")
    return code.group(1) if code else (response.reason or f"HTTP {response.status_code}")


def _from_storage(error: requests.HTTPError) -> bool:
    """The answer came from the storage host of a signed link, not from Kaggle's API."""
    response = error.response
    return response is not None and "/api/v1/" not in (response.url or "")


def daily_limit_fix(message: str) -> str:
    allowance = re.search(r"allowance \((\d+)\)", message)
    left = f"{allowance.group(1)} left tomorrow" if allowance else "more tomorrow"
    return f"daily limit reached; {left} (the day turns at 00:00 UTC)"


def error_message(error: requests.HTTPError, slug: str | None, api=None) -> str:
    """One line: what Kaggle said, then the kit's fix."""
    status = error.response.status_code if error.response is not None else None
    said = kaggle_message(error)
    lowered = said.lower()
    if status == 401:
        return refused_credentials_message(getattr(api, "credentials", None), said)
    if status == 403 and _from_storage(error):
        if "expired" in lowered:
            return (
                "the signed download link expired (HTTP 403: ExpiredToken): run the command again; it resumes"
            )
        return f"the download host refused the link (HTTP 403: {said}): run the command again; it resumes"
    prefix = f"Kaggle: {said} (HTTP {status})"
    if status == 403 and "rule" in lowered and slug:
        return f"{prefix}: accept the rules at {RULES_URL.format(slug=slug)}, then retry"
    if status == 403 and "participate" in lowered and slug:
        return (
            f"{prefix}: join the competition at {COMPETITION_URL.format(slug=slug)} (Join Competition) and "
            f"verify your phone number at {PHONE_URL}, then retry"
        )
    if status == 400 and ("notebook" in lowered or "kernel" in lowered):
        return f"{prefix}: this competition takes notebook submissions only; nothing was submitted"
    if status == 400 and ("allowance" in lowered or "daily" in lowered or "limit" in lowered):
        return f"{prefix}: {daily_limit_fix(said)}"
    if status == 404 and slug:
        return (
            f"{prefix}: unknown competition '{slug}': check the slug in the competition's URL, "
            f"{COMPETITION_URL.format(slug='<slug>')}"
        )
    if status is not None and (status == 429 or status >= 500):
        return f"{prefix}: Kaggle is busy; the kit retried {RETRY_ATTEMPTS} times, try again later"
    return prefix


@contextlib.contextmanager
def translate_errors(slug: str | None, api=None) -> Iterator[None]:
    """Turn the client's requests exceptions into one-line ClickExceptions that name the fix."""
    try:
        yield
    except requests.HTTPError as error:
        raise click.ClickException(error_message(error, slug, api)) from None
    except (requests.ConnectionError, requests.Timeout):
        raise click.ClickException(
            "cannot reach Kaggle (no network?): check your connection, proxy or firewall, then retry"
        ) from None


def status_of(error: Exception) -> int | None:
    """The HTTP status an error carries, None for a dropped connection or anything else."""
    response = getattr(error, "response", None)
    return response.status_code if isinstance(error, requests.HTTPError) and response is not None else None


def describe(error: Exception) -> str:
    """A few words on an error, with no URL in them."""
    status = status_of(error)
    if status is not None:
        return f"HTTP {status}: {kaggle_message(error)}"
    return "the connection dropped" if isinstance(error, requests.RequestException) else type(error).__name__


def retryable(error: Exception) -> bool:
    """429, 5xx and dropped connections are worth another try; anything else is an answer."""
    status = status_of(error)
    if status is not None:
        return status == 429 or status >= 500
    return isinstance(
        error, (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)
    )


def wait_before_retry(error: Exception, attempt: int) -> float:
    """Seconds to wait before try `attempt + 1`: Retry-After when Kaggle sends it, else doubling; capped."""
    response = getattr(error, "response", None)
    retry_after = response.headers.get("Retry-After") if response is not None else None
    if retry_after is not None:
        try:
            return min(max(float(retry_after), 0.0), RETRY_LONGEST_WAIT)
        except ValueError:
            pass
    return min(RETRY_FIRST_WAIT * 2 ** (attempt - 1), RETRY_LONGEST_WAIT)


def pause(seconds: float) -> None:
    """Wait between tries; every retry wait in kit.kaggle goes through here (tests record them)."""
    time.sleep(seconds)


def with_retries(
    call: Callable[[], T],
    on_retry: Callable[[str], None] = lambda line: None,
    retry_on: Callable[[Exception], bool] = retryable,
) -> T:
    """call(), tried up to RETRY_ATTEMPTS times while `retry_on(error)` (default: 429, 5xx, dropped
    connections); the waits follow Retry-After or double, each capped at RETRY_LONGEST_WAIT."""
    for attempt in range(1, RETRY_ATTEMPTS + 1):
        try:
            return call()
        except Exception as error:
            if not retry_on(error) or attempt == RETRY_ATTEMPTS:
                raise
            seconds = wait_before_retry(error, attempt)
            on_retry(
                f"Kaggle: {describe(error)}; retrying in {seconds:.0f} s ({attempt}/{RETRY_ATTEMPTS - 1})"
            )
            pause(seconds)
    raise AssertionError("unreachable")


def paged(fetch: Callable[[str], tuple[list, str]], key: Callable[[object], object] = repr) -> list:
    """Every row of a listing paged by pageToken (`fetch(token) -> (rows, next token)`).

    Stops when the next token is empty, when a page comes back that was seen already (a server that
    ignores the token) and after MAXIMUM_PAGES; `key(row)` tells rows apart.
    """
    rows, token, seen_pages = [], "", set()
    for _ in range(MAXIMUM_PAGES):
        page, token = fetch(token)
        identity = tuple(key(row) for row in page)
        if identity in seen_pages:
            break
        seen_pages.add(identity)
        rows.extend(page)
        if not token:
            break
    return rows


# Competition calls.


class DataFile(NamedTuple):
    name: str
    size: int  # bytes


class Limits(NamedTuple):
    left_today: int
    used_today: int
    limited_by_total: bool


class Standing(NamedTuple):
    """The top of the public leaderboard and where your team stands (rank None: no public score yet)."""

    top: list[dict]
    your_rank: int | None
    teams: int


def _service(kaggle):
    return kaggle.competitions.competition_api_client


def list_files(slug: str, warn=lambda line: None) -> list[DataFile]:
    """The competition's files and their sizes, every page."""
    from kagglesdk.competitions.types.competition_api_service import ApiListDataFilesRequest

    api = authenticated_api(warn)

    def page(token: str):
        request = ApiListDataFilesRequest()
        request.competition_name, request.page_size, request.page_token = slug, PAGE_SIZE, token or None
        with api.build_kaggle_client() as kaggle:
            response = with_retries(lambda: _service(kaggle).list_data_files(request), warn)
        return [
            DataFile(item.name, item.total_bytes or 0) for item in response.files
        ], response.next_page_token or ""

    with translate_errors(slug, api):
        return paged(page)


def submission_limits(api, slug: str) -> Limits | None:
    """Submissions left today, or None where the client cannot ask (older client, endpoint missing)."""
    asking = getattr(api, "competition_get_submission_limits", None)
    if asking is None:
        return None
    with translate_errors(slug, api):
        try:
            limits = with_retries(lambda: asking(slug))
        except requests.HTTPError as error:
            if status_of(error) == 404:  # a server without the endpoint: the upload's answer will tell
                return None
            raise
    return Limits(limits.num_allowed_now, limits.num_today, bool(limits.limited_by_total))


def hours_to_utc_midnight(now: datetime.datetime | None = None) -> float:
    now = now or datetime.datetime.now(datetime.timezone.utc)
    midnight = (now + datetime.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - now).total_seconds() / 3600


def require_submissions_left(api, slug: str) -> Limits | None:
    """Refuse in one line when no submission is left today; else return the limits (None: unknown)."""
    limits = submission_limits(api, slug)
    if limits is not None and limits.left_today <= 0:
        if limits.limited_by_total:
            raise click.ClickException(
                f"no submissions left for {slug}: its lifetime cap is reached; nothing uploaded"
            )
        raise click.ClickException(
            f"no submissions left today for {slug} ({limits.used_today} used; more in "
            f"{hours_to_utc_midnight():.1f} h, at 00:00 UTC); nothing uploaded"
        )
    return limits


def submit(slug: str, csv_path: pathlib.Path, message: str, api=None) -> None:
    """Upload csv_path as a submission to the competition, described by message.

    Only a 429 is retried here: Kaggle refused the call before doing anything. A 5xx or a dropped
    connection may come after the submission was created, so it is reported, not repeated.
    """
    csv_path = pathlib.Path(csv_path)
    if not csv_path.is_file():
        raise click.ClickException(f"submission file not found: {csv_path}")
    api = api or authenticated_api()

    def upload():
        # The upload step prints its own errors and reports failure only through the response message.
        with contextlib.redirect_stdout(io.StringIO()):
            return api.competition_submit(str(csv_path), message, slug, quiet=True)

    with translate_errors(slug, api):
        try:
            response = with_retries(upload, retry_on=lambda error: status_of(error) == 429)
        except Exception as error:
            if status_of(error) is None or status_of(error) >= 500:
                raise click.ClickException(
                    f"the upload to {slug} was cut off ({describe(error)}): run `kit ledger` to see whether "
                    "Kaggle received it before submitting again"
                ) from None
            raise
    if response is None or response.message == api.COMPETITION_SUBMIT_UPLOAD_FAILED_MESSAGE:
        raise click.ClickException(f"uploading {csv_path.name} to {slug} failed; retry the submission")


def _text_or_none(value) -> str | None:
    """Empty strings mean "no value" in the API's JSON; give callers None instead."""
    return None if value in (None, "") else str(value)


def list_submissions(slug: str) -> list[dict]:
    """The competition's submissions, newest first, as dicts of strings (or None); paged by pageToken."""
    from kagglesdk.competitions.types.competition_api_service import ApiListSubmissionsRequest

    api = authenticated_api()

    def page(token: str):
        request = ApiListSubmissionsRequest()
        request.competition_name, request.page_size = slug, PAGE_SIZE
        request.page_token = token
        if not token:
            request.page = 1  # as the official client sends its first page
        with api.build_kaggle_client() as kaggle:
            response = with_retries(lambda: _service(kaggle).list_submissions(request))
        return [row for row in response.submissions if row is not None], response.next_page_token or ""

    with translate_errors(slug, api):
        submissions = paged(page)
    return [
        {
            "date": submission.date.isoformat() if submission.date else None,
            "file_name": _text_or_none(submission.file_name),
            "description": _text_or_none(submission.description),
            "status": submission.status.name.lower() if submission.status is not None else None,
            "public_score": _text_or_none(submission.public_score),
            "private_score": _text_or_none(submission.private_score),
        }
        for submission in submissions
    ]


def leaderboard(slug: str, top: int, warn=lambda line: None) -> Standing:
    """The public leaderboard's first `top` rows and your team's rank (GetCompetition's userRank)."""
    from kagglesdk.competitions.types.competition_api_service import (
        ApiGetCompetitionRequest,
        ApiGetLeaderboardRequest,
    )

    api = authenticated_api(warn)
    rows: list[dict] = []
    with translate_errors(slug, api), api.build_kaggle_client() as kaggle:
        token, seen = "", set()
        while len(rows) < top:
            request = ApiGetLeaderboardRequest()
            request.competition_name, request.page_size = slug, min(top - len(rows), 100)
            request.page_token = token or None
            response = with_retries(functools.partial(_service(kaggle).get_leaderboard, request), warn)
            for entry in response.submissions:
                rows.append(
                    {
                        "rank": len(rows) + 1,
                        "team": entry.team_name or "",
                        "score": entry.score or "",
                        "date": entry.submission_date.strftime("%Y-%m-%d") if entry.submission_date else "",
                    }
                )
            token = response.next_page_token or ""
            if not token or token in seen or not response.submissions:
                break
            seen.add(token)
        request = ApiGetCompetitionRequest()
        request.competition_name = slug
        competition = with_retries(lambda: _service(kaggle).get_competition(request), warn)
    return Standing(rows[:top], competition.user_rank, competition.team_count)
