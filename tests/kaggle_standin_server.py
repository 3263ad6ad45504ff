"""The stand-in's two servers (Kaggle's API and the storage host of signed links), the types they share and
the registry of API handlers. See kaggle_standin.py for what it stands in for and how to use it.
"""

from __future__ import annotations

import base64
import datetime
import email.utils
import hashlib
import http.server
import io
import json
import socket
import sys
import time
import urllib.parse
import zipfile
from pathlib import Path
from typing import NamedTuple

STANDIN_USERNAME = "kit-test-user"
STANDIN_KEY = "kit-test-key-0123456789abcdef"  # legacy key; distinctive, so tests can assert it never leaks
STANDIN_TOKEN = "KGAT_5f0c2d9e8b7a41c3a6e2f0d4b9c81e77"  # an API token as the settings page issues them
STORAGE_HOST = "127.0.0.1"  # another host name than the API's "localhost": requests drops auth on redirect
DEFAULT_DAILY_LIMIT = 5  # Kaggle's usual maxDailySubmissions
# Storage faults: "drop" cuts the body; "expired" is GCS's 403 ExpiredToken, "expired-400" the same body
# with 400 (as GCS answers some expired signatures); "forbidden" a 403 AccessDenied.
FAULT_KINDS = ("429", "500", "503", "drop", "expired", "expired-400", "forbidden")
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
ACCESS_DENIED_BODY = (
    b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>AccessDenied</Code><Message>Access denied."
    b"</Message></Error>"
)


class Upload(NamedTuple):
    """One submission the stand-in received: what was uploaded and the message it came with."""

    slug: str
    file_name: str
    content: bytes
    message: str | None


class Request(NamedTuple):
    """One request either server received. `auth` is "Bearer", "Basic" or None; `range` the Range header."""

    server: str  # "api" or "storage": which server, so which host, the request went to
    method: str
    path: str  # without the query string (which carries the signature)
    auth: str | None
    range: str | None
    host: str = ""  # its Host header ("localhost:7777", "127.0.0.1:40123")


class Fault(NamedTuple):
    target: str  # "storage", "api", or an API method name
    kind: str  # one of FAULT_KINDS
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


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _timestamp(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _strip_empty(row: dict) -> dict:
    """The SDK's JSON reader cannot take null for a typed field; Kaggle omits empty fields instead."""
    return {name: value for name, value in row.items() if value is not None}


def point_production_at(url: str) -> str:
    """Make kagglesdk's PROD endpoint `url` (its own table, read by get_endpoint); returns the one before."""
    from kagglesdk.kaggle_env import KaggleEnv, _env_to_endpoint

    before = _env_to_endpoint[KaggleEnv.PROD]
    _env_to_endpoint[KaggleEnv.PROD] = url
    return before


_RUNNER = (
    "import sys; sys.path.insert(0, sys.argv[1]); import kaggle_standin; "
    "sys.argv[2] and kaggle_standin.point_production_at(sys.argv[2]); "
    "from kit.cli import main; sys.argv = ['kit', *sys.argv[3:]]; main()"
)


def kit_command(stand_in, *arguments) -> list[str]:
    """The command line of a `kit` process that talks to this stand-in in its shape (for real concurrency)."""
    endpoint = stand_in.url if stand_in.environment == "PROD" else ""
    return [
        sys.executable,
        "-c",
        _RUNNER,
        str(Path(__file__).resolve().parent),
        endpoint,
        *map(str, arguments),
    ]


def _members(bundle: bytes) -> dict[str, bytes]:
    """The files of a competition bundle; hostile or broken archives (still served as downloads) have none."""
    try:
        with zipfile.ZipFile(io.BytesIO(bundle)) as archive:
            return {info.filename: archive.read(info) for info in archive.infolist() if not info.is_dir()}
    except (zipfile.BadZipFile, OSError, ValueError):
        return {}


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
    def stand_in(self):
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
                self.headers.get("Host", ""),
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
        path = self.path.split("?")[0]
        if not path.startswith(self.stand_in.api_prefix):  # the other environment's URL shape
            self._body()
            return self._send_json(404, {"code": 404, "message": f"Not found: {path}"})
        name = path.removeprefix(self.stand_in.api_prefix)
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
        if expired or (fault is not None and fault.kind in ("expired", "expired-400")):
            body = EXPIRED_LINK_BODY.format(expired=email.utils.formatdate(issued[1], usegmt=True)).encode()
            status = 400 if fault is not None and fault.kind == "expired-400" else 403
            return self._send(status, body, "application/xml")
        if fault is not None and fault.kind == "forbidden":
            return self._send(403, ACCESS_DENIED_BODY, "application/xml")
        if fault is not None and fault.kind in ("429", "500", "503"):
            headers = {"Retry-After": fault.retry_after} if fault.kind == "429" else None
            return self._send(
                int(fault.kind), b"<Error><Code>Backoff</Code></Error>", "application/xml", headers
            )
        content = self.stand_in.blobs[key]
        etag = '"' + hashlib.md5(content).hexdigest() + '"'
        last_modified = email.utils.formatdate(self.stand_in.created, usegmt=True)
        headers = {"Accept-Ranges": "bytes", "Last-Modified": last_modified}
        if self.stand_in.etag:
            headers["ETag"] = etag
        validator = etag if self.stand_in.etag else last_modified
        start, status = 0, 200
        wanted = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        if wanted and (if_range is None or if_range == validator):
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
        if self.stand_in.storage_seconds:  # a slow link: the body in 64 KiB pieces, a pause before each
            for piece in range(0, len(body), 1 << 16):
                time.sleep(self.stand_in.storage_seconds)
                self.wfile.write(body[piece : piece + (1 << 16)])
                self.stand_in._count_bytes(len(body[piece : piece + (1 << 16)]))
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
