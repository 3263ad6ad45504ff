"""A local stand-in for the Kaggle API, so kit.kaggle can be tested end to end with the official client.

kagglesdk sends every call as `POST /api/v1/<service>/<method>` with a camelCase JSON body, and with
KAGGLE_API_ENVIRONMENT=TEST it targets http://localhost:7777. This server answers the competition calls
kit uses, the way Kaggle does:

- DownloadDataFiles: 302 to /files/<slug>.zip, which serves the zip bytes given to the stand-in.
- StartSubmissionUpload: {"token", "createUrl"}; the client then PUTs the file bytes to createUrl.
- CreateSubmission: records an Upload(slug, file_name, content, message) and a pending submission row.
- ListSubmissions: {"submissions": [...]} in the API's JSON shape, paged by page/pageSize.
- 401 (JSON {"code", "message"}) for wrong credentials, 403 for slugs in `rules_not_accepted`,
  404 for slugs it does not know.

Usage from any test (tests/ is on sys.path when pytest collects it):

    from kaggle_standin import KaggleStandIn, kaggle_env

    def test_something(monkeypatch, tmp_path):
        kaggle_env(monkeypatch, tmp_path)
        with KaggleStandIn(competitions={"dog-breeds": zip_bytes}) as stand_in:
            ...  # call kit code or the `kit` CLI; then inspect stand_in.uploads / stand_in.requests
"""

from __future__ import annotations

import base64
import datetime
import fcntl
import http.server
import io
import json
import tempfile
import threading
import time
import types
import uuid
import zipfile
from typing import NamedTuple

STANDIN_USERNAME = "kit-test-user"
STANDIN_KEY = "kit-test-key-0123456789abcdef"  # distinctive, so tests can assert it never leaks
STANDIN_PORT = 7777  # hard-coded in kagglesdk.kaggle_env for KaggleEnv.TEST
SERVICE_PREFIX = "/api/v1/competitions.CompetitionApiService/"


class Upload(NamedTuple):
    """One submission the stand-in received: what was uploaded and the message it came with."""

    slug: str
    file_name: str
    content: bytes
    message: str | None


def kaggle_env(monkeypatch, tmp_path, credentials: bool = True):
    """Point the official client at the stand-in, with fake credentials and no real ~/.kaggle.

    HOME moves into tmp_path because kagglesdk also looks at ~/.kaggle/access_token and credentials.json.
    Returns the fake username, key and config directory. With credentials=False no credentials exist.
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
    for variable in ("KAGGLE_API_TOKEN", "KAGGLE_KERNEL_RUN_TYPE", "VERBOSE", "VERBOSE_OUTPUT"):
        monkeypatch.delenv(variable, raising=False)
    if credentials:
        monkeypatch.setenv("KAGGLE_USERNAME", STANDIN_USERNAME)
        monkeypatch.setenv("KAGGLE_KEY", STANDIN_KEY)
    else:
        monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
        monkeypatch.delenv("KAGGLE_KEY", raising=False)
    return types.SimpleNamespace(
        username=STANDIN_USERNAME, key=STANDIN_KEY, config_directory=config_directory
    )


class _Handler(http.server.BaseHTTPRequestHandler):
    """Routes requests to the KaggleStandIn that owns the server."""

    def log_message(self, format, *arguments):  # keep test output clean
        pass

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
        self.wfile.write(body)

    def _send_json(self, status: int, payload: dict):
        self._send(status, json.dumps(payload).encode())

    def _authorized(self) -> bool:
        expected = base64.b64encode(f"{self.stand_in.username}:{self.stand_in.key}".encode()).decode()
        if self.headers.get("Authorization") == f"Basic {expected}":
            return True
        self._send_json(401, {"code": 401, "message": "Unauthenticated"})
        return False

    def do_GET(self):
        self.stand_in._record("GET", self.path)
        slug = self.path.removeprefix("/files/").removesuffix(".zip")
        if self.path.startswith("/files/") and self.stand_in.competitions.get(slug) is not None:
            self._send(200, self.stand_in.competitions[slug], "application/zip", {"Accept-Ranges": "bytes"})
        else:
            self._send_json(404, {"code": 404, "message": "Not found"})

    def do_PUT(self):
        self.stand_in._record("PUT", self.path)
        token = self.path.removeprefix("/upload/")
        if token not in self.stand_in._pending_uploads:
            return self._send_json(404, {"code": 404, "message": "Upload expired"})
        if self.stand_in.failing_uploads:  # storage rejecting the file: the client gives up on non-503
            self._body()
            return self._send_json(500, {"code": 500, "message": "Storage unavailable"})
        self.stand_in._pending_uploads[token]["content"] = self._body()
        self._send_json(200, {})

    def do_POST(self):
        self.stand_in._record("POST", self.path)
        request = json.loads(self._body() or b"{}")
        if not self._authorized():
            return
        method = self.path.removeprefix(SERVICE_PREFIX)
        slug = request.get("competitionName", "")
        if slug in self.stand_in.rules_not_accepted:
            return self._send_json(403, {"code": 403, "message": "You must accept this competition's rules"})
        if slug not in self.stand_in.competitions and slug not in self.stand_in.submissions:
            return self._send_json(404, {"code": 404, "message": f"Competition {slug} not found"})
        handler = getattr(self, f"_api_{method}", None)
        if handler is None:
            return self._send_json(404, {"code": 404, "message": f"stand-in does not implement {self.path}"})
        handler(slug, request)

    def _api_DownloadDataFiles(self, slug, request):
        if self.stand_in.competitions.get(slug) is None:
            return self._send_json(404, {"code": 404, "message": "This competition has no data"})
        self._send(302, b"", "text/plain", {"Location": f"/files/{slug}.zip"})

    def _api_StartSubmissionUpload(self, slug, request):
        token = uuid.uuid4().hex
        self.stand_in._pending_uploads[token] = {"slug": slug, "file_name": request.get("fileName", "")}
        host = self.headers.get("Host", f"localhost:{self.stand_in.port}")
        self._send_json(200, {"token": token, "createUrl": f"http://{host}/upload/{token}"})

    def _api_CreateSubmission(self, slug, request):
        pending = self.stand_in._pending_uploads.pop(request.get("blobFileTokens", ""), None)
        if pending is None or "content" not in pending or pending["slug"] != slug:
            return self._send_json(400, {"code": 400, "message": "Unknown or incomplete upload"})
        message = request.get("submissionDescription")
        self.stand_in.uploads.append(Upload(slug, pending["file_name"], pending["content"], message))
        rows = self.stand_in.submissions.setdefault(slug, [])
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        row = {
            "ref": len(self.stand_in.uploads),
            "date": now,
            "fileName": pending["file_name"],
            "status": "PENDING",
        }
        rows.insert(0, {**row, **({"description": message} if message else {})})
        self._send_json(200, {"message": f"Successfully submitted to {slug}", "ref": row["ref"]})

    def _api_ListSubmissions(self, slug, request):
        page, size = int(request.get("page") or 1), int(request.get("pageSize") or 20)
        rows = self.stand_in.submissions.get(slug, [])[(page - 1) * size : page * size]
        # The SDK's JSON reader cannot take null for a typed field; Kaggle omits empty fields instead.
        rows = [{name: value for name, value in row.items() if value is not None} for row in rows]
        self._send_json(200, {"submissions": rows, "nextPageToken": ""})


class _Server(http.server.ThreadingHTTPServer):
    allow_reuse_address = True  # a stand-in stopped a moment ago leaves its port in TIME_WAIT
    daemon_threads = True


class KaggleStandIn:
    """Context manager running the stand-in on 127.0.0.1:7777 in a background thread.

    competitions: {slug: zip bytes (or None for a competition without data)}.
    submissions: {slug: [rows in the API's JSON shape, newest first]}, e.g.
        {"date": "2024-05-01T12:00:00.000Z", "fileName": "a.csv", "description": "first",
         "status": "COMPLETE", "publicScore": "0.91", "privateScore": "0.90"}
    rules_not_accepted: slugs answered with 403 (default: "rules-not-accepted").
    failing_uploads: answer the file upload (PUT) with HTTP 500, as a broken storage backend would.
    Recorded: `.uploads` (list of Upload) and `.requests` (list of (method, path)).

    Port 7777 is fixed by kagglesdk, so concurrent test runs on one machine take turns via a file lock.
    """

    def __init__(
        self,
        competitions=None,
        submissions=None,
        rules_not_accepted=("rules-not-accepted",),
        failing_uploads=False,
        username=STANDIN_USERNAME,
        key=STANDIN_KEY,
        port=STANDIN_PORT,
        lock_timeout=120.0,
    ):
        self.competitions = dict(competitions or {})
        self.submissions = {slug: list(rows) for slug, rows in (submissions or {}).items()}
        self.rules_not_accepted = set(rules_not_accepted)
        self.failing_uploads = failing_uploads
        self.username, self.key, self.port = username, key, port
        self.url = f"http://localhost:{port}"
        self.uploads: list[Upload] = []
        self.requests: list[tuple[str, str]] = []
        self._pending_uploads: dict[str, dict] = {}
        self._lock_timeout = lock_timeout
        self._record_lock = threading.Lock()
        self._server = self._thread = self._lock_file = None

    def _record(self, method: str, path: str) -> None:
        with self._record_lock:
            self.requests.append((method, path))

    def download_count(self, slug: str) -> int:
        """How many times the competition's zip itself was fetched."""
        return self.requests.count(("GET", f"/files/{slug}.zip"))

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
            self._server = _Server(("127.0.0.1", self.port), _Handler)
        except OSError:
            self._lock_file.close()
            raise
        self._server.stand_in = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            self._server = None
        if self._lock_file is not None:
            self._lock_file.close()  # releases the flock
            self._lock_file = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exception_info) -> None:
        self.stop()


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
