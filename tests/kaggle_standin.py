"""A local stand-in for Kaggle, built from the official client's own request/response code (kaggle 2.2.5,
kagglesdk 0.1.38), so the kit is tested end to end through that client against what production does.

PROD and TEST. kagglesdk builds every API URL in `KaggleHttpClient._get_request_url`: in production
(KAGGLE_API_ENVIRONMENT unset or PROD) it is `https://api.kaggle.com/v1/<service>/<Method>`; in its TEST
environment `http://localhost:7777/api/v1/<service>/<Method>`. The stand-in runs in either shape and
answers only its own (a URL of the other shape is a 404), so code that guesses where an answer came from
by the path's shape fails in one of them. Every Kaggle case runs in both: the test modules use the
`kaggle_environment` fixture (params PROD and TEST), which sets ENVIRONMENT here for kaggle_env() and
KaggleStandIn. In PROD the client runs as on a user's machine (no KAGGLE_API_ENVIRONMENT) and the one
thing changed is kagglesdk's production endpoint: `kagglesdk.kaggle_env._env_to_endpoint[KaggleEnv.PROD]`
(read by `get_endpoint`, the only place the client looks) is pointed at the stand-in's free local port
while it runs, and restored after (point_production_at). A `kit` started as a separate process does the
same through kit_command().

Two servers, like production, told apart by host (the API on "localhost", storage on "127.0.0.1"):

- The API: every call is `POST <prefix><service>/<Method>` with a camelCase JSON body
  (kagglesdk's `KaggleHttpClient.call`). Errors are JSON `{"code": N, "message": "..."}`: the client raises
  `requests.HTTPError(message)`, so the message is Kaggle's own text (`KaggleHttpClient._prepare_response`).
- Storage, on a second local port and another host name: downloads are a 302 from the API to a signed link
  there (`HttpRedirect`), uploads are PUT to a `createUrl` there. Storage ignores the Authorization header
  (requests drops it on a redirect to another host; the stand-in records whether any arrived), answers
  ranged requests with 206 (If-Range against the ETag, or Last-Modified when `etag=False`), and answers an
  expired link with 403 (or 400, fault "expired-400") and GCS's XML body.

Authentication, as `KaggleApi.authenticate` does it: an API token (`KGAT_...`) is first checked with
`security.OAuthService/IntrospectToken` (an unknown one is `{"active": false}`), then sent as `Bearer`;
the legacy username/key is sent as HTTP Basic. Anything else is 401 `Unauthenticated`.

Calls: competitions in kaggle_standin_competitions.py; datasets, blobs, kernels and code submissions in
kaggle_standin_notebooks.py. Register one more with `@api(service, Method)` on `handler(stand_in, call) ->
dict` (raise KaggleError(status, message) for an error). Paging is by pageToken (see `page_mode`). Faults
are queued with `fail_next(target, kind)` (target "storage", "api" or a Method name; kinds FAULT_KINDS)
and taken by the next matching request.

Usage from any test (tests/ is on sys.path when pytest collects it):

    from kaggle_standin import KaggleStandIn, kaggle_env

    def test_something(monkeypatch, tmp_path, kaggle_environment):
        kaggle_env(monkeypatch, tmp_path, credentials="token-env")
        with KaggleStandIn(competitions={"dog-breeds": zip_bytes}) as stand_in:
            ...  # call kit code or the CLI; then inspect stand_in.requests, .uploads, .bytes_served
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import io
import json
import sys
import tempfile
import threading
import time
import types
import urllib.parse
import uuid

import pytest
from kaggle_standin_competitions import image_bytes, make_zip, noise_bundle
from kaggle_standin_notebooks import CodeSubmission, Dataset, KernelVersion, Notebooks, notebooks
from kaggle_standin_server import (
    DAILY_LIMIT_MESSAGE,
    DEFAULT_DAILY_LIMIT,
    EXPIRED_LINK_BODY,
    FAULT_KINDS,
    NOTEBOOK_ONLY_MESSAGE,
    PARTICIPATE_MESSAGE,
    RULES_MESSAGE,
    STANDIN_KEY,
    STANDIN_TOKEN,
    STANDIN_USERNAME,
    STORAGE_HOST,
    UNAUTHENTICATED_MESSAGE,
    Call,
    Fault,
    KaggleError,
    Request,
    Upload,
    _Handler,
    _members,
    _now,
    _Server,
    api,
    kit_command,
    point_production_at,
)

__all__ = [  # what tests import from here (the stand-in's parts live in kaggle_standin_*.py)
    "DAILY_LIMIT_MESSAGE",
    "EXPIRED_LINK_BODY",
    "NOTEBOOK_ONLY_MESSAGE",
    "PARTICIPATE_MESSAGE",
    "RULES_MESSAGE",
    "STANDIN_KEY",
    "STANDIN_TOKEN",
    "STANDIN_USERNAME",
    "UNAUTHENTICATED_MESSAGE",
    "Call",
    "CodeSubmission",
    "Dataset",
    "KaggleError",
    "KaggleStandIn",
    "KernelVersion",
    "Notebooks",
    "Request",
    "Upload",
    "api",
    "image_bytes",
    "kaggle_env",
    "kaggle_environment",
    "kit_command",
    "make_zip",
    "noise_bundle",
    "notebooks",
    "point_production_at",
    "secrets",
]

STANDIN_PORT = 7777  # hard-coded in kagglesdk.kaggle_env for KaggleEnv.TEST
ENVIRONMENTS = ("PROD", "TEST")
ENVIRONMENT = "TEST"  # the shape kaggle_env() and KaggleStandIn use; the kaggle_environment fixture sets it


@pytest.fixture(params=ENVIRONMENTS)
def kaggle_environment(request):
    """Run the test once with the client in its production shape and once in its TEST environment (set
    apart from `monkeypatch`, which tests undo midway)."""
    module = sys.modules[__name__]
    module.ENVIRONMENT = request.param
    yield request.param
    module.ENVIRONMENT = "TEST"


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
    if ENVIRONMENT == "TEST":
        monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "TEST")
    else:  # unset, as on a user's machine: kagglesdk's get_env() is then PROD
        monkeypatch.delenv("KAGGLE_API_ENVIRONMENT", raising=False)
    for variable in ("NO_PROXY", "no_proxy"):  # a registry proxy must not swallow localhost
        monkeypatch.setenv(variable, "localhost,127.0.0.1")
    for variable in (
        "KAGGLE_API_TOKEN",
        "KAGGLE_USERNAME",
        "KAGGLE_KEY",
        "KAGGLE_KERNEL_RUN_TYPE",
        "KAGGLE_API_V1_TOKEN",
        "KAGGLE_DATA_PROXY_URL",
        "VERBOSE",
        "VERBOSE_OUTPUT",
    ):
        monkeypatch.delenv(variable, raising=False)
    with contextlib.redirect_stdout(io.StringIO()):  # `import kaggle` authenticates: done once, with nothing
        import kaggle  # noqa: F401 - to find, so that no test sees that call
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


class KaggleStandIn:
    """Context manager running the stand-in: the API on localhost (7777 in TEST, a free port in PROD), storage
    on 127.0.0.1:<free port>.

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
        page, with the same non-empty nextPageToken), "page-only" (`page` only: an unknown pageToken gets
        page 1 again, with a non-empty nextPageToken while rows remain).
    bundle_names: {slug: the file name of the bundle's signed link} (default `<slug>.zip`).
    etag: storage sends an ETag (else Last-Modified only, which If-Range is then compared with).
    storage_seconds: seconds storage takes per 64 KiB of a body (a slow link, for concurrent commands).
    environment: "PROD" (kagglesdk's production URL shape, `/v1/<service>/<call>`, its endpoint pointed
        here) or "TEST" (`/api/v1/...` on localhost:7777); default: the module's ENVIRONMENT.
    link_lifetime: seconds a signed storage link stays valid.
    failing_uploads: answer the file upload (PUT) with HTTP 500, as a broken storage backend would.
    Recorded: `.uploads` (list of Upload), `.requests` (list of Request), `.bytes_served` (storage body
    bytes actually written), `.signatures` (every signature handed out, to check none is ever printed).

    Port 7777 is fixed by kagglesdk for TEST, so concurrent TEST runs on one machine take turns via a file
    lock; PROD takes a free port.
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
        port=None,
        lock_timeout=120.0,
        bundle_names=None,
        etag=True,
        storage_seconds=0.0,
        environment=None,
    ):
        if page_mode not in ("normal", "ignore-page", "stuck", "page-only"):
            raise ValueError(f"unknown page_mode {page_mode!r}")
        self.environment = environment or ENVIRONMENT
        if self.environment not in ENVIRONMENTS:
            raise ValueError(f"unknown environment {self.environment!r}")
        self.api_prefix = "/v1/" if self.environment == "PROD" else "/api/v1/"  # KaggleHttpClient's shapes
        if port is None:
            port = STANDIN_PORT if self.environment == "TEST" else 0
        self.bundle_names = dict(bundle_names or {})
        self.etag = etag
        self.storage_seconds = storage_seconds
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
        self.url = f"http://localhost:{port}"  # set again by start() when the port is a free one
        self._saved_endpoint = None
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
                self.blobs[self.bundle_key(slug)] = bundle
                for name, content in _members(bundle).items():
                    self.blobs[f"competitions/{slug}/files/{name}"] = content

    # Used by handlers (and by extensions for datasets, kernels, blobs).

    def bundle_key(self, slug: str) -> str:
        return f"competitions/{slug}/{self.bundle_names.get(slug, slug + '.zip')}"

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
        if kind not in FAULT_KINDS:
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
        bundle = "/storage/" + self.bundle_key(slug)
        return sum(1 for r in self.storage_gets(slug) if r.path == bundle)

    def api_calls(self, method: str) -> int:
        return sum(1 for r in self.requests if r.server == "api" and r.path.endswith("/" + method))

    def api_methods(self) -> list[str]:
        """The API calls received, in order, by method name ("GetCompetition", "CreateDataset", ...)."""
        return [r.path.rpartition("/")[2] for r in self.requests if r.server == "api"]

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
        if self.page_mode == "page-only":  # a pageToken it did not issue is read as no token: page 1
            start = (max(int(body.get("page") or 1), 1) - 1) * size
            return rows[start : start + size], ("more" if start + size < len(rows) else "")
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
        if self.environment == "TEST":
            self._take_port_lock()
        try:
            for role, address in (("api", ("127.0.0.1", self.port)), ("storage", (STORAGE_HOST, 0))):
                server = _Server(address, _Handler)
                server.stand_in, server.role = self, role
                self._servers.append(server)
        except OSError:
            self.stop()
            raise
        self.port = self._servers[0].server_address[1]
        self.url = f"http://localhost:{self.port}"
        self.storage_url = f"http://{STORAGE_HOST}:{self._servers[1].server_address[1]}"
        if self.environment == "PROD":
            self._saved_endpoint = point_production_at(self.url)
        for server in self._servers:
            thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            )
            thread.start()
            self._threads.append(thread)
        return self

    def _take_port_lock(self) -> None:
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

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join()
        self._servers, self._threads = [], []
        if self._saved_endpoint is not None:
            point_production_at(self._saved_endpoint)
            self._saved_endpoint = None
        if self._lock_file is not None:
            self._lock_file.close()  # releases the flock
            self._lock_file = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exception_info) -> None:
        self.stop()
