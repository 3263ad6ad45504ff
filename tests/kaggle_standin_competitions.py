"""The stand-in's competition calls (competitions.CompetitionApiService, token introspection) and the
bundles it serves. See kaggle_standin.py.
"""

from __future__ import annotations

import datetime
import io
import random
import time
import zipfile

from kaggle_standin_server import (
    DAILY_LIMIT_MESSAGE,
    NOTEBOOK_ONLY_MESSAGE,
    Call,
    KaggleError,
    Upload,
    _members,
    _now,
    _strip_empty,
    _timestamp,
    api,
)

# Kaggle's API, one handler per call, named as kagglesdk names them.


@api("security.OAuthService", "IntrospectToken", needs_auth=False)
def _introspect_token(stand_in, call: Call) -> dict:
    username = stand_in.tokens.get(call.body.get("token", ""))
    if username is None:
        return {"active": False}
    expiry = int(time.time()) + 3600
    return {"active": True, "username": username, "userId": 1, "scope": "resources.admin:*", "exp": expiry}


@api("competitions.CompetitionApiService", "GetCompetition")
def _get_competition(stand_in, call: Call) -> dict:
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
def _list_data_files(stand_in, call: Call) -> dict:
    stand_in.check_competition(call.slug)
    bundle = stand_in.competitions.get(call.slug)
    files = [
        {"ref": name, "name": name, "totalBytes": len(content), "creationDate": _timestamp(_now())}
        for name, content in _members(bundle or b"").items()
    ]
    rows, next_token = stand_in.page(files, call.body)
    return _strip_empty({"files": rows, "nextPageToken": next_token or None})


@api("competitions.CompetitionApiService", "DownloadDataFiles")
def _download_data_files(stand_in, call: Call):
    stand_in.check_competition(call.slug)
    if stand_in.competitions.get(call.slug) is None:
        raise KaggleError(404, "This competition has no data")
    return 302, {"Location": stand_in.signed_url(stand_in.bundle_key(call.slug))}


@api("competitions.CompetitionApiService", "DownloadDataFile")
def _download_data_file(stand_in, call: Call):
    stand_in.check_competition(call.slug)
    key = f"competitions/{call.slug}/files/{call.body.get('fileName', '')}"
    if key not in stand_in.blobs:
        raise KaggleError(404, "Not found")
    return 302, {"Location": stand_in.signed_url(key)}


@api("competitions.CompetitionApiService", "GetSubmissionLimits")
def _get_submission_limits(stand_in, call: Call) -> dict:
    stand_in.check_competition(call.slug)
    today = stand_in.submitted_today(call.slug)
    return {
        "numToday": today,
        "numTotal": len(stand_in.submissions.get(call.slug, [])),
        "numAllowedNow": max(stand_in.daily_limit_of(call.slug) - today, 0),
    }


@api("competitions.CompetitionApiService", "StartSubmissionUpload")
def _start_submission_upload(stand_in, call: Call) -> dict:
    stand_in.check_competition(call.slug)
    token, url = stand_in.start_upload({"slug": call.slug, "file_name": call.body.get("fileName", "")})
    return {"token": token, "createUrl": url}


@api("competitions.CompetitionApiService", "CreateSubmission")
def _create_submission(stand_in, call: Call) -> dict:
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
def _list_submissions(stand_in, call: Call) -> dict:
    stand_in.check_competition(call.slug)
    rows, next_token = stand_in.page(stand_in.submissions.get(call.slug, []), call.body)
    return {"submissions": [_strip_empty(row) for row in rows], "nextPageToken": next_token}


@api("competitions.CompetitionApiService", "GetLeaderboard")
def _get_leaderboard(stand_in, call: Call) -> dict:
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


def noise_bundle(noise_bytes: int, seed: int = 0) -> bytes:
    """A competition bundle whose train.zip holds `noise_bytes` random bytes, stored (not compressed), so a
    transfer is that long and a resume's byte counts are exact; plus a one-row labels.csv."""
    noise = random.Random(seed).randbytes(noise_bytes)
    return make_zip({"train.zip": make_zip({"train/a.jpg": noise}), "labels.csv": b"id,breed\na,pug\n"})


def image_bytes(color: tuple[int, int, int], seed: int, image_format: str = "JPEG", size: int = 40) -> bytes:
    """A small noisy image tinted by `color`: a class a tiny model can learn from its colour."""
    import numpy as np
    from PIL import Image

    noise = np.random.default_rng(seed).integers(-40, 40, (size, size, 3))
    pixels = np.clip(np.array(color) + noise, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=image_format)
    return buffer.getvalue()
