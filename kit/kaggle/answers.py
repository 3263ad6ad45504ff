"""What Kaggle answered, read the same way by every Kaggle call of the kit: its own words as one line with the
kit's fix, which answers are worth another try (and how long to wait), and listings paged to the end.

An answer comes either from Kaggle's API or from the storage host of a signed link; the two are told apart
by the host the request went to (the API's is kagglesdk's endpoint for the environment in use), never by
the shape of the path, which differs between production (`/v1/...`) and kagglesdk's other environments
(`/api/v1/...`). No message ever holds a credential, nor a signed link (requests' own HTTPError text names
the URL it fetched, signature and all, so messages are built from the answer's JSON `message` instead).
"""

from __future__ import annotations

import contextlib
import re
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import TypeVar

import requests

from kit.errors import KitError

PAGE_SIZE = 20  # the official client's own default, so every server honours it
MAXIMUM_PAGES = 50
RETRY_ATTEMPTS = 5  # tries in all for a call Kaggle answers 429/5xx, or a connection dropped mid-way
RETRY_FIRST_WAIT = 2.0  # seconds; doubles each try
RETRY_LONGEST_WAIT = 60.0  # seconds: the cap on a wait, Retry-After included
RULES_URL = "https://www.kaggle.com/competitions/{slug}/rules"
COMPETITION_URL = "https://www.kaggle.com/competitions/{slug}"
PHONE_URL = "https://www.kaggle.com/settings"
NO_NETWORK = "cannot reach Kaggle (no network?): check your connection, proxy or firewall, then retry"

T = TypeVar("T")


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


def api_host() -> str:
    """host:port of Kaggle's API as kagglesdk calls it (api.kaggle.com in production)."""
    from kagglesdk.kaggle_env import get_endpoint, get_env

    return urllib.parse.urlsplit(get_endpoint(get_env())).netloc


def from_storage(error: requests.HTTPError) -> bool:
    """The answer came from another host than Kaggle's API: the storage host of a signed link."""
    response = error.response
    if response is None or not response.url:
        return False
    return urllib.parse.urlsplit(response.url).netloc != api_host()


def daily_limit_fix(message: str) -> str:
    allowance = re.search(r"allowance \((\d+)\)", message)
    left = f"{allowance.group(1)} left tomorrow" if allowance else "more tomorrow"
    return f"daily limit reached; {left} (the day turns at 00:00 UTC)"


def storage_message(error: requests.HTTPError) -> str:
    """A refused signed link, in one line (the kit has already asked for a fresh one by then)."""
    status = error.response.status_code if error.response is not None else None
    said = kaggle_message(error)
    if "expired" in said.lower():
        return f"the signed download link expired (HTTP {status}: {said}): run the command again; it resumes"
    return f"the download host refused the link (HTTP {status}: {said}): run the command again; it resumes"


def error_message(error: requests.HTTPError, slug: str | None, refused_credentials=None) -> str:
    """One line: what Kaggle said, then the kit's fix. `refused_credentials(said)` words a 401."""
    status = error.response.status_code if error.response is not None else None
    said = kaggle_message(error)
    lowered = said.lower()
    if from_storage(error) and status in (400, 401, 403):
        return storage_message(error)
    if status == 401 and refused_credentials is not None:
        return refused_credentials(said)
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
def translate_errors(slug: str | None, refused_credentials=None) -> Iterator[None]:
    """Turn the client's requests exceptions into one-line KitErrors that name the fix."""
    try:
        yield
    except requests.HTTPError as error:
        raise KitError(error_message(error, slug, refused_credentials)) from None
    except (requests.ConnectionError, requests.Timeout):
        raise KitError(NO_NETWORK) from None


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


def never_connected(error: Exception) -> bool:
    """No connection could be opened at all (no network, no route, a name that does not resolve): unlike a
    connection dropped mid-way, waiting a minute rarely helps, so it is reported at once."""
    import urllib3.exceptions

    if isinstance(error, requests.exceptions.ConnectTimeout):
        return True
    if not isinstance(error, requests.ConnectionError) or not error.args:
        return False
    reason = getattr(error.args[0], "reason", error.args[0])
    return isinstance(reason, urllib3.exceptions.NewConnectionError)


def retryable(error: Exception) -> bool:
    """429, 5xx and dropped connections are worth another try; anything else is an answer."""
    status = status_of(error)
    if status is not None:
        return status == 429 or status >= 500
    if never_connected(error):
        return False
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


def paged(
    fetch: Callable[[str], tuple[list, str]],
    what: str,
    warn: Callable[[str], None],
    key: Callable[[object], object] = repr,
    fetch_page: Callable[[int], list] | None = None,
    limit: int | None = None,
) -> list:
    """Every row of a listing paged by pageToken (`fetch(token) -> (rows, next token)`), up to `limit`.

    A page seen already means the server ignored the token: the listing is then asked for again by page
    number (`fetch_page(number) -> rows`, where the call has one) or, where it has none, `warn` says in one
    line that the listing of `what` may be incomplete. So does reaching MAXIMUM_PAGES.
    """
    rows, token, seen = [], "", set()
    for _ in range(MAXIMUM_PAGES):
        page, token = fetch(token)
        identity = tuple(key(row) for row in page)
        if page and identity in seen:
            if fetch_page is not None:
                return _by_page_number(fetch_page, what, warn, key, limit)
            warn(f"warning: Kaggle answered the same page twice: the list of {what} may be incomplete")
            return rows
        seen.add(identity)
        rows.extend(page)
        if not token or not page or (limit is not None and len(rows) >= limit):
            return rows[:limit]
    warn(f"warning: {what}: stopped after {MAXIMUM_PAGES} pages; the list may be incomplete")
    return rows[:limit]


def _by_page_number(fetch_page, what: str, warn, key, limit: int | None) -> list:
    rows, seen = [], set()
    for number in range(1, MAXIMUM_PAGES + 1):
        page = fetch_page(number)
        identity = tuple(key(row) for row in page)
        if page and identity in seen:
            warn(f"warning: Kaggle answered the same page twice: the list of {what} may be incomplete")
            return rows[:limit]
        seen.add(identity)
        rows.extend(page)
        if len(page) < PAGE_SIZE or (limit is not None and len(rows) >= limit):
            return rows[:limit]
    warn(f"warning: {what}: stopped after {MAXIMUM_PAGES} pages; the list may be incomplete")
    return rows[:limit]
