"""The official `kaggle` client, used the way today's Kaggle needs: authenticated exactly as the client
does it (credentials.py asks it which forms it finds), Kaggle's errors with the kit's fix (answers.py),
files, submission limits, submit, submissions and the leaderboard.

Every failure the user can fix surfaces as a one-line `kit.errors.KitError`. The client's verbose mode
(which prints the Authorization header) is never switched on. Where the kit needs a part of kagglesdk that
is not public, it reaches it through `private_part`, which names the installed versions if it is gone.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import importlib.metadata
import io
import pathlib
import sys
from collections.abc import Callable
from typing import NamedTuple

import requests
from tqdm import tqdm

from kit.errors import KitError
from kit.kaggle import answers
from kit.kaggle import credentials as credential_forms
from kit.kaggle.answers import PAGE_SIZE, describe, paged, status_of, with_retries

MINIMUM_CLIENT = "2.2.4"  # below it: no COMPETITION_SUBMIT_UPLOAD_FAILED_MESSAGE, `import kaggle` may exit(1)
CLIENT_REQUIREMENT = "kaggle>=2.2.4,<3"
TESTED_WITH = "kaggle==2.2.5 kagglesdk==0.1.38"  # the versions the kit's tests run the client at


def check_client_version() -> None:
    """Refuse, in one line, a missing client or one outside kaggle>=2.2.4,<3, before importing it."""
    from packaging.version import Version

    try:
        installed = importlib.metadata.version("kaggle")
    except importlib.metadata.PackageNotFoundError:
        raise KitError(
            f"the official kaggle client is not installed: pip install '{CLIENT_REQUIREMENT}'"
        ) from None
    if not Version(MINIMUM_CLIENT) <= Version(installed) < Version("3"):
        raise KitError(
            f"kaggle {installed} is installed; the kit needs {CLIENT_REQUIREMENT}: "
            f"pip install -U '{CLIENT_REQUIREMENT}'"
        )


@functools.cache
def _api_class():
    """Import the official client lazily and return a KaggleApi that honours KAGGLE_API_ENVIRONMENT.

    Importing anything under `kaggle` runs `kaggle/__init__.py`, which authenticates and prints a help
    banner when credentials are missing, so the import is deferred to first use and its output swallowed.
    In production (KAGGLE_API_ENVIRONMENT unset or PROD) the client's own build_kaggle_client is used as it
    is; it knows no other environment, so only for those (kagglesdk's TEST: http://localhost:7777) is the
    client built with kagglesdk's get_env().
    """
    check_client_version()
    with contextlib.redirect_stdout(io.StringIO()):
        from kaggle.api.kaggle_api_extended import KaggleApi
    from kagglesdk.kaggle_client import KaggleClient
    from kagglesdk.kaggle_env import KaggleEnv, get_env

    class EnvironmentAwareKaggleApi(KaggleApi):
        credentials: credential_forms.Credentials | None = None  # the form in use, for messages
        args: list[str] = []  # never the client's --verbose, which prints the Authorization header

        def build_kaggle_client(self):
            if get_env() == KaggleEnv.PROD:
                return super().build_kaggle_client()
            return KaggleClient(
                env=get_env(),
                username=self.config_values.get(self.CONFIG_NAME_USER),
                password=self.config_values.get(self.CONFIG_NAME_KEY),
                api_token=self.config_values.get(self.CONFIG_NAME_TOKEN),
                response_processor=self.get_response_processor(),
            )

    return EnvironmentAwareKaggleApi


def installed_versions() -> str:
    return ", ".join(f"{name} {importlib.metadata.version(name)}" for name in ("kaggle", "kagglesdk"))


def private_part(owner, name: str, expected_type: type):
    """`owner.<name>`, a part of kagglesdk that is not public, or a one-line error naming the installed
    versions and the pin to install where a release renamed or removed it."""
    value = getattr(owner, name, None)
    if not isinstance(value, expected_type):
        raise KitError(
            f"the installed kaggle client ({installed_versions()}) has no {type(owner).__name__}.{name}, "
            f"which the kit relies on: pip install {TESTED_WITH} (the versions the kit is tested with)"
        )
    return value


def _auth_method(name: str) -> str:
    """How the client records an authentication method in config_values (str of its AuthMethod)."""
    from kaggle.api.kaggle_api_extended import AuthMethod

    return str(AuthMethod[name])


def missing_credentials_message(malformed: str | None = None) -> str:
    fix = (
        f"create an API token at {credential_forms.SETTINGS_URL}, then export KAGGLE_API_TOKEN=<token> "
        "or save it in ~/.kaggle/access_token (chmod 600)"
    )
    if malformed:
        return (
            f"no usable Kaggle credentials: {malformed}, so the kaggle client skips it: write it as "
            '{"username": "<user>", "key": "<key>"}, or ' + fix
        )
    return f"no Kaggle credentials found (the kit looks in {credential_forms.IN_ORDER}, in that order): {fix}"


def refused_credentials_message(used: credential_forms.Credentials | None, kaggle_says: str) -> str:
    """The 401 message: the form used (never its value), Kaggle's words, the fix, every form in order."""
    where = used.name if used is not None else "your credentials"
    fix = (
        f"create a new API token at {credential_forms.SETTINGS_URL} and put it in KAGGLE_API_TOKEN or "
        "~/.kaggle/access_token"
    )
    if used is not None and used.token_as_key:
        holder = "KAGGLE_KEY" if "KAGGLE_KEY" in used.name else f"the key in {used.file}"
        fix = (
            f"{holder} holds an API token "
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


def translate_errors(slug: str | None, api=None):
    """answers.translate_errors, with a 401 naming the credentials `api` used."""
    return answers.translate_errors(
        slug, functools.partial(refused_credentials_message, getattr(api, "credentials", None))
    )


def error_message(error: requests.HTTPError, slug: str | None, api=None) -> str:
    refused = functools.partial(refused_credentials_message, getattr(api, "credentials", None))
    return answers.error_message(error, slug, refused)


def authenticated_api(warn: Callable[[str], None] = lambda line: None):
    """An authenticated official KaggleApi, or a one-line ClickException saying how to log in.

    The forms present are the ones the client itself finds (credentials.found asks it). `warn` receives
    one-line warnings: a credentials file readable by others, a kaggle.json the client cannot read.
    `api.credentials` names the form in use.
    """
    api = _api_class()()
    config_directory = credential_forms.config_directory()
    api.config_dir, api.config = str(config_directory), str(config_directory / api.config_file)
    present = credential_forms.found(api)
    malformed = credential_forms.malformed_config(api)
    if credential_forms.breaks_the_client(api):
        raise KitError(
            f"{malformed}, which stops the kaggle client: write it as "
            '{"username": "<user>", "key": "<key>"}, or remove it and use an API token (KAGGLE_API_TOKEN)'
        )
    if not present:
        raise KitError(missing_credentials_message(malformed))
    if malformed:
        _warn_once(warn, f"warning: {malformed}; the kaggle client skips it")
    for form in present:
        if credential_forms.readable_by_others(form):
            _warn_once(warn, f"warning: {form.file} is readable by other users: chmod 600 {form.file}")
    api.credentials = present[0]
    try:
        # authenticate() prints a multi-line banner and calls exit(1) when nothing is usable.
        with translate_errors(None, api), contextlib.redirect_stdout(io.StringIO()):
            api.authenticate()
    except SystemExit:
        raise KitError(
            f"Kaggle says the API token in {present[0].name} is not active (expired or revoked): "
            f"create a new one at {credential_forms.SETTINGS_URL} "
            f"(the kit looks in {credential_forms.IN_ORDER}, in that order)"
        ) from None
    method = api.config_values.get(api.CONFIG_NAME_AUTH_METHOD)
    if present[0].token and method != _auth_method("ACCESS_TOKEN") and len(present) > 1:
        # The client moved on from an inactive token, but kagglesdk reads the token again for every
        # request (KaggleHttpClient sends it whenever it is given none), so the fallback would be refused.
        raise KitError(
            f"Kaggle says the API token in {present[0].name} is not active (expired or revoked), and the "
            f"kaggle client keeps sending it instead of {present[1].name}: create a new token at "
            f"{credential_forms.SETTINGS_URL} and put it in {present[0].name}, or remove it there"
        )
    if method == _auth_method("OAUTH"):
        api.credentials = present[-1]
    return api


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


def _stderr(line: str) -> None:
    tqdm.write(line, file=sys.stderr)


def list_files(slug: str, warn: Callable[[str], None] = _stderr) -> list[DataFile]:
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
        return paged(page, f"{slug}'s files", warn)


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
            raise KitError(f"no submissions left for {slug}: its lifetime cap is reached; nothing uploaded")
        raise KitError(
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
        raise KitError(f"submission file not found: {csv_path}")
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
                raise KitError(
                    f"the upload to {slug} was cut off ({describe(error)}): run `kit ledger` to see whether "
                    "Kaggle received it before submitting again"
                ) from None
            raise
    if response is None or response.message == api.COMPETITION_SUBMIT_UPLOAD_FAILED_MESSAGE:
        raise KitError(f"uploading {csv_path.name} to {slug} failed; retry the submission")


def _text_or_none(value) -> str | None:
    """Empty strings mean "no value" in the API's JSON; give callers None instead."""
    return None if value in (None, "") else str(value)


def list_submissions(slug: str, warn: Callable[[str], None] = _stderr) -> list[dict]:
    """The competition's submissions, newest first, as dicts of strings (or None); paged by pageToken, or by
    page number where the server ignores the token."""
    from kagglesdk.competitions.types.competition_api_service import ApiListSubmissionsRequest

    api = authenticated_api(warn)

    def ask(token: str, number: int):
        request = ApiListSubmissionsRequest()
        request.competition_name, request.page_size, request.page_token = slug, PAGE_SIZE, token
        if not token:
            request.page = number  # the first page is asked for by number too, as the official client does
        with api.build_kaggle_client() as kaggle:
            response = with_retries(lambda: _service(kaggle).list_submissions(request), warn)
        return [row for row in response.submissions if row is not None], response.next_page_token or ""

    with translate_errors(slug, api):
        submissions = paged(
            lambda token: ask(token, 1),
            f"your submissions to {slug}",
            warn,
            fetch_page=lambda number: ask("", number)[0],
        )
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


def leaderboard(slug: str, top: int, warn: Callable[[str], None] = _stderr) -> Standing:
    """The public leaderboard's first `top` rows and your team's rank (GetCompetition's userRank)."""
    from kagglesdk.competitions.types.competition_api_service import (
        ApiGetCompetitionRequest,
        ApiGetLeaderboardRequest,
    )

    api = authenticated_api(warn)
    with translate_errors(slug, api), api.build_kaggle_client() as kaggle:

        def page(token: str):
            request = ApiGetLeaderboardRequest()
            request.competition_name, request.page_size = slug, min(top, 100)
            request.page_token = token or None
            response = with_retries(functools.partial(_service(kaggle).get_leaderboard, request), warn)
            return list(response.submissions), response.next_page_token or ""

        entries = paged(page, f"{slug}'s leaderboard", warn, limit=top)
        request = ApiGetCompetitionRequest()
        request.competition_name = slug
        competition = with_retries(lambda: _service(kaggle).get_competition(request), warn)
    rows = [
        {
            "rank": rank,
            "team": entry.team_name or "",
            "score": entry.score or "",
            "date": entry.submission_date.strftime("%Y-%m-%d") if entry.submission_date else "",
        }
        for rank, entry in enumerate(entries, 1)
    ]
    # kagglesdk reads an absent userRank as 0 (`self._user_rank or 0`); ranks start at 1: 0 is no public score
    return Standing(rows, competition.user_rank or None, competition.team_count)
