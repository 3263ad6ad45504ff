"""The stand-in's datasets, blobs, kernels and code submissions (issue 12: `kit notebook`). Each request body
is read with kagglesdk's own request type (a field the type does not know is refused, as Kaggle refuses it)
and each answer is built with its response type, so the JSON is what the client reads in production.
See kaggle_standin.py.
"""

from __future__ import annotations

import json
from typing import NamedTuple

from kaggle_standin_server import DAILY_LIMIT_MESSAGE, Call, KaggleError, _now, _strip_empty, _timestamp, api


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


def notebooks(stand_in) -> Notebooks:
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


def _uploaded_files(stand_in, files) -> dict:
    """{file name: bytes} of the blob tokens a dataset request names; an unknown or unfinished one: 400."""
    state, result = notebooks(stand_in), {}
    for new_file in files:
        token = new_file.token
        if token not in state.blob_names or token not in stand_in.uploaded:
            raise KaggleError(400, f"Invalid blob token {token!r}: upload the file first")
        result[state.blob_names.pop(token)] = stand_in.uploaded.pop(token)
        stand_in._pending_uploads.pop(token, None)
    return result


def _own_dataset(stand_in, call: Call, owner: str, slug: str) -> Dataset:
    dataset = notebooks(stand_in).datasets.get(f"{owner}/{slug}")
    if dataset is None or (dataset.is_private and call.user != owner):
        raise KaggleError(404, "Not found")
    return dataset


@api("blobs.BlobApiService", "StartBlobUpload")
def _start_blob_upload(stand_in, call: Call) -> dict:
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
def _get_dataset_status(stand_in, call: Call) -> dict:
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
def _create_dataset(stand_in, call: Call) -> dict:
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
def _create_dataset_version(stand_in, call: Call) -> dict:
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
def _save_kernel(stand_in, call: Call) -> dict:
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


def _kernel_version(stand_in, call: Call, owner: str, slug: str, label: str | None):
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


def _kernel_status(stand_in, kernel: str, version: int, count: bool) -> str:
    state = notebooks(stand_in)
    polls = state.kernel_polls.get((kernel, version), 0)
    if count:
        state.kernel_polls[(kernel, version)] = polls + 1
    if polls == 0:
        return "QUEUED"
    return "RUNNING" if polls <= state.running_polls else state.outcome


@api("kernels.KernelsApiService", "GetKernelSessionStatus")
def _get_kernel_session_status(stand_in, call: Call) -> dict:
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
def _list_kernel_session_output(stand_in, call: Call) -> dict:
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
def _create_code_submission(stand_in, call: Call) -> dict:
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
