"""
What an AQuA request carries: its paths, the ids checked before anything is sent, and the
headers of every call. Shared by the sync and the async client.
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING

from airflow_provider_zuora_aqua.exceptions import AquaConfigurationError

if TYPE_CHECKING:
    from airflow_provider_zuora_aqua.client.settings import AquaConnectionSettings

JOBS_PATH = "/v1/batch-query/jobs"
SUBMIT_PATH = "/v1/batch-query/"
FILES_PATH = "/v1/files"
TRACK_ID_HEADER = "Zuora-Track-Id"
TRACK_ID_MAX_LENGTH = 64
IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"
IDEMPOTENCY_KEY_MAX_LENGTH = 255
_TRACK_ID_FORBIDDEN = frozenset(":;\"'")
_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def validate_job_id(job_id: object) -> str:
    """Refuse anything but a plain id, so that a job id can never change the request path."""
    if job_id is None or (isinstance(job_id, str) and job_id.strip() in ("", "None")):
        # What ``{{ ti.xcom_pull(...) }}`` renders to when the upstream task pushed nothing.
        raise AquaConfigurationError(
            f"job_id is {job_id!r}: no AQuA job id reached this task. When job_id is templated from "
            "XCom (e.g. \"{{ ti.xcom_pull(task_ids='export', key='aqua_job_id') }}\"), the upstream XCom "
            "is missing: make this task run after the task that submits the job (export >> this task) "
            "and check the task_ids and key."
        )
    if is_job_id(job_id):
        return job_id  # type: ignore[return-value]
    raise AquaConfigurationError(
        f"job_id {job_id!r} is not a valid AQuA job id: pass the plain id Zuora returned on submit "
        "(letters, digits, '-', '_' and '.', for example 'e20b07474688ad5001468daf10e501de'), "
        "without spaces, slashes, '..', '?', '#' or '%'."
    )


def is_job_id(value: object) -> bool:
    """Whether ``value`` is a plain job id (nothing that could change a request path)."""
    return isinstance(value, str) and _JOB_ID.fullmatch(value) is not None and ".." not in value


def validate_track_id(track_id: object) -> str | None:
    """Apply Zuora's documented Track-Id rules; ``None`` or ``""`` means no header."""
    if track_id is None or track_id == "":
        return None
    if not isinstance(track_id, str):
        raise AquaConfigurationError(f"track_id must be a string, got {type(track_id).__name__}.")
    problems = []
    if len(track_id) > TRACK_ID_MAX_LENGTH:
        problems.append(f"it has {len(track_id)} characters (at most {TRACK_ID_MAX_LENGTH})")
    if any(not 32 <= ord(char) <= 126 for char in track_id):
        problems.append("it has non-printable or non-US-ASCII characters")
    if track_id != track_id.strip():
        # HTTP clients refuse a header value with surrounding whitespace only once the call is sent.
        problems.append("it starts or ends with whitespace")
    if _TRACK_ID_FORBIDDEN.intersection(track_id):
        problems.append("it contains one of : ; \" '")
    if problems:
        raise AquaConfigurationError(
            f"track_id {track_id!r} is not a valid Zuora-Track-Id: {'; '.join(problems)}. "
            "Use at most 64 printable US-ASCII characters without : ; \" ', and no leading or trailing space."
        )
    return track_id


def validate_idempotency_key(key: object) -> str:
    """An ``Idempotency-Key``: 1 to 255 printable US-ASCII characters, no surrounding spaces."""
    if isinstance(key, str) and 0 < len(key) <= IDEMPOTENCY_KEY_MAX_LENGTH and key == key.strip():
        if all(32 <= ord(char) <= 126 for char in key):
            return key
    raise AquaConfigurationError(
        f"idempotency_key {key!r} is not a valid Idempotency-Key: use 1 to {IDEMPOTENCY_KEY_MAX_LENGTH} "
        "printable US-ASCII characters without leading or trailing spaces."
    )


def make_track_id(*parts: object) -> str:
    """Build a valid Track-Id from arbitrary parts; long values keep a digest to stay unique."""
    return _bounded_header_value(parts, TRACK_ID_MAX_LENGTH)


def make_idempotency_key(*parts: object) -> str:
    """Build a valid ``Idempotency-Key`` (at most 255 characters) from arbitrary parts, like a Track-Id."""
    return _bounded_header_value(parts, IDEMPOTENCY_KEY_MAX_LENGTH)


def _bounded_header_value(parts: tuple[object, ...], max_length: int) -> str:
    """Join ``parts`` with dots; odd characters become ``-``; over ``max_length``, a cut plus ``~`` and a digest."""
    raw = ".".join(str(part) for part in parts)
    cleaned = "".join("-" if not 32 < ord(char) <= 126 or char in _TRACK_ID_FORBIDDEN else char for char in raw)
    if len(cleaned) <= max_length:
        return cleaned
    digest = hashlib.sha256(raw.encode()).hexdigest()[:12]
    return f"{cleaned[: max_length - len(digest) - 1]}~{digest}"


def build_headers(settings: AquaConnectionSettings, token: str, track_id: str | None) -> dict[str, str]:
    """Headers of every AQuA call."""
    headers = {
        "Authorization": f"Bearer {token}",
        "Accept": "application/json",
        "Accept-Encoding": "gzip",
    }
    optional = {
        "Zuora-Entity-Ids": settings.entity_ids,
        "Zuora-Org-Ids": settings.org_ids,
        "Zuora-Version": settings.zuora_version,
        TRACK_ID_HEADER: validate_track_id(track_id),
    }
    headers.update({name: value for name, value in optional.items() if value})
    return headers
