"""The official client's calls for a code competition: the packaged run as a private dataset (created, or a
new version), the notebook pushed as a kernel and followed until it ends, its log and outputs, the code
submission; and whether a competition takes notebooks only.

Every failure is a one-line kit.errors.KitError naming what Kaggle said and the fix. The client's own
validation errors (ValueError: a bad slug or title) are reported the same way.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import requests
from tqdm import tqdm

from kit.errors import KitError
from kit.files import atomic_path
from kit.kaggle import answers, client

FINISHED = ("complete", "error", "cancel_acknowledged")  # KernelWorkerStatus names, lower case


class Pushed(NamedTuple):
    ref: str  # owner/slug
    version: int
    url: str


class Finished(NamedTuple):
    status: str  # "complete", "error", "cancel_acknowledged" or "timeout"
    failure: str  # Kaggle's failure message, when it gives one


@contextlib.contextmanager
def _reported(what: str, fix: str) -> Iterator[None]:
    """The client's errors while doing `what`, as one line with `fix`; its printing kept off the terminal."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    except requests.HTTPError as error:
        status = error.response.status_code if error.response is not None else "?"
        said = answers.kaggle_message(error)  # Kaggle's own words, never the URL
        if status == 401:
            raise KitError(
                f"Kaggle refused the credentials while {what} (HTTP 401: {said}): create a new "
                "API token at https://www.kaggle.com/settings/api and put it in KAGGLE_API_TOKEN or "
                "~/.kaggle/access_token"
            ) from None
        raise KitError(f"Kaggle: {said} (HTTP {status}) while {what}: {fix}") from None
    except (requests.ConnectionError, requests.Timeout):
        raise KitError(
            f"cannot reach Kaggle while {what} (no network?): check the connection, then {fix}"
        ) from None
    except ValueError as error:  # the client's checks of a folder's metadata
        raise KitError(f"the kaggle client refused {what}: {error}") from None


def username(api) -> str:
    """The user the credentials belong to (token introspection names it; the legacy key states it)."""
    name = api.config_values.get(api.CONFIG_NAME_USER)
    if not name:
        raise KitError("Kaggle did not say whose credentials these are: create a new API token")
    return str(name)


def is_code_competition(slug: str) -> bool | None:
    """True when the competition takes notebook submissions only (GetCompetition); None when unknown."""
    from kagglesdk.competitions.types.competition_api_service import ApiGetCompetitionRequest

    try:
        api = client.authenticated_api()
    except KitError:  # no credentials: `kit new --from-raw` works offline
        return None
    request = ApiGetCompetitionRequest()
    request.competition_name = slug
    try:
        with api.build_kaggle_client() as kaggle:
            competition = kaggle.competitions.competition_api_client.get_competition(request)
    except (requests.RequestException, ValueError):
        return None
    return bool(competition.is_kernels_submissions_only)


def dataset_exists(api, dataset_id: str) -> bool:
    """Whether the dataset is there (GetDatasetStatus answers 404 when it is not)."""
    with _reported(f"asking for the dataset {dataset_id}", "retry"):
        try:
            api.dataset_status(dataset_id)
        except requests.HTTPError as error:
            if error.response is not None and error.response.status_code == 404:
                return False
            raise
    return True


def publish_dataset(api, folder: Path, dataset_id: str, notes: str, delete_old_versions: bool = False) -> str:
    """Upload the package folder as the private dataset `dataset_id`: created, or a new version of it.

    Returns "created" or "new version". The version keeps no older files (each upload is the whole run);
    with `delete_old_versions`, Kaggle deletes the dataset's earlier versions (each holds a whole run).
    """
    exists = dataset_exists(api, dataset_id)
    what = f"uploading the dataset {dataset_id}"
    with _reported(what, "run `kit notebook` again"):
        if exists:
            response = api.dataset_create_version(
                str(folder), notes, quiet=True, dir_mode="skip", delete_old_versions=delete_old_versions
            )
        else:
            response = api.dataset_create_new(str(folder), public=False, quiet=True, dir_mode="skip")
    if response is None or (response.error or "") or (response.status or "").lower() not in ("ok", ""):
        said = (response.error if response is not None else "") or "no answer"
        raise KitError(f"Kaggle refused {what}: {said}")
    return "new version" if exists else "created"


def wait_for_dataset(api, dataset_id: str, poll_seconds: float, timeout_seconds: float) -> None:
    """Wait until Kaggle has processed the upload (status ready), so the notebook mounts this version."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        with _reported(f"asking for the dataset {dataset_id}", "retry"):
            status = api.dataset_status(dataset_id)
        if status == "ready":
            return
        if status in ("failed", "deleted"):
            raise KitError(
                f"Kaggle could not process the dataset {dataset_id} (status {status}): "
                "run `kit notebook` again"
            )
        if time.monotonic() > deadline:
            raise KitError(
                f"the dataset {dataset_id} is still {status} after {timeout_seconds / 60:.0f} min: run "
                "`kit notebook` again later"
            )
        time.sleep(poll_seconds)


def push_kernel(api, folder: Path) -> Pushed:
    """Push the kernel folder (notebook, kernel-metadata.json): a new version, which Kaggle starts running."""
    metadata = json.loads((folder / "kernel-metadata.json").read_text())
    what = f"pushing the notebook {metadata['id']}"
    with _reported(what, "run `kit notebook` again"):
        response = api.kernels_push(str(folder))
    if response is None or response.error:
        raise KitError(f"Kaggle refused {what}: {response.error if response else 'no answer'}")
    invalid = [*response.invalid_dataset_sources, *response.invalid_competition_sources]
    if invalid:
        raise KitError(
            f"Kaggle did not attach {', '.join(invalid)} to {metadata['id']}: join the competition and check "
            "the dataset exists, then run `kit notebook` again"
        )
    if not response.version_number:
        raise KitError(f"Kaggle gave no version number {what}: run `kit notebook` again")
    # The kernel's id is the metadata's owner/slug (the answer's ref is a path such as /code/owner/slug).
    return Pushed(metadata["id"], int(response.version_number), response.url or "")


def wait_for_kernel(api, pushed: Pushed, poll_seconds: float, timeout_seconds: float) -> Finished:
    """Ask for the notebook's status every poll_seconds, on one progress line, until it ends or times out."""
    started = time.monotonic()
    with tqdm(
        total=None, bar_format="{desc} [{elapsed}]", desc=f"notebook {pushed.ref} v{pushed.version}: queued"
    ) as line:
        while True:
            with _reported(f"asking for the status of {pushed.ref}", "follow it on Kaggle"):
                answer = api.kernels_status(f"{pushed.ref}/{pushed.version}")
            status = answer.status.name.lower() if answer.status is not None else "unknown"
            line.set_description_str(f"notebook {pushed.ref} v{pushed.version}: {status.replace('_', ' ')}")
            if status in FINISHED:
                return Finished(status, answer.failure_message or "")
            if time.monotonic() - started > timeout_seconds:
                return Finished("timeout", f"still {status} after {timeout_seconds / 60:.0f} min")
            time.sleep(poll_seconds)


def kernel_output(api, pushed: Pushed, destination: Path) -> tuple[list[Path], str]:
    """Download the notebook's output files into destination; return them and its log as plain text.

    Kaggle's log is a JSON list of {"stream_name", "time", "data"}; its `data` parts are joined.
    """
    destination.mkdir(parents=True, exist_ok=True)
    with _reported(f"downloading the output of {pushed.ref}", "look at it on Kaggle"):
        files, _ = api.kernels_output(
            f"{pushed.ref}/{pushed.version}", str(destination), force=True, quiet=True
        )
    log_path = destination / f"{pushed.ref.split('/')[1]}.log"
    text = log_path.read_text(errors="replace") if log_path.is_file() else ""
    try:
        entries = json.loads(text)
        text = "".join(str(entry.get("data", "")) for entry in entries if isinstance(entry, dict))
    except (ValueError, AttributeError):
        pass
    return [Path(path) for path in files if Path(path) != log_path], text


def require_code_submission_possible(api, slug: str) -> None:
    """Before anything is built: the competition takes notebooks, you have joined it (its rules accepted)
    and a submission is left today; else one line with the fix, and nothing is built or pushed."""
    from kagglesdk.competitions.types.competition_api_service import ApiGetCompetitionRequest

    request = ApiGetCompetitionRequest()
    request.competition_name = slug
    with client.translate_errors(slug, api), api.build_kaggle_client() as kaggle:
        service = kaggle.competitions.competition_api_client
        competition = answers.with_retries(lambda: service.get_competition(request))
    if not competition.is_kernels_submissions_only:
        raise KitError(
            f"{slug} takes submission files, not notebooks: submit with `kit submit`; nothing was built"
        )
    if competition.submissions_disabled:
        raise KitError(f"{slug} takes no submissions now (closed?); nothing was built")
    if not competition.user_has_entered:
        raise KitError(
            f"you have not joined {slug}: accept its rules at {answers.RULES_URL.format(slug=slug)} (Join "
            f"Competition, with your phone verified at {answers.PHONE_URL}), then retry; nothing was built"
        )
    client.require_submissions_left(api, slug)  # also says what Kaggle answers for rules not accepted


@contextlib.contextmanager
def _maybe_received() -> Iterator[None]:
    """A 5xx may come after Kaggle created the submission: say so rather than "retry"."""
    try:
        yield
    except requests.HTTPError as error:
        if (answers.status_of(error) or 0) < 500:
            raise
        raise KitError(
            f"Kaggle: {answers.describe(error)}; it may have taken the submission: `kit ledger` shows "
            "whether it did"
        ) from None


def submit_code(api, slug: str, pushed: Pushed, file_name: str, message: str, kept: str = "") -> None:
    """The code submission: the competition scores `file_name` of this kernel version. A refusal names
    Kaggle's reason and fix, and `kept`: how to submit the kept output later without running it again."""
    try:
        with contextlib.redirect_stdout(io.StringIO()), client.translate_errors(slug, api), _maybe_received():
            response = api.competition_submit_code(
                file_name,
                message,
                competition=slug,
                kernel=pushed.ref,
                kernel_version=pushed.version,
                quiet=True,
            )
    except KitError as error:
        where = f"submitting {pushed.ref} v{pushed.version} to {slug}"
        raise KitError(f"{where}: {error.message}" + (f"; {kept}" if kept else "")) from None
    if response is None:
        raise KitError(f"Kaggle did not answer the submission of {pushed.ref}: check `kit ledger`")


RECORD = "pushed.json"  # in runs/<comp>/<run>/kaggle: the notebook version that ran, for --submit-only


def record_pushed(base: Path, pushed: Pushed) -> None:
    """Remember the notebook version whose output was fetched and checked, so it can be submitted later."""
    with atomic_path(base / RECORD) as temporary:
        temporary.write_text(json.dumps(pushed._asdict(), indent=1) + "\n")


def recorded_pushed(base: Path, submit_only_hint: str) -> Pushed:
    """The notebook version record_pushed kept, or one line saying to run the notebook first."""
    path = base / RECORD
    try:
        values = json.loads(path.read_text())
        return Pushed(str(values["ref"]), int(values["version"]), str(values.get("url", "")))
    except FileNotFoundError:
        raise KitError(
            f"no notebook of this run has completed ({path} missing): {submit_only_hint}"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise KitError(f"{path} is damaged ({error}): {submit_only_hint}") from None


def last_lines(text: str, count: int = 20) -> list[str]:
    return [line for line in text.splitlines() if line.strip()][-count:]
