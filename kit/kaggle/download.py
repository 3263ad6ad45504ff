"""Competition downloads that survive: resumed across runs, with progress, free-space checks and bounded
retries, then extracted safely into data/raw/<name>.

Kaggle answers a download request with a 302 to a signed link on a storage host, which ignores
credentials (the kit never sends them there) and expires. The kit asks the API for the link without
following it, then streams it itself in ranged requests: the partial archive and its validator (ETag,
size) stay across runs in the hidden sibling `data/raw/.download-<name>` (never inside data/raw/<name>),
and a later run asks for the rest only (`Range` with `If-Range` on the ETag, or on Last-Modified where
storage sends no ETag, so a file that changed starts over rather than being spliced). The archive keeps the
file name of its link. A link storage refuses (400 or 403: expired or not) is replaced by a fresh one once;
429, 5xx and dropped connections are retried with a bounded backoff; a full disk is refused up front (the
archive needs twice its size: once downloaded, once extracted) and, if it fills anyway, reported in one
line with the partial kept. Two downloads of one competition at once take turns (kit.files.exclusive).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import urllib.parse
import zipfile
from collections.abc import Callable
from pathlib import Path

import requests

from kit.errors import KitError
from kit.files import (
    DOWNLOAD_MARKER,
    SINGLE_FILES_NOTE,
    atomic_path,
    download_folder,
    exclusive,
    filling_folder,
    human_size,
    is_disk_full,
    require_fillable,
    single_files,
)
from kit.kaggle import answers, client

MAXIMUM_ZIP_NESTING = 4  # Kaggle nests train.zip inside the bundle; a deeper chain is a zip bomb or a loop
CHUNK_BYTES = 1 << 16  # 64 KiB written at a time: a dropped connection loses at most this much
READ_TIMEOUT = 60  # seconds without a byte before the connection counts as dropped
EXTRACTION_FACTOR = 2  # the archive, then its contents (Kaggle's images do not compress): twice its size
VALIDATORS = (("etag", "ETag"), ("last_modified", "Last-Modified"))  # If-Range takes either; ETag first


def _unsafe_reason(member: zipfile.ZipInfo) -> str | None:
    """Why extracting this member could write outside the destination, or None when it is harmless."""
    name = member.filename.replace("\\", "/")
    if name.startswith("/"):
        return "an absolute path"
    if re.match(r"[A-Za-z]:", name):
        return "a drive letter"
    if ".." in name.split("/"):
        return "a '..' component"
    if stat.S_ISLNK(member.external_attr >> 16):
        return "a symbolic link"
    return None


def safe_extract(zip_path: Path, destination: Path) -> None:
    """Extract zip_path into destination, refusing the whole archive if any member could escape it.

    Every member is checked before anything is written, so a hostile archive leaves no partial output.
    """
    zip_path, destination = Path(zip_path), Path(destination)
    try:
        with zipfile.ZipFile(zip_path) as archive:
            members = archive.infolist()
            for member in members:
                reason = _unsafe_reason(member)
                # A member named like its own archive would truncate the file while it is being read.
                if reason is None and (destination / member.filename).resolve() == zip_path.resolve():
                    reason = "the archive's own name"
                if reason:
                    raise KitError(
                        f"refusing to extract {zip_path.name}: member {member.filename!r} has {reason}"
                    )
            destination.mkdir(parents=True, exist_ok=True)
            for member in members:
                archive.extract(member, destination)
    except zipfile.BadZipFile:
        raise KitError(
            f"{zip_path.name} is not a valid zip archive (truncated download?); delete it and retry"
        ) from None


def _nested_destination(archive: Path) -> Path:
    """Where an archive found inside the download goes, so that train.zip always ends up as train/.

    Kaggle's train.zip usually holds a train/ folder (extract beside it), sometimes loose images
    (extract into train/). A single member (labels.csv.zip) or a single top folder goes beside it too.
    """
    try:
        with zipfile.ZipFile(archive) as opened:
            tops = {
                member.filename.replace("\\", "/").lstrip("/").split("/")[0] for member in opened.infolist()
            }
    except zipfile.BadZipFile:
        return archive.parent  # safe_extract reports it
    return archive.parent if len(tops - {""}) <= 1 else archive.parent / archive.name.removesuffix(".zip")


def _collapse_doubled_folders(folder: Path) -> None:
    """train/train/x.jpg -> train/x.jpg: a folder whose only entry is a same-named folder is one level."""
    for outer in [path for path in folder.iterdir() if path.is_dir()]:
        entries = list(outer.iterdir())
        if len(entries) == 1 and entries[0].is_dir() and entries[0].name == outer.name:
            moved = outer.with_name(f".collapse-{outer.name}")
            os.replace(entries[0], moved)
            outer.rmdir()
            os.replace(moved, outer)


def _extract_archives(folder: Path) -> None:
    """Extract every zip under folder and delete it, repeating for zips found inside (train.zip, test.zip).

    The downloaded bundle is extracted where it lies; archives found inside it go to _nested_destination.
    """
    for level in range(MAXIMUM_ZIP_NESTING):
        archives = sorted(path for path in folder.rglob("*.zip") if path.is_file())
        if not archives:
            _collapse_doubled_folders(folder)
            return
        for archive in archives:
            safe_extract(archive, archive.parent if level == 0 else _nested_destination(archive))
            archive.unlink()
    raise KitError(f"zip archives in {folder.name} nest deeper than {MAXIMUM_ZIP_NESTING} levels")


# Transfers.


def check_free_space(folder: Path, needed: int, what: str) -> None:
    """Refuse in one line when the disk holding `folder` has less than `needed` bytes free."""
    probe = folder
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed:
        raise KitError(
            f"not enough free space for {what}: {human_size(needed)} needed on the disk of {folder}, "
            f"{human_size(free)} free; "
            f"free {human_size(needed - free)} more, then rerun"
        )


def no_redirects(kaggle) -> None:
    """Make the client's session answer a redirect instead of following it (kagglesdk keeps its requests
    session in the private KaggleHttpClient._session: reached through client.private_part)."""
    session = client.private_part(kaggle.http_client(), "_session", requests.Session)
    session.max_redirects = 0


def signed_link(api, slug: str, file_name: str | None = None) -> str:
    """A fresh signed link to the competition's bundle (or one of its files), asked of Kaggle's API.

    kagglesdk follows the redirect itself (and would start streaming the whole file); the session is told
    to follow none, so the 302's Location is read instead and the transfer can start at any byte. A client
    that followed it anyway has the link as the answer's URL: that answer is closed unread.
    """
    from kagglesdk.competitions.types.competition_api_service import (
        ApiDownloadDataFileRequest,
        ApiDownloadDataFilesRequest,
    )

    def ask() -> str:
        with api.build_kaggle_client() as kaggle:
            no_redirects(kaggle)
            service = kaggle.competitions.competition_api_client
            try:
                if file_name is None:
                    request = ApiDownloadDataFilesRequest()
                    request.competition_name = slug
                    response = service.download_data_files(request)
                else:
                    request = ApiDownloadDataFileRequest()
                    request.competition_name, request.file_name = slug, file_name
                    response = service.download_data_file(request)
            except requests.TooManyRedirects as redirect:
                return redirect.response.headers["Location"]
            response.close()
            if getattr(response, "history", None) and response.url:
                return response.url
            raise KitError(
                f"Kaggle answered the download of {slug} with HTTP {response.status_code} instead of a link; "
                "retry later"
            )

    with client.translate_errors(slug, api):
        try:
            return answers.with_retries(ask)
        except requests.HTTPError as error:
            if file_name is None or answers.status_of(error) != 404:
                raise
            raise KitError(
                f"Kaggle: {answers.kaggle_message(error)} (HTTP 404): no file {file_name!r} in {slug}; "
                "`kit files` lists its files"
            ) from None


def served_name(url: str, fallback: str) -> str:
    """The file name at the end of a signed link's path (`train.csv.zip`), made safe; else `fallback`."""
    name = urllib.parse.unquote(urllib.parse.urlsplit(url).path).rsplit("/", 1)[-1]
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".")
    return name or fallback


def _read_state(state_file: Path) -> dict:
    try:
        state = json.loads(state_file.read_text())
        return state if isinstance(state, dict) else {}
    except (OSError, ValueError):
        return {}


def _total_size(response: requests.Response, offset: int) -> int | None:
    content_range = response.headers.get("Content-Range", "")
    if response.status_code == 206 and "/" in content_range and not content_range.endswith("*"):
        return int(content_range.rsplit("/", 1)[1])
    length = response.headers.get("Content-Length")
    return int(length) + (offset if response.status_code == 206 else 0) if length else None


def fetch(
    link: Callable[[], str], target: Path, describe: str, on_retry=lambda line: None, room: int = 1
) -> int:
    """Fill `target` from the signed link `link()` gives, resuming what an earlier run left there.

    Returns the file's size. Before any byte is written, the disk must have `room` times the file's size
    free (less what is there already): 2 for an archive that will be extracted beside itself. `target`
    lives in the hidden download folder; its validator (ETag, else Last-Modified) is kept beside it in
    `<target>.json` until the file is complete. A link storage refuses is replaced by a fresh one once
    (again after each answer that sent bytes).
    """
    state_file = target.with_name(target.name + ".json")
    url = link()
    failures, refreshed = 0, False
    while True:
        offset = target.stat().st_size if target.exists() else 0
        state = _read_state(state_file)
        headers = {}
        validator = state.get("etag") or state.get("last_modified")
        if offset and validator:
            headers = {"Range": f"bytes={offset}-", "If-Range": validator}
            if state.get("size") == offset:
                state_file.unlink(missing_ok=True)
                return offset
        try:
            # No Kaggle credentials go to the storage host: the signature is the authorisation.
            with requests.get(url, headers=headers, stream=True, timeout=READ_TIMEOUT) as response:
                if response.status_code == 416:  # the partial is longer than the file: start over
                    target.unlink()
                    continue
                if not response.ok:
                    response.content  # noqa: B018 - read the error body while the connection is open
                response.raise_for_status()
                if response.status_code != 206:
                    offset = 0  # a full answer: the file changed (If-Range) or ranges are not served
                size = _total_size(response, offset)
                refreshed = False  # storage took this link: a later refusal earns one fresh link again
                validators = {name: response.headers.get(header) for name, header in VALIDATORS}
                state_file.write_text(json.dumps({**validators, "size": size}))
                if size is not None:
                    what = f"downloading {describe}" + (
                        f" (its size × {room}: to extract it)" if room > 1 else ""
                    )
                    check_free_space(target.parent, room * size - offset, what)
                _stream(response, target, offset, size, describe)
            if size is not None and target.stat().st_size != size:
                raise requests.exceptions.ChunkedEncodingError("the transfer ended early")
            state_file.unlink(missing_ok=True)
            return target.stat().st_size
        except requests.HTTPError as error:
            status = error.response.status_code if error.response is not None else None
            if status in (400, 401, 403) and not refreshed:  # expired or refused: a new link, once
                on_retry(
                    f"the download link was refused (HTTP {status}: {answers.kaggle_message(error)}): "
                    "asking Kaggle for a fresh one"
                )
                url, refreshed = link(), True
                continue
            failures += 1
            if not answers.retryable(error) or failures >= answers.RETRY_ATTEMPTS:
                raise KitError(answers.error_message(error, None) + _kept(target)) from None
            _pause(error, failures, on_retry)
        except (
            requests.ConnectionError,
            requests.Timeout,
            requests.exceptions.ChunkedEncodingError,
        ) as error:
            failures += 1
            if answers.never_connected(error):
                raise KitError(
                    f"cannot reach the download host for {describe} (no network?): check your connection, "
                    f"then run it again{_kept(target)}"
                ) from None
            if failures >= answers.RETRY_ATTEMPTS:
                raise KitError(
                    f"the download of {describe} stopped: the connection dropped {failures} times"
                    f"{_kept(target)}"
                ) from None
            _pause(error, failures, on_retry)
        except OSError as error:
            if not is_disk_full(error):
                raise
            raise KitError(
                f"the disk filled up while writing {target.name} for {describe}: free space on the disk of "
                f"{target.parent}, then rerun{_kept(target)}"
            ) from None


def _kept(target: Path) -> str:
    if target.exists() and target.stat().st_size:
        return f"; {human_size(target.stat().st_size)} kept in {target.parent}: run it again to resume"
    return ""


def _pause(error: Exception, attempt: int, on_retry) -> None:
    seconds = answers.wait_before_retry(error, attempt)
    on_retry(f"download interrupted; retrying in {seconds:.0f} s ({attempt}/{answers.RETRY_ATTEMPTS - 1})")
    answers.pause(seconds)


def _stream(response: requests.Response, target: Path, offset: int, size: int | None, describe: str) -> None:
    from tqdm import tqdm

    with (
        open(target, "ab" if offset else "wb") as handle,
        tqdm(
            total=size,
            initial=offset,
            unit="B",
            unit_scale=True,
            unit_divisor=1000,
            desc=describe,
            leave=False,
        ) as bar,
    ):
        for chunk in response.iter_content(CHUNK_BYTES):
            handle.write(chunk)
            bar.update(len(chunk))


# What the commands call.


def download_lock(raw_dir: Path) -> Path:
    """What downloads of data/raw/<name> take turns on: data/interim/<name>/download (its `.download.lock`
    stays there, rebuildable state, rather than in data/raw, which holds only what was downloaded)."""
    return raw_dir.parent.parent / "interim" / raw_dir.name / "download"


def _place(archive: Path, folder: Path) -> Path:
    """A second name for `archive` inside `folder` (a hard link: no space, and the original stays put
    until extraction has succeeded); a copy where links are not possible."""
    placed = folder / archive.name
    try:
        os.link(archive, placed)
    except OSError:
        shutil.copy2(archive, placed)
    return placed


def download_competition(slug: str, raw_dir: Path, warn: Callable[[str], None] = lambda line: None) -> bool:
    """Download the competition's bundle (resuming an earlier try) and extract it into raw_dir; return False
    if it is there already.

    The archive, named as its link names it, is kept in the hidden download folder until its contents are
    in place; the contents are extracted into a second hidden sibling renamed onto raw_dir only once
    complete (marker written last), so an interrupted run never leaves a half-filled raw_dir. A second
    download of the same competition meanwhile waits for the first, then finds it done.
    """
    raw_dir = Path(raw_dir)
    if (raw_dir / DOWNLOAD_MARKER).is_file():
        return False
    api = client.authenticated_api(warn)  # missing credentials stop here, before the lock file is made
    with exclusive(download_lock(raw_dir)):
        if (raw_dir / DOWNLOAD_MARKER).is_file():  # another kit download finished it while this one waited
            return False
        return _download_competition(api, slug, raw_dir, warn)


def _download_competition(api, slug: str, raw_dir: Path, warn: Callable[[str], None]) -> bool:
    require_fillable(raw_dir)  # before spending the download on a folder that will be refused
    folder = download_folder(raw_dir)
    links = [signed_link(api, slug)]  # the first link names the file; later ones (refreshes) are asked anew

    def link() -> str:
        return links.pop() if links else signed_link(api, slug)

    archive = folder / served_name(links[0], f"{slug}.zip")
    size = fetch(link, archive, archive.name, warn, room=EXTRACTION_FACTOR)
    check_free_space(raw_dir.parent, size, f"extracting {archive.name}")  # the archive is there: once more
    try:
        with filling_folder(raw_dir, slug) as partial:
            _extract_archives(_place(archive, partial).parent)
    except OSError as error:
        if not is_disk_full(error):
            raise
        raise KitError(
            f"the disk filled up while extracting {archive.name} into {raw_dir}: "
            f"free {human_size(size)} more, "
            f"then rerun (the archive is kept in {folder})"
        ) from None
    except KitError:
        shutil.rmtree(folder, ignore_errors=True)  # a broken or hostile archive is no use to a later run
        raise
    shutil.rmtree(folder, ignore_errors=True)
    return True


def download_file(
    slug: str, name: str, raw_dir: Path, warn: Callable[[str], None] = lambda line: None
) -> Path:
    """One file of the competition into raw_dir/<name> (resumable like the whole download); returns its path.

    Kaggle serves a large file zipped (`<name>.zip`, a single member): it is unwrapped. The file is listed
    in raw_dir's single-files note, so a later whole download may replace the folder.
    """
    raw_dir = Path(raw_dir)
    destination = raw_dir / name
    if not destination.resolve().is_relative_to(raw_dir.resolve()) or name.endswith("/"):
        raise KitError(f"--file {name!r}: name a file of the competition, as `kit files` lists it")
    _require_not_downloaded(raw_dir, destination, name)
    if (raw_dir / DOWNLOAD_MARKER).is_file():
        return destination  # the whole download holds it already: no need to ask Kaggle
    api = client.authenticated_api(warn)
    with exclusive(download_lock(raw_dir)):  # the hidden download folder is shared with any other download
        return _download_file(api, slug, name, raw_dir, destination, warn)


def _require_not_downloaded(raw_dir: Path, destination: Path, name: str) -> None:
    if (raw_dir / DOWNLOAD_MARKER).is_file() and not destination.is_file():
        raise KitError(
            f"{raw_dir} holds the whole download, without a file {name} (its zips are extracted): "
            "nothing fetched"
        )


def _download_file(api, slug: str, name: str, raw_dir: Path, destination: Path, warn) -> Path:
    if (raw_dir / DOWNLOAD_MARKER).is_file():  # the whole download holds it (finished while this waited)
        _require_not_downloaded(raw_dir, destination, name)
        return destination
    require_fillable(raw_dir)
    url_holder: dict[str, str] = {}

    def link() -> str:
        url_holder["url"] = signed_link(api, slug, name)
        return url_holder["url"]

    folder = download_folder(raw_dir) / "files"
    folder.mkdir(exist_ok=True)
    fetched = folder / re.sub(r"[^A-Za-z0-9._-]", "_", name)
    try:
        fetch(link, fetched, name, warn)
    except KitError:
        if not any(folder.iterdir()):
            shutil.rmtree(folder.parent, ignore_errors=True)  # nothing fetched: leave no empty folders
        raise
    served_as = url_holder["url"].split("?")[0].rsplit("/", 1)[-1]
    destination.parent.mkdir(parents=True, exist_ok=True)
    wrapped = served_as == Path(name).name + ".zip" and zipfile.is_zipfile(fetched)
    if wrapped and len(zipfile.ZipFile(fetched).infolist()) == 1:
        with (
            zipfile.ZipFile(fetched) as wrapper,
            wrapper.open(wrapper.infolist()[0]) as source,
            atomic_path(destination) as temporary,
            open(temporary, "wb") as unwrapped,
        ):
            shutil.copyfileobj(source, unwrapped)
        fetched.unlink()
    else:
        os.replace(fetched, destination)
    with atomic_path(raw_dir / SINGLE_FILES_NOTE) as temporary:
        temporary.write_text("\n".join(sorted(single_files(raw_dir) | {name})) + "\n")
    shutil.rmtree(folder.parent, ignore_errors=True)
    return destination
