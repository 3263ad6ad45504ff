"""Thin wrapper over the official `kaggle` client: download competition data, submit, list submissions.

Every failure the user can fix (no credentials, rules not accepted, wrong slug, no network, hostile zip)
surfaces as a one-line `click.ClickException`, so the CLI prints a fix instead of a traceback.
The API key is never put into any message, and the client's verbose mode (which prints the
Authorization header) is never switched on.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import pathlib
import re
import stat
import zipfile

import click
import requests

from kit.files import DOWNLOAD_MARKER, filling_folder

MAXIMUM_ZIP_NESTING = 4  # Kaggle nests train.zip inside the bundle; a deeper chain is a zip bomb or a loop
SUBMISSIONS_PAGE_SIZE = 20  # the official client's own default, so every server honours it
MAXIMUM_SUBMISSION_PAGES = 50

CREDENTIALS_HELP = (
    "no Kaggle credentials found: put your API token in ~/.kaggle/kaggle.json (from "
    "https://www.kaggle.com/settings/api) or set KAGGLE_USERNAME and KAGGLE_KEY, or KAGGLE_API_TOKEN"
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
    with contextlib.redirect_stdout(io.StringIO()):
        from kaggle.api.kaggle_api_extended import KaggleApi
    from kagglesdk.kaggle_client import KaggleClient
    from kagglesdk.kaggle_env import get_env

    class EnvironmentAwareKaggleApi(KaggleApi):
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


@contextlib.contextmanager
def _translate_errors(slug: str | None):
    """Turn the client's requests exceptions into one-line ClickExceptions that name the fix."""
    try:
        yield
    except requests.HTTPError as error:
        status = getattr(error.response, "status_code", None)
        if status == 401:
            raise click.ClickException(
                "Kaggle rejected your credentials (HTTP 401): regenerate the token at "
                "https://www.kaggle.com/settings/api and update ~/.kaggle/kaggle.json "
                "or KAGGLE_USERNAME/KAGGLE_KEY"
            ) from None
        if status == 403 and slug:
            raise click.ClickException(
                f"you have not accepted the rules of {slug}: open "
                f"https://www.kaggle.com/competitions/{slug}/rules, accept them, then retry"
            ) from None
        if status == 404 and slug:
            raise click.ClickException(
                f"unknown competition '{slug}' (HTTP 404): check the slug in the competition's URL, "
                "https://www.kaggle.com/competitions/<slug>"
            ) from None
        raise click.ClickException(
            f"Kaggle answered HTTP {status} for {slug or 'authentication'}; retry later"
        ) from None
    except (requests.ConnectionError, requests.Timeout):
        raise click.ClickException(
            "cannot reach Kaggle (no network?): check your connection, proxy or firewall, then retry"
        ) from None


def authenticated_api():
    """Return an authenticated official KaggleApi, or raise a one-line ClickException saying how to log in."""
    api = _api_class()()
    # KaggleApi reads KAGGLE_CONFIG_DIR once, when its module is first imported; re-read it so a
    # later change (a test, a wrapper script) is honoured and no stale ~/.kaggle is consulted.
    config_directory = os.environ.get("KAGGLE_CONFIG_DIR")
    if config_directory:
        api.config_dir = config_directory
        api.config = os.path.join(config_directory, api.config_file)
    try:
        # authenticate() prints a multi-line banner and calls exit(1) when nothing is configured.
        with _translate_errors(None), contextlib.redirect_stdout(io.StringIO()):
            api.authenticate()
    except SystemExit:
        raise click.ClickException(CREDENTIALS_HELP) from None
    return api


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


def safe_extract(zip_path: pathlib.Path, destination: pathlib.Path) -> None:
    """Extract zip_path into destination, refusing the whole archive if any member could escape it.

    Every member is checked before anything is written, so a hostile archive leaves no partial output.
    """
    zip_path, destination = pathlib.Path(zip_path), pathlib.Path(destination)
    try:
        with zipfile.ZipFile(zip_path) as archive:
            members = archive.infolist()
            for member in members:
                reason = _unsafe_reason(member)
                # A member named like its own archive would truncate the file while it is being read.
                if reason is None and (destination / member.filename).resolve() == zip_path.resolve():
                    reason = "the archive's own name"
                if reason:
                    raise click.ClickException(
                        f"refusing to extract {zip_path.name}: member {member.filename!r} has {reason}"
                    )
            destination.mkdir(parents=True, exist_ok=True)
            for member in members:
                archive.extract(member, destination)
    except zipfile.BadZipFile:
        raise click.ClickException(
            f"{zip_path.name} is not a valid zip archive (truncated download?); delete it and retry"
        ) from None


def _nested_destination(archive: pathlib.Path) -> pathlib.Path:
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


def _collapse_doubled_folders(folder: pathlib.Path) -> None:
    """train/train/x.jpg -> train/x.jpg: a folder whose only entry is a same-named folder is one level."""
    for outer in [path for path in folder.iterdir() if path.is_dir()]:
        entries = list(outer.iterdir())
        if len(entries) == 1 and entries[0].is_dir() and entries[0].name == outer.name:
            moved = outer.with_name(f".collapse-{outer.name}")
            os.replace(entries[0], moved)
            outer.rmdir()
            os.replace(moved, outer)


def _extract_archives(folder: pathlib.Path) -> None:
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
    raise click.ClickException(f"zip archives in {folder.name} nest deeper than {MAXIMUM_ZIP_NESTING} levels")


def download_competition(slug: str, raw_dir: pathlib.Path) -> bool:
    """Download and extract the competition's files into raw_dir; return False if already there.

    The download happens in a hidden sibling folder which is renamed onto raw_dir only once complete
    (marker written last), so an interrupted run never leaves a half-filled raw_dir: the next run
    discards the leftover partial folder and starts over.
    """
    raw_dir = pathlib.Path(raw_dir)
    if (raw_dir / DOWNLOAD_MARKER).is_file():
        return False
    with filling_folder(raw_dir, slug) as partial:
        api = authenticated_api()
        with _translate_errors(slug):
            api.competition_download_files(slug, path=str(partial), force=True, quiet=True)
        _extract_archives(partial)
    return True


def submit(slug: str, csv_path: pathlib.Path, message: str) -> None:
    """Upload csv_path as a submission to the competition, described by message."""
    csv_path = pathlib.Path(csv_path)
    if not csv_path.is_file():
        raise click.ClickException(f"submission file not found: {csv_path}")
    api = authenticated_api()
    # The upload step prints its own errors and reports failure only through the response message.
    with _translate_errors(slug), contextlib.redirect_stdout(io.StringIO()):
        response = api.competition_submit(str(csv_path), message, slug, quiet=True)
    if response is None or response.message == api.COMPETITION_SUBMIT_UPLOAD_FAILED_MESSAGE:
        raise click.ClickException(f"uploading {csv_path.name} to {slug} failed; retry the submission")


def _text_or_none(value) -> str | None:
    """Empty strings mean "no value" in the API's JSON; give callers None instead."""
    return None if value in (None, "") else str(value)


def list_submissions(slug: str) -> list[dict]:
    """The competition's submissions, newest first, as plain dicts of strings (or None)."""
    api = authenticated_api()
    rows: list[dict] = []
    for page in range(1, MAXIMUM_SUBMISSION_PAGES + 1):
        with _translate_errors(slug):
            submissions = api.competition_submissions(slug, page_number=page, page_size=SUBMISSIONS_PAGE_SIZE)
        submissions = [submission for submission in submissions or [] if submission is not None]
        for submission in submissions:
            rows.append(
                {
                    "date": submission.date.isoformat() if submission.date else None,
                    "file_name": _text_or_none(submission.file_name),
                    "description": _text_or_none(submission.description),
                    "status": submission.status.name.lower() if submission.status is not None else None,
                    "public_score": _text_or_none(submission.public_score),
                    "private_score": _text_or_none(submission.private_score),
                }
            )
        if len(submissions) < SUBMISSIONS_PAGE_SIZE:
            break
    return rows
