"""What an answer to a result file request means, and the floor under a download's pace."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow_provider_zuora_aqua.client.answers import HttpAnswer, parse_answer
from airflow_provider_zuora_aqua.client.request import FILES_PATH
from airflow_provider_zuora_aqua.exceptions import (
    AquaApiError,
    AquaError,
    AquaFileAccessDeniedError,
    AquaFileNotFoundError,
    AquaFileTooLargeError,
)

#: At most this much of an answer that is not the file is read, raw and decoded.
MAX_ERROR_BODY = 64 * 1024
_MAX_OBJECT_SIZE = "max-object-size"


def download_headers(offset: int, validator: str | None = None) -> dict[str, str]:
    """
    What a file request sends besides :func:`build_headers`: any media type, and from
    ``offset`` on a ``Range`` with ``If-Range: validator`` (the first answer's ``ETag`` or
    ``Last-Modified``), so that a file that changed meanwhile comes back whole (``200``)
    instead of as a range to splice onto the old bytes.

    A resumed request asks for the identity encoding: a byte range of a gzip transport
    encoding would not continue the bytes already decoded.
    """
    headers = {"Accept": "*/*"}
    if offset:
        headers.update({"Range": f"bytes={offset}-", "Accept-Encoding": "identity"})
        if validator:
            headers["If-Range"] = validator
    return headers


#: A file download fails when fewer than this many bytes arrive in ``timeout`` seconds of waiting for them.
FLOOR_BYTES = 64 * 1024


class ThroughputFloor:
    """
    The floor under a file download's pace: every window of ``timeout`` seconds spent waiting on
    the network (from the first byte of the body, then from the end of the previous window) must
    bring :data:`FLOOR_BYTES` or more; a read that does not return at all fails at ``timeout``.

    So a server that drips bytes just under the read timeout apart fails within two windows,
    and a download at F bytes per ``timeout`` or faster (any steady pace of 64 KiB per window)
    is never stopped. Only the reads count: the time this side takes to store a piece (a slow
    disk, a highly compressed file inflating) is not the server's.

    :param timeout: the connection's ``timeout``, seconds.
    """

    def __init__(self, timeout: float, *, floor_bytes: int = FLOOR_BYTES) -> None:
        self._timeout = timeout
        self._floor = floor_bytes
        self._window_waited = 0.0
        self._window_bytes = 0

    def arrived(self, size: int, waited: float) -> str | None:
        """Count ``size`` bytes of a read that waited ``waited`` seconds; say why the download is too slow, or None."""
        self._window_bytes += size
        self._window_waited += waited
        if self._window_waited < self._timeout:
            return None
        if self._window_bytes < self._floor:
            return (
                f"only {self._window_bytes} bytes arrived in {self._window_waited:.1f} s, under the floor of "
                f"{self._floor} bytes per {self._timeout:g} s (the connection's timeout)"
            )
        self._window_waited, self._window_bytes = 0.0, 0
        return None


def carries_file(status: int, headers: Mapping[str, str]) -> bool:
    """Whether an answer to a file request is (part of) the file, for the receiver to judge."""
    media_type = headers.get("Content-Type", "").lower()
    return status in (200, 206, 416) and not media_type.startswith("application/json")


def file_error(answer: HttpAnswer, file_id: str) -> AquaError:
    """The error to raise for an answer that does not carry the file; its message names the file id."""
    kwargs: dict[str, Any] = {"status_code": answer.status, "request_id": answer.request_id}
    if answer.status == 404:
        return AquaFileNotFoundError(
            f"AQuA result file {file_id} does not exist: Zuora purges result files 72 hours after the job, "
            "or the id never existed. Run the export again to get a new file.",
            **kwargs,
        )
    if answer.status == 403:
        if _MAX_OBJECT_SIZE in answer.body.decode("utf-8", "replace").lower():
            return AquaFileTooLargeError(
                f"AQuA result file {file_id} is over Zuora's 2,047 MB download cap (403 max-object-size). "
                "Split the query into smaller ones, e.g. by UpdatedDate windows, and export again.",
                **kwargs,
            )
        return AquaFileAccessDeniedError(
            f"Zuora refused AQuA result file {file_id} (403): the user of this connection lacks the permission "
            "to export data. Ask a Zuora administrator for the data export permission.",
            **kwargs,
        )
    # Zuora's own error shapes (also inside a 200), retryable or not by the provider's rules.
    try:
        parse_answer(answer, what=f"GET {FILES_PATH}/{file_id}", required_key="file")
    except AquaError as exc:
        return exc
    return AquaApiError(f"Zuora answered GET {FILES_PATH}/{file_id} with JSON instead of the file", **kwargs)
