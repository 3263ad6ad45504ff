"""A local stand-in for Kaggle, built from the official client's own request/response code (kaggle 2.2.5,
kagglesdk 0.1.x), so the kit is tested end to end through that client against what production does.

Two servers, like production:

- The API (KAGGLE_API_ENVIRONMENT=TEST makes kagglesdk call http://localhost:7777): every call is
  `POST /api/v1/<service>/<Method>` with a camelCase JSON body (kagglesdk's `KaggleHttpClient.call`).
  Errors are JSON `{"code": N, "message": "..."}`: the client raises `requests.HTTPError(message)`, so the
  message is Kaggle's own text (`KaggleHttpClient._prepare_response`).
- Storage, on a second local port and another host name (127.0.0.1): downloads are a 302 from the API to
  a signed link there (`HttpRedirect`), uploads are PUT to a `createUrl` there. Storage ignores the
  Authorization header (requests drops it on a redirect to another host; the stand-in records whether any
  arrived), answers ranged requests with 206, and answers an expired link with 403 and GCS's XML body.

Authentication, as `KaggleApi.authenticate` does it: an API token (`KGAT_...`, from KAGGLE_API_TOKEN or
~/.kaggle/access_token) is first checked with `security.OAuthService/IntrospectToken` (body `{"token"}`,
answer `{"active", "username", ...}`; an unknown token is `{"active": false}`), then sent as
`Authorization: Bearer <token>`; the legacy username/key (kaggle.json, KAGGLE_USERNAME/KAGGLE_KEY) is
sent as HTTP Basic. Anything else is 401 `Unauthenticated`.

Competition calls implemented (competitions.CompetitionApiService): DownloadDataFiles, DownloadDataFile,
ListDataFiles, GetCompetition, StartSubmissionUpload, CreateSubmission, ListSubmissions, GetLeaderboard,
GetSubmissionLimits. Paging is by `pageToken`/`nextPageToken` as on Kaggle; `page_mode` makes the server
ignore `page` ("ignore-page"), or answer the first page forever with the same token ("stuck").

Faults are queued with `fail_next(target, kind, ...)` and consumed in order by the next matching request:
target is "storage" or an API method name ("DownloadDataFiles") or "api" (any API call); kinds are
"429" (with Retry-After), "500"/"503" (JSON body), "drop" (storage: headers and `after_bytes` of the body,
then the connection is closed), "expired" (storage: 403, GCS's ExpiredToken body).

Extending it (datasets, kernels, blobs): write a function `handler(stand_in, call) -> dict` and register it
with `@api("datasets.DatasetApiService", "CreateDataset")`; raise `KaggleError(status, message)` for an
error. `stand_in.signed_url(key)` serves `stand_in.blobs[key]` from storage; `stand_in.start_upload(meta)`
returns (token, createUrl) and the PUT lands in `stand_in.uploaded[token]`.

Usage from any test (tests/ is on sys.path when pytest collects it):

    from kaggle_standin import KaggleStandIn, kaggle_env

    def test_something(monkeypatch, tmp_path):
        kaggle_env(monkeypatch, tmp_path, credentials="token-env")
        with KaggleStandIn(competitions={"dog-breeds": zip_bytes}) as stand_in:
            ...  # call kit code or the `kit` CLI; then inspect stand_in.uploads, .requests, .bytes_served
"""

from __future__ import annotations

import base64
import datetime
import email.utils
import fcntl
import hashlib
import http.server
import io
import json
import socket
import tempfile
import threading
import time
import types
import urllib.parse
import uuid
import zipfile
from typing import NamedTuple

STANDIN_USERNAME = "kit-test-user"
STANDIN_KEY = "kit-test-key-0123456789abcdef"  # legacy key; distinctive, so tests can assert it never leaks
STANDIN_TOKEN = "KGAT_5f0c2d9e8b7a41c3a6e2f0d4b9c81e77"  # an API token as the settings page issues them
STANDIN_PORT = 7777  # hard-coded in kagglesdk.kaggle_env for KaggleEnv.TEST
STORAGE_HOST = "127.0.0.1"  # another host name than the API's "localhost": requests drops auth on redirect
API_PREFIX = "/api/v1/"
DEFAULT_DAILY_LIMIT = 5  # Kaggle's usual maxDailySubmissions

# Kaggle's own texts (from what the production API answers; see issue 11).
RULES_MESSAGE = "You must accept this competition's rules before you'll be able to download files."
PARTICIPATE_MESSAGE = "Permission 'competitions.participate' was denied"
NOTEBOOK_ONLY_MESSAGE = "Submission not allowed: This competition only accepts submissions from Notebooks."
DAILY_LIMIT_MESSAGE = (
    "Submission not allowed:  Your team has used its daily Submission allowance ({limit}) today, "
    "please try again tomorrow UTC ({hours:.1f} hours from now)."
)
UNAUTHENTICATED_MESSAGE = "Unauthenticated"
EXPIRED_LINK_BODY = (
    "<?xml version='1.0' encoding='UTF-8'?><Error><Code>ExpiredToken</Code><Message>Invalid argument."
    "</Message><Details>The provided token has expired. "
    "Request signature expired at: {expired}</Details></Error>"
)


class Upload(NamedTuple):
    """One submission the stand-in received: what was uploaded and the message it came with."""

    slug: str
    file_name: str
    content: bytes
    message: str | None


class Request(NamedTuple):
    """One request either server received. `auth` is "Bearer", "Basic" or None; `range` the Range header."""

    server: str  # "api" or "storage"
    method: str
    path: str  # without the query string (which carries the signature)
    auth: str | None
    range: str | None


class Fault(NamedTuple):
    target: str  # "storage", "api", or an API method name
    kind: str  # "429", "500", "503", "drop", "expired"
    retry_after: str
    after_bytes: int | None


class KaggleError(Exception):
    """Raised by a handler: answered as Kaggle does, JSON {"code": status, "message": message}."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class Call(NamedTuple):
    """What a handler gets: the JSON body, the authenticated user (None for anonymous calls) and the
    competition slug the body names ("" when none)."""

    body: dict
    user: str | None
    slug: str


API_HANDLERS: dict[str, tuple] = {}  # "service/Method" -> (handler, needs_auth)


def api(service: str, method: str, needs_auth: bool = True):
    """Register `handler(stand_in, call) -> dict` for POST /api/v1/<service>/<method>."""

    def register(handler):
        API_HANDLERS[f"{service}/{method}"] = (handler, needs_auth)
        return handler

    return register


def kaggle_env(monkeypatch, tmp_path, credentials=True):
    """Point the official client at the stand-in, with fake credentials and no real ~/.kaggle.

    HOME moves into tmp_path because kagglesdk reads ~/.kaggle/access_token, ~/.kaggle/kaggle.json and
    ~/.kaggle/credentials.json there. credentials picks the form:
      True or "key-env": KAGGLE_USERNAME/KAGGLE_KEY (legacy); "kaggle-json": the legacy file in
      KAGGLE_CONFIG_DIR; "token-env": KAGGLE_API_TOKEN; "token-file": ~/.kaggle/access_token;
      False or None: no credentials at all.
    Returns the fake username, key, token, home and config directory.
    """
    home = tmp_path / "kaggle-home"
    config_directory = tmp_path / "kaggle-config"
    home.mkdir(exist_ok=True)
    config_directory.mkdir(exist_ok=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(config_directory))
    monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "TEST")
    for variable in ("NO_PROXY", "no_proxy"):  # a registry proxy must not swallow localhost
        monkeypatch.setenv(variable, "localhost,127.0.0.1")
    for variable in (
        "KAGGLE_API_TOKEN",
        "KAGGLE_USERNAME",
        "KAGGLE_KEY",
        "KAGGLE_KERNEL_RUN_TYPE",
        "KAGGLE_API_V1_TOKEN",
        "VERBOSE",
        "VERBOSE_OUTPUT",
    ):
        monkeypatch.delenv(variable, raising=False)
    if credentials is True or credentials == "key-env":
        monkeypatch.setenv("KAGGLE_USERNAME", STANDIN_USERNAME)
        monkeypatch.setenv("KAGGLE_KEY", STANDIN_KEY)
    elif credentials == "kaggle-json":
        config_file = config_directory / "kaggle.json"
        config_file.write_text(json.dumps({"username": STANDIN_USERNAME, "key": STANDIN_KEY}))
        config_file.chmod(0o600)
    elif credentials == "token-env":
        monkeypatch.setenv("KAGGLE_API_TOKEN", STANDIN_TOKEN)
    elif credentials == "token-file":
        (home / ".kaggle").mkdir(exist_ok=True)
        token_file = home / ".kaggle" / "access_token"
        token_file.write_text(STANDIN_TOKEN + "\n")
        token_file.chmod(0o600)
    elif credentials not in (False, None):
        raise ValueError(f"unknown credentials form {credentials!r}")
    return types.SimpleNamespace(
        username=STANDIN_USERNAME,
        key=STANDIN_KEY,
        token=STANDIN_TOKEN,
        home=home,
        config_directory=config_directory,
    )


def secrets() -> list[str]:
    """Every secret the stand-in's credentials hold, and the Basic header that encodes the key."""
    basic = base64.b64encode(f"{STANDIN_USERNAME}:{STANDIN_KEY}".encode()).decode()
    return [STANDIN_KEY, STANDIN_TOKEN, basic]


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _timestamp(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _strip_empty(row: dict) -> dict:
    """The SDK's JSON reader cannot take null for a typed field; Kaggle omits empty fields instead."""
    return {name: value for name, value in row.items() if value is not None}


class _Handler(http.server.BaseHTTPRequestHandler):
    """Shared by both servers; `self.server.role` says which one this is."""

    def log_message(self, format, *arguments):  # keep test output clean
        pass

    def handle(self):
        with self.server.stand_in._lock:
            self.server.stand_in._active += 1
        try:
            super().handle()
        finally:
            with self.server.stand_in._lock:
                self.server.stand_in._active -= 1

    @property
    def stand_in(self) -> KaggleStandIn:
        return self.server.stand_in

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
                if size == 0:
                    return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, body: bytes = b"", content_type: str = "application/json", headers=None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status: int, payload: dict, headers=None):
        self._send(status, json.dumps(payload).encode(), headers=headers)

    def _record(self) -> None:
        authorization = self.headers.get("Authorization")
        self.stand_in._record(
            Request(
                self.server.role,
                self.command,
                urllib.parse.urlsplit(self.path).path,
                authorization.split(" ")[0] if authorization else None,
                self.headers.get("Range"),
            )
        )

    def _user(self) -> str | None:
        """The user the Authorization header names, or None when it names nobody the stand-in knows."""
        scheme, _, value = (self.headers.get("Authorization") or "").partition(" ")
        if scheme == "Bearer":
            return self.stand_in.tokens.get(value)
        if scheme == "Basic":
            try:
                username, _, key = base64.b64decode(value).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return None
            return username if self.stand_in.keys.get(username) == key else None
        return None

    # The API server.

    def do_POST(self):
        self._record()
        if self.server.role != "api":
            return self._send_json(404, {"code": 404, "message": "Not found"})
        name = self.path.split("?")[0].removeprefix(API_PREFIX)
        request = json.loads(self._body() or b"{}")
        fault = self.stand_in._take_fault(("api", name.rpartition("/")[2]))
        if fault is not None:
            return self._send_api_fault(fault)
        handler, needs_auth = API_HANDLERS.get(name, (None, False))
        user = self._user()
        if handler is None:
            return self._send_json(404, {"code": 404, "message": f"stand-in does not implement {name}"})
        if needs_auth and user is None:
            return self._send_json(401, {"code": 401, "message": UNAUTHENTICATED_MESSAGE})
        try:
            payload = handler(self.stand_in, Call(request, user, request.get("competitionName", "")))
        except KaggleError as error:
            return self._send_json(error.status, {"code": error.status, "message": error.message})
        if isinstance(payload, tuple):  # (status, headers): a redirect
            status, headers = payload
            return self._send(status, b"", "text/plain", headers)
        self._send_json(200, payload)

    def _send_api_fault(self, fault: Fault):
        status = int(fault.kind)
        headers = {"Retry-After": fault.retry_after} if status == 429 else None
        messages = {429: "Too many requests", 500: "Internal error", 503: "Service unavailable"}
        self._send_json(status, {"code": status, "message": messages.get(status, "error")}, headers)

    # The storage server.

    def do_GET(self):
        self._record()
        if self.server.role != "storage":
            return self._send_json(404, {"code": 404, "message": "Not found"})
        parts = urllib.parse.urlsplit(self.path)
        key = urllib.parse.unquote(parts.path.removeprefix("/storage/"))
        query = urllib.parse.parse_qs(parts.query)
        signature = (query.get("X-Goog-Signature") or [""])[0]
        issued = self.stand_in._signatures.get(signature)
        if issued is None or issued[0] != key or key not in self.stand_in.blobs:
            return self._send(
                403,
                b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>SignatureDoesNotMatch</Code></Error>",
                "application/xml",
            )
        fault = self.stand_in._take_fault(("storage",))
        expired = time.time() > issued[1]
        if expired or (fault is not None and fault.kind == "expired"):
            body = EXPIRED_LINK_BODY.format(expired=email.utils.formatdate(issued[1], usegmt=True)).encode()
            return self._send(403, body, "application/xml")
        if fault is not None and fault.kind in ("429", "500", "503"):
            headers = {"Retry-After": fault.retry_after} if fault.kind == "429" else None
            return self._send(
                int(fault.kind), b"<Error><Code>Backoff</Code></Error>", "application/xml", headers
            )
        content = self.stand_in.blobs[key]
        etag = '"' + hashlib.md5(content).hexdigest() + '"'
        headers = {
            "Accept-Ranges": "bytes",
            "ETag": etag,
            "Last-Modified": email.utils.formatdate(self.stand_in.created, usegmt=True),
        }
        start, status = 0, 200
        wanted = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        if wanted and (if_range is None or if_range == etag):
            first = wanted.removeprefix("bytes=").split("-")[0]
            start = int(first or 0)
            if start >= len(content):
                return self._send(416, b"", "application/xml", {"Content-Range": f"bytes */{len(content)}"})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(content) - 1}/{len(content)}"
        body = content[start:]
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if fault is not None and fault.kind == "drop":
            sent = body[: fault.after_bytes if fault.after_bytes is not None else len(body) // 2]
            self.wfile.write(sent)
            self.wfile.flush()
            self.stand_in._count_bytes(len(sent))
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)  # the peer sees the transfer cut mid-body
            return
        self.wfile.write(body)
        self.stand_in._count_bytes(len(body))

    def do_PUT(self):
        self._record()
        token = urllib.parse.urlsplit(self.path).path.removeprefix("/upload/")
        if self.server.role != "storage" or token not in self.stand_in._pending_uploads:
            self._body()
            return self._send_json(404, {"code": 404, "message": "Upload expired"})
        content = self._body()
        if self.stand_in.failing_uploads:  # storage rejecting the file: the client gives up on non-503
            return self._send_json(500, {"code": 500, "message": "Storage unavailable"})
        self.stand_in.uploaded[token] = content
        self._send_json(200, {})


class _Server(http.server.ThreadingHTTPServer):
    allow_reuse_address = True  # a stand-in stopped a moment ago leaves its port in TIME_WAIT
    daemon_threads = True


class KaggleStandIn:
    """Context manager running the stand-in: the API on localhost:7777, storage on 127.0.0.1:<free port>.

    competitions: {slug: zip bytes of the whole bundle (or None for a competition without data)}; its
        members are the competition's files (ListDataFiles, DownloadDataFile).
    submissions: {slug: [rows in the API's JSON shape, newest first]}, e.g.
        {"date": "2024-05-01T12:00:00.000Z", "fileName": "a.csv", "description": "first",
         "status": "COMPLETE", "publicScore": "0.91", "privateScore": "0.90"}
    leaderboards: {slug: [{"teamId", "teamName", "submissionDate", "score"} ...]} best first;
        `team_name` is the user's own team there.
    rules_not_accepted: slugs answered 403 with Kaggle's rules message (default: "rules-not-accepted").
    not_joined: slugs answered 403 "Permission 'competitions.participate' was denied".
    notebook_only: slugs whose CreateSubmission is refused (400): code competitions.
    daily_limit: submissions a day (an int, or {slug: int}); today's rows count against it.
    page_mode: "normal" (pageToken, else page), "ignore-page" (pageToken only), "stuck" (always the first
        page, with the same non-empty nextPageToken).
    link_lifetime: seconds a signed storage link stays valid.
    failing_uploads: answer the file upload (PUT) with HTTP 500, as a broken storage backend would.
    Recorded: `.uploads` (list of Upload), `.requests` (list of Request), `.bytes_served` (storage body
    bytes actually written), `.signatures` (every signature handed out, to check none is ever printed).

    Port 7777 is fixed by kagglesdk, so concurrent test runs on one machine take turns via a file lock.
    """

    def __init__(
        self,
        competitions=None,
        submissions=None,
        leaderboards=None,
        rules_not_accepted=("rules-not-accepted",),
        not_joined=(),
        notebook_only=(),
        daily_limit=DEFAULT_DAILY_LIMIT,
        page_mode="normal",
        link_lifetime=3600.0,
        failing_uploads=False,
        username=STANDIN_USERNAME,
        key=STANDIN_KEY,
        token=STANDIN_TOKEN,
        team_name="kit-test-team",
        port=STANDIN_PORT,
        lock_timeout=120.0,
    ):
        if page_mode not in ("normal", "ignore-page", "stuck"):
            raise ValueError(f"unknown page_mode {page_mode!r}")
        self.competitions = dict(competitions or {})
        self.submissions = {slug: list(rows) for slug, rows in (submissions or {}).items()}
        self.leaderboards = {slug: list(rows) for slug, rows in (leaderboards or {}).items()}
        self.rules_not_accepted = set(rules_not_accepted)
        self.not_joined = set(not_joined)
        self.notebook_only = set(notebook_only)
        self.daily_limit = daily_limit
        self.page_mode = page_mode
        self.link_lifetime = link_lifetime
        self.failing_uploads = failing_uploads
        self.username, self.team_name, self.port = username, team_name, port
        self.keys = {username: key}  # legacy username -> key (HTTP Basic)
        self.tokens = {token: username}  # API token -> username (Bearer, introspection)
        self.url = f"http://localhost:{port}"
        self.storage_url = ""  # set by start()
        self.created = time.time()  # Last-Modified of every blob
        self.blobs: dict[str, bytes] = {}  # storage key -> bytes, served through signed links
        self.uploaded: dict[str, bytes] = {}  # upload token -> bytes PUT to its createUrl
        self.uploads: list[Upload] = []
        self.requests: list[Request] = []
        self.bytes_served = 0
        self.signatures: list[str] = []
        self._signatures: dict[str, tuple[str, float]] = {}  # signature -> (key, expiry epoch seconds)
        self._pending_uploads: dict[str, dict] = {}
        self._faults: list[Fault] = []
        self._active = 0  # requests being answered right now
        self._lock_timeout = lock_timeout
        self._lock = threading.Lock()
        self._servers: list[_Server] = []
        self._threads: list[threading.Thread] = []
        self._lock_file = None
        for slug, bundle in self.competitions.items():
            if bundle is not None:
                self.blobs[f"competitions/{slug}/{slug}.zip"] = bundle
                for name, content in _members(bundle).items():
                    self.blobs[f"competitions/{slug}/files/{name}"] = content

    # Used by handlers (and by extensions for datasets, kernels, blobs).

    def signed_url(self, key: str) -> str:
        """A signed storage link to blobs[key], valid for link_lifetime seconds; a query string like GCS's."""
        signature = uuid.uuid4().hex + uuid.uuid4().hex
        expiry = time.time() + self.link_lifetime
        with self._lock:
            self._signatures[signature] = (key, expiry)
            self.signatures.append(signature)
        query = urllib.parse.urlencode(
            {
                "X-Goog-Algorithm": "GOOG4-RSA-SHA256",
                "X-Goog-Expires": str(int(self.link_lifetime)),
                "X-Goog-Signature": signature,
            }
        )
        return f"{self.storage_url}/storage/{urllib.parse.quote(key)}?{query}"

    def start_upload(self, metadata: dict) -> tuple[str, str]:
        """A new upload: (token, createUrl on storage); the PUT's bytes land in `uploaded[token]`."""
        token = uuid.uuid4().hex
        with self._lock:
            self._pending_uploads[token] = dict(metadata)
        return token, f"{self.storage_url}/upload/{token}"

    def fail_next(self, target: str, kind: str, retry_after: str = "1", after_bytes: int | None = None):
        """Queue a fault for the next request matching target ("storage", "api" or an API method name)."""
        if kind not in ("429", "500", "503", "drop", "expired"):
            raise ValueError(f"unknown fault {kind!r}")
        with self._lock:
            self._faults.append(Fault(target, kind, retry_after, after_bytes))
        return self

    def _take_fault(self, targets: tuple[str, ...]) -> Fault | None:
        with self._lock:
            for index, fault in enumerate(self._faults):
                if fault.target in targets:
                    return self._faults.pop(index)
        return None

    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def settle(self, timeout: float = 10.0) -> KaggleStandIn:
        """Wait until no request is being answered, so counters such as bytes_served are final (a server
        thread may still be writing a body the client stopped reading)."""
        deadline = time.monotonic() + timeout
        while self._active and time.monotonic() < deadline:
            time.sleep(0.01)
        return self

    def _count_bytes(self, count: int) -> None:
        with self._lock:
            self.bytes_served += count

    def storage_gets(self, slug: str | None = None) -> list[Request]:
        """GETs that reached storage (for one competition's files when slug is given)."""
        prefix = "/storage/competitions/" + (f"{slug}/" if slug else "")
        return [
            r
            for r in self.requests
            if r.server == "storage" and r.method == "GET" and r.path.startswith(prefix)
        ]

    def download_count(self, slug: str) -> int:
        """How many times the competition's bundle itself was fetched from storage."""
        return sum(1 for r in self.storage_gets(slug) if r.path.endswith(f"/{slug}.zip"))

    def api_calls(self, method: str) -> int:
        return sum(1 for r in self.requests if r.server == "api" and r.path.endswith("/" + method))

    def daily_limit_of(self, slug: str) -> int:
        if isinstance(self.daily_limit, dict):
            return self.daily_limit.get(slug, DEFAULT_DAILY_LIMIT)
        return self.daily_limit

    def submitted_today(self, slug: str) -> int:
        today = _now().strftime("%Y-%m-%d")
        return sum(1 for row in self.submissions.get(slug, []) if str(row.get("date", "")).startswith(today))

    def check_competition(self, slug: str, participating: bool = True) -> None:
        """Kaggle's answers for a competition the user may not use: 404 unknown, 403 rules or not joined."""
        if slug not in self.competitions and slug not in self.submissions and slug not in self.leaderboards:
            raise KaggleError(404, "Not found")
        if participating and slug in self.rules_not_accepted:
            raise KaggleError(403, RULES_MESSAGE)
        if participating and slug in self.not_joined:
            raise KaggleError(403, PARTICIPATE_MESSAGE)

    def page(self, rows: list, body: dict, default_size: int = 20) -> tuple[list, str]:
        """One page of rows and the nextPageToken, as Kaggle pages (pageToken; see page_mode)."""
        size = min(int(body.get("pageSize") or default_size), 100)
        token = body.get("pageToken") or ""
        if self.page_mode == "stuck":
            return rows[:size], ("stuck-token" if rows else "")
        if token:
            start = int(base64.urlsafe_b64decode(token.encode()).decode())
        elif self.page_mode == "normal" and body.get("page"):
            start = (int(body["page"]) - 1) * size
        else:
            start = 0
        end = start + size
        next_token = base64.urlsafe_b64encode(str(end).encode()).decode() if end < len(rows) else ""
        return rows[start:end], next_token

    # Lifetime.

    def start(self) -> KaggleStandIn:
        lock_path = f"{tempfile.gettempdir()}/kit-kaggle-standin-{self.port}.lock"
        self._lock_file = open(lock_path, "w")  # noqa: SIM115 - held from start() until stop()
        deadline = time.monotonic() + self._lock_timeout
        while True:
            try:
                fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    self._lock_file.close()
                    raise RuntimeError(f"port {self.port} stayed busy with another Kaggle stand-in") from None
                time.sleep(0.05)
        try:
            for role, address in (("api", ("127.0.0.1", self.port)), ("storage", (STORAGE_HOST, 0))):
                server = _Server(address, _Handler)
                server.stand_in, server.role = self, role
                self._servers.append(server)
        except OSError:
            self.stop()
            raise
        self.storage_url = f"http://{STORAGE_HOST}:{self._servers[1].server_address[1]}"
        for server in self._servers:
            thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            )
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join()
        self._servers, self._threads = [], []
        if self._lock_file is not None:
            self._lock_file.close()  # releases the flock
            self._lock_file = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exception_info) -> None:
        self.stop()


def _members(bundle: bytes) -> dict[str, bytes]:
    """The files of a competition bundle; hostile or broken archives have none.

    Downloads still serve them.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(bundle)) as archive:
            return {info.filename: archive.read(info) for info in archive.infolist() if not info.is_dir()}
    except (zipfile.BadZipFile, OSError, ValueError):
        return {}


# Kaggle's API, one handler per call, named as kagglesdk names them.


@api("security.OAuthService", "IntrospectToken", needs_auth=False)
def _introspect_token(stand_in: KaggleStandIn, call: Call) -> dict:
    username = stand_in.tokens.get(call.body.get("token", ""))
    if username is None:
        return {"active": False}
    expiry = int(time.time()) + 3600
    return {"active": True, "username": username, "userId": 1, "scope": "resources.admin:*", "exp": expiry}


@api("competitions.CompetitionApiService", "GetCompetition")
def _get_competition(stand_in: KaggleStandIn, call: Call) -> dict:
    stand_in.check_competition(call.slug, participating=False)
    board = stand_in.leaderboards.get(call.slug, [])
    rank = next((n for n, row in enumerate(board, 1) if row.get("teamName") == stand_in.team_name), None)
    return _strip_empty(
        {
            "ref": f"{stand_in.url}/competitions/{call.slug}",
            "title": call.slug.replace("-", " ").title(),
            "teamCount": len(board),
            "userHasEntered": call.slug not in stand_in.not_joined | stand_in.rules_not_accepted,
            "userRank": rank,
            "maxDailySubmissions": stand_in.daily_limit_of(call.slug),
            "isKernelsSubmissionsOnly": call.slug in stand_in.notebook_only,
        }
    )


@api("competitions.CompetitionApiService", "ListDataFiles")
def _list_data_files(stand_in: KaggleStandIn, call: Call) -> dict:
    stand_in.check_competition(call.slug)
    bundle = stand_in.competitions.get(call.slug)
    files = [
        {"ref": name, "name": name, "totalBytes": len(content), "creationDate": _timestamp(_now())}
        for name, content in _members(bundle or b"").items()
    ]
    rows, next_token = stand_in.page(files, call.body)
    return _strip_empty({"files": rows, "nextPageToken": next_token or None})


@api("competitions.CompetitionApiService", "DownloadDataFiles")
def _download_data_files(stand_in: KaggleStandIn, call: Call):
    stand_in.check_competition(call.slug)
    if stand_in.competitions.get(call.slug) is None:
        raise KaggleError(404, "This competition has no data")
    return 302, {"Location": stand_in.signed_url(f"competitions/{call.slug}/{call.slug}.zip")}


@api("competitions.CompetitionApiService", "DownloadDataFile")
def _download_data_file(stand_in: KaggleStandIn, call: Call):
    stand_in.check_competition(call.slug)
    key = f"competitions/{call.slug}/files/{call.body.get('fileName', '')}"
    if key not in stand_in.blobs:
        raise KaggleError(404, "Not found")
    return 302, {"Location": stand_in.signed_url(key)}


@api("competitions.CompetitionApiService", "GetSubmissionLimits")
def _get_submission_limits(stand_in: KaggleStandIn, call: Call) -> dict:
    stand_in.check_competition(call.slug)
    today = stand_in.submitted_today(call.slug)
    return {
        "numToday": today,
        "numTotal": len(stand_in.submissions.get(call.slug, [])),
        "numAllowedNow": max(stand_in.daily_limit_of(call.slug) - today, 0),
    }


@api("competitions.CompetitionApiService", "StartSubmissionUpload")
def _start_submission_upload(stand_in: KaggleStandIn, call: Call) -> dict:
    stand_in.check_competition(call.slug)
    token, url = stand_in.start_upload({"slug": call.slug, "file_name": call.body.get("fileName", "")})
    return {"token": token, "createUrl": url}


@api("competitions.CompetitionApiService", "CreateSubmission")
def _create_submission(stand_in: KaggleStandIn, call: Call) -> dict:
    stand_in.check_competition(call.slug)
    if call.slug in stand_in.notebook_only:
        raise KaggleError(400, NOTEBOOK_ONLY_MESSAGE)
    limit = stand_in.daily_limit_of(call.slug)
    if stand_in.submitted_today(call.slug) >= limit:
        midnight = (_now() + datetime.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        hours = (midnight - _now()).total_seconds() / 3600
        raise KaggleError(400, DAILY_LIMIT_MESSAGE.format(limit=limit, hours=hours))
    token = call.body.get("blobFileTokens", "")
    pending = stand_in._pending_uploads.pop(token, None)
    if pending is None or token not in stand_in.uploaded or pending["slug"] != call.slug:
        raise KaggleError(400, "Unknown or incomplete upload")
    message = call.body.get("submissionDescription")
    stand_in.uploads.append(Upload(call.slug, pending["file_name"], stand_in.uploaded.pop(token), message))
    row = {
        "ref": len(stand_in.uploads),
        "date": _timestamp(_now()),
        "fileName": pending["file_name"],
        "status": "PENDING",
        "description": message or None,
    }
    stand_in.submissions.setdefault(call.slug, []).insert(0, _strip_empty(row))
    return {"message": "Successfully submitted", "ref": row["ref"]}


@api("competitions.CompetitionApiService", "ListSubmissions")
def _list_submissions(stand_in: KaggleStandIn, call: Call) -> dict:
    stand_in.check_competition(call.slug)
    rows, next_token = stand_in.page(stand_in.submissions.get(call.slug, []), call.body)
    return {"submissions": [_strip_empty(row) for row in rows], "nextPageToken": next_token}


@api("competitions.CompetitionApiService", "GetLeaderboard")
def _get_leaderboard(stand_in: KaggleStandIn, call: Call) -> dict:
    stand_in.check_competition(call.slug, participating=False)
    rows, next_token = stand_in.page(stand_in.leaderboards.get(call.slug, []), call.body)
    return {"submissions": [_strip_empty(row) for row in rows], "nextPageToken": next_token}


# Building downloads shaped like Kaggle's, for the stand-in to serve.


def make_zip(members: dict) -> bytes:
    """A zip holding {name: bytes}; names are stored verbatim, hostile ones included."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in members.items():
            archive.writestr(zipfile.ZipInfo(name), content)
    return buffer.getvalue()


def image_bytes(color: tuple[int, int, int], seed: int, image_format: str = "JPEG", size: int = 40) -> bytes:
    """A small noisy image tinted by `color`: a class a tiny model can learn from its colour."""
    import numpy as np
    from PIL import Image

    noise = np.random.default_rng(seed).integers(-40, 40, (size, size, 3))
    pixels = np.clip(np.array(color) + noise, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=image_format)
    return buffer.getvalue()


# Datasets, blobs, kernels and code submissions (issue 12: `kit notebook`). Each request body is read with
# kagglesdk's own request type (a field the type does not know is refused, as Kaggle refuses it) and each
# answer is built with its response type, so the JSON is what the client reads in production.


class Dataset(NamedTuple):
    owner: str
    slug: str
    title: str
    is_private: bool
    license_name: str
    versions: list  # each {"files": {name: bytes}, "notes": str}


class KernelVersion(NamedTuple):
    number: int
    request: dict  # the SaveKernel body, as sent
    notebook: dict  # its `text`, parsed


class CodeSubmission(NamedTuple):
    slug: str
    kernel: str  # owner/slug
    version: int | None
    file_name: str
    description: str


class Notebooks:
    """The stand-in's datasets, kernels and code submissions (see `notebooks(stand_in)`), and how its kernels
    behave: each new version answers QUEUED, then RUNNING `running_polls` times, then `outcome` (COMPLETE or
    ERROR, with `failure_message`); its output files are `outputs` (name -> bytes, or a function of the
    version) and its log is `log` (Kaggle's JSON list of stream entries). A new dataset version is
    BLOBS_RECEIVED for `ready_after_polls` status calls, then READY."""

    def __init__(self):
        self.datasets: dict[str, Dataset] = {}
        self.kernels: dict[str, list[KernelVersion]] = {}
        self.code_submissions: list[CodeSubmission] = []
        self.blob_names: dict[str, str] = {}  # upload token -> file name (StartBlobUpload)
        self.dataset_polls: dict[str, int] = {}
        self.kernel_polls: dict[tuple[str, int], int] = {}
        self.ready_after_polls = 1
        self.running_polls = 2
        self.outcome = "COMPLETE"
        self.failure_message = ""
        self.outputs = {}
        self.log = [
            {"stream_name": "stdout", "time": 1.5, "data": "kit from /tmp/kit/site/kit/__init__.py\n"},
            {"stream_name": "stdout", "time": 9.0, "data": "wrote /kaggle/working/submission.csv\n"},
        ]

    def files_of(self, kernel: str, version: int) -> dict:
        return self.outputs(kernel, version) if callable(self.outputs) else dict(self.outputs)


def notebooks(stand_in: KaggleStandIn) -> Notebooks:
    """The stand-in's Notebooks state, made on first use (kept apart from KaggleStandIn's own fields)."""
    if not hasattr(stand_in, "_notebooks"):
        stand_in._notebooks = Notebooks()
    return stand_in._notebooks


def _typed(request_type, body: dict):
    """The body read as kagglesdk reads it; a field its type does not have is a 400, as on Kaggle."""
    known = {field.json_name for field in request_type._fields}
    unknown = sorted(set(body) - known)
    if unknown:
        raise KaggleError(
            400, f'Invalid JSON payload received. Unknown name "{unknown[0]}": Cannot find field.'
        )
    return request_type.from_dict(body)


def _answer(response_type, **values) -> dict:
    response = response_type()
    for name, value in values.items():
        setattr(response, name, value)
    return response.to_dict()


def _uploaded_files(stand_in: KaggleStandIn, files) -> dict:
    """{file name: bytes} of the blob tokens a dataset request names; an unknown or unfinished one: 400."""
    state, result = notebooks(stand_in), {}
    for new_file in files:
        token = new_file.token
        if token not in state.blob_names or token not in stand_in.uploaded:
            raise KaggleError(400, f"Invalid blob token {token!r}: upload the file first")
        result[state.blob_names.pop(token)] = stand_in.uploaded.pop(token)
        stand_in._pending_uploads.pop(token, None)
    return result


def _own_dataset(stand_in: KaggleStandIn, call: Call, owner: str, slug: str) -> Dataset:
    dataset = notebooks(stand_in).datasets.get(f"{owner}/{slug}")
    if dataset is None or (dataset.is_private and call.user != owner):
        raise KaggleError(404, "Not found")
    return dataset


@api("blobs.BlobApiService", "StartBlobUpload")
def _start_blob_upload(stand_in: KaggleStandIn, call: Call) -> dict:
    from kagglesdk.blobs.types.blob_api_service import (
        ApiBlobType,
        ApiStartBlobUploadRequest,
        ApiStartBlobUploadResponse,
    )

    request = _typed(ApiStartBlobUploadRequest, call.body)
    if request.type != ApiBlobType.DATASET or not request.name:
        raise KaggleError(400, "A blob needs a type and a name")
    token, url = stand_in.start_upload({"slug": "", "file_name": request.name})
    notebooks(stand_in).blob_names[token] = request.name
    return _answer(ApiStartBlobUploadResponse, token=token, create_url=url)


@api("datasets.DatasetApiService", "GetDatasetStatus")
def _get_dataset_status(stand_in: KaggleStandIn, call: Call) -> dict:
    from kagglesdk.datasets.types.dataset_api_service import (
        ApiGetDatasetStatusRequest,
        ApiGetDatasetStatusResponse,
    )
    from kagglesdk.datasets.types.dataset_enums import DatabundleVersionStatus

    request = _typed(ApiGetDatasetStatusRequest, call.body)
    dataset = _own_dataset(stand_in, call, request.owner_slug, request.dataset_slug)
    state, key = notebooks(stand_in), f"{dataset.owner}/{dataset.slug}"
    waiting = state.dataset_polls.get(key, 0)
    state.dataset_polls[key] = max(waiting - 1, 0)
    status = DatabundleVersionStatus.BLOBS_RECEIVED if waiting else DatabundleVersionStatus.READY
    return _answer(ApiGetDatasetStatusResponse, status=status)


@api("datasets.DatasetApiService", "CreateDataset")
def _create_dataset(stand_in: KaggleStandIn, call: Call) -> dict:
    from kagglesdk.datasets.types.dataset_api_service import ApiCreateDatasetRequest, ApiCreateDatasetResponse

    request = _typed(ApiCreateDatasetRequest, call.body)
    owner, slug = request.owner_slug or call.user, request.slug
    if owner != call.user:
        raise KaggleError(403, "Permission 'datasets.create' was denied")
    if not 6 <= len(slug) <= 50 or not 6 <= len(request.title) <= 50:
        raise KaggleError(400, "The dataset slug and title must be between 6 and 50 characters")
    state = notebooks(stand_in)
    if f"{owner}/{slug}" in state.datasets:
        return _answer(
            ApiCreateDatasetResponse,
            status="error",
            error=f'The requested slug "{slug}" is already in use by a dataset. Please choose another slug.',
        )
    files = _uploaded_files(stand_in, request.files)
    state.datasets[f"{owner}/{slug}"] = Dataset(
        owner, slug, request.title, request.is_private, request.license_name, [{"files": files, "notes": ""}]
    )
    state.dataset_polls[f"{owner}/{slug}"] = state.ready_after_polls
    return _answer(
        ApiCreateDatasetResponse,
        ref=f"{owner}/{slug}",
        url=f"{stand_in.url}/datasets/{owner}/{slug}",
        status="ok",
    )


@api("datasets.DatasetApiService", "CreateDatasetVersion")
def _create_dataset_version(stand_in: KaggleStandIn, call: Call) -> dict:
    from kagglesdk.datasets.types.dataset_api_service import (
        ApiCreateDatasetResponse,
        ApiCreateDatasetVersionRequest,
    )

    request = _typed(ApiCreateDatasetVersionRequest, call.body)
    dataset = _own_dataset(stand_in, call, request.owner_slug, request.dataset_slug)
    if call.user != dataset.owner:
        raise KaggleError(403, "Permission 'datasets.edit' was denied")
    if request.body is None:
        raise KaggleError(400, "A dataset version needs a body")
    files = _uploaded_files(stand_in, request.body.files)
    if request.body.delete_old_versions:
        dataset.versions.clear()
    dataset.versions.append({"files": files, "notes": request.body.version_notes})
    notebooks(stand_in).dataset_polls[f"{dataset.owner}/{dataset.slug}"] = notebooks(
        stand_in
    ).ready_after_polls
    return _answer(
        ApiCreateDatasetResponse,
        ref=f"{dataset.owner}/{dataset.slug}",
        url=f"{stand_in.url}/datasets/{dataset.owner}/{dataset.slug}",
        status="ok",
    )


@api("kernels.KernelsApiService", "SaveKernel")
def _save_kernel(stand_in: KaggleStandIn, call: Call) -> dict:
    import nbformat
    from kagglesdk.kernels.types.kernels_api_service import ApiSaveKernelRequest, ApiSaveKernelResponse

    request = _typed(ApiSaveKernelRequest, call.body)
    owner, _, slug = (request.slug or "").partition("/")
    if owner != call.user or not slug:
        raise KaggleError(403, "Permission 'kernels.create' was denied")
    if request.kernel_type == "notebook":
        try:
            notebook = json.loads(request.text or "")
            nbformat.validate(nbformat.from_dict(notebook))
        except (ValueError, nbformat.ValidationError) as error:
            raise KaggleError(400, f"Invalid notebook: {str(error).splitlines()[0]}") from None
    else:
        notebook = {}
    state = notebooks(stand_in)
    invalid_datasets = [
        source
        for source in request.dataset_data_sources
        if source not in state.datasets
        or (state.datasets[source].is_private and state.datasets[source].owner != call.user)
    ]
    known = set(stand_in.competitions) | set(stand_in.submissions)
    invalid_competitions = [source for source in request.competition_data_sources if source not in known]
    versions = state.kernels.setdefault(f"{owner}/{slug}", [])
    versions.append(KernelVersion(len(versions) + 1, dict(call.body), notebook))
    state.kernel_polls[(f"{owner}/{slug}", len(versions))] = 0
    return _answer(
        ApiSaveKernelResponse,
        ref=f"/code/{owner}/{slug}",
        url=f"{stand_in.url}/code/{owner}/{slug}",
        version_number=len(versions),
        invalid_dataset_sources=invalid_datasets,
        invalid_competition_sources=invalid_competitions,
        kernel_id=1000 + len(state.kernels),
    )


def _kernel_version(stand_in: KaggleStandIn, call: Call, owner: str, slug: str, label: str | None):
    """The kernel's version the label names ("v3", as the client writes it), or its latest."""
    versions = notebooks(stand_in).kernels.get(f"{owner}/{slug}")
    if not versions or owner != call.user:  # the kit's kernels are private
        raise KaggleError(403, "Permission 'kernels.get' was denied")
    if label:
        matching = [version for version in versions if f"v{version.number}" == label]
        if not matching:
            raise KaggleError(404, "Not found")
        return matching[0]
    return versions[-1]


def _kernel_status(stand_in: KaggleStandIn, kernel: str, version: int, count: bool) -> str:
    state = notebooks(stand_in)
    polls = state.kernel_polls.get((kernel, version), 0)
    if count:
        state.kernel_polls[(kernel, version)] = polls + 1
    if polls == 0:
        return "QUEUED"
    return "RUNNING" if polls <= state.running_polls else state.outcome


@api("kernels.KernelsApiService", "GetKernelSessionStatus")
def _get_kernel_session_status(stand_in: KaggleStandIn, call: Call) -> dict:
    from kagglesdk.kernels.types.kernels_api_service import (
        ApiGetKernelSessionStatusRequest,
        ApiGetKernelSessionStatusResponse,
    )
    from kagglesdk.kernels.types.kernels_enums import KernelWorkerStatus

    request = _typed(ApiGetKernelSessionStatusRequest, call.body)
    version = _kernel_version(stand_in, call, request.user_name, request.kernel_slug, request.version_label)
    status = _kernel_status(stand_in, f"{request.user_name}/{request.kernel_slug}", version.number, True)
    failure = notebooks(stand_in).failure_message if status == "ERROR" else None
    return _answer(
        ApiGetKernelSessionStatusResponse, status=KernelWorkerStatus[status], failure_message=failure
    )


@api("kernels.KernelsApiService", "ListKernelSessionOutput")
def _list_kernel_session_output(stand_in: KaggleStandIn, call: Call) -> dict:
    from kagglesdk.kernels.types.kernels_api_service import (
        ApiKernelSessionOutputFile,
        ApiListKernelSessionOutputRequest,
        ApiListKernelSessionOutputResponse,
    )

    request = _typed(ApiListKernelSessionOutputRequest, call.body)
    kernel = f"{request.user_name}/{request.kernel_slug}"
    version = _kernel_version(stand_in, call, request.user_name, request.kernel_slug, request.version_label)
    state = notebooks(stand_in)
    finished = _kernel_status(stand_in, kernel, version.number, False) in ("COMPLETE", "ERROR")
    produced = state.files_of(kernel, version.number) if finished else {}
    entries = []
    for name, content in sorted(produced.items()):
        key = f"kernels/{kernel}/{version.number}/{name}"
        stand_in.blobs[key] = content
        entry = ApiKernelSessionOutputFile()
        entry.url, entry.file_name = stand_in.signed_url(key), name
        entries.append(entry)
    rows, next_token = stand_in.page(entries, call.body)
    return _answer(
        ApiListKernelSessionOutputResponse,
        files=rows,
        log=json.dumps(state.log) if finished else None,
        next_page_token=next_token or None,
    )


@api("competitions.CompetitionApiService", "CreateCodeSubmission")
def _create_code_submission(stand_in: KaggleStandIn, call: Call) -> dict:
    from kagglesdk.competitions.types.competition_api_service import (
        ApiCreateCodeSubmissionRequest,
        ApiCreateCodeSubmissionResponse,
    )

    request = _typed(ApiCreateCodeSubmissionRequest, call.body)
    slug = request.competition_name
    stand_in.check_competition(slug)
    if slug not in stand_in.notebook_only:
        raise KaggleError(
            400, "Submission not allowed: This competition does not accept Notebook submissions."
        )
    kernel = f"{request.kernel_owner}/{request.kernel_slug}"
    label = f"v{request.kernel_version}" if request.kernel_version else None
    version = _kernel_version(stand_in, call, request.kernel_owner, request.kernel_slug, label)
    metadata = version.request
    if metadata.get("enableInternet", True):
        raise KaggleError(
            400, "Submission not allowed: Notebooks with internet access enabled cannot be submitted."
        )
    if slug not in metadata.get("competitionDataSources", []):
        raise KaggleError(400, f"Submission not allowed: the Notebook does not use the data of {slug}.")
    if _kernel_status(stand_in, kernel, version.number, False) != "COMPLETE":
        raise KaggleError(400, "Submission not allowed: the Notebook version did not complete successfully.")
    if request.file_name not in notebooks(stand_in).files_of(kernel, version.number):
        raise KaggleError(
            400, f"Submission not allowed: the Notebook version has no output {request.file_name}."
        )
    limit = stand_in.daily_limit_of(slug)
    if stand_in.submitted_today(slug) >= limit:
        raise KaggleError(400, DAILY_LIMIT_MESSAGE.format(limit=limit, hours=1.0))
    description = request.submission_description
    notebooks(stand_in).code_submissions.append(
        CodeSubmission(slug, kernel, request.kernel_version, request.file_name, description)
    )
    rows = stand_in.submissions.setdefault(slug, [])
    row = {
        "ref": 10_000 + len(rows),
        "date": _timestamp(_now()),
        "fileName": request.file_name,
        "status": "PENDING",
        "description": description or None,
    }
    rows.insert(0, _strip_empty(row))
    return _answer(
        ApiCreateCodeSubmissionResponse, message="Your submission was successfully saved", ref=row["ref"]
    )
