"""Receiving one result file, apart from the HTTP client that fetches it (:mod:`.client.sync_client`).

How the bytes of a file answer are taken (``200``, or a resumed ``206`` that must continue
exactly where the last attempt stopped), and what happens to them: they go to a
:class:`~.staging.StagedFile` while their SHA-256 and CSV records are computed, and they are
checked before anything is published. What an answer that is not the file means is
:func:`.client.downloads.file_error`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

from airflow_provider_zuora_aqua.client.request import FILES_PATH, validate_job_id
from airflow_provider_zuora_aqua.exceptions import (
    AquaConfigurationError,
    AquaIntegrityError,
    AquaTransportError,
)
from airflow_provider_zuora_aqua.results.records import (
    FORMATS,
    ZIP,
    MalformedResultError,
    RecordCounter,
    count_zip_records,
    record_counter,
    sniff_format,
)
from airflow_provider_zuora_aqua.results.staging import StagedFile

#: Twice Zuora's 2,047 MB cap: a server sending more than this is not sending an AQuA file.
MAX_FILE_BYTES = 2 * 2047 * 1024 * 1024
_CONTENT_RANGE = re.compile(r"\s*bytes\s+(?P<start>\d+)-(?P<end>\d+)/(?P<size>\d+|\*)\s*", re.IGNORECASE)
_SNIFF_BYTES = 4


def validate_file_id(file_id: object) -> str:
    """Refuse anything but a plain file id, so that it can never change the request path."""
    try:
        return validate_job_id(file_id)
    except AquaConfigurationError:
        raise AquaConfigurationError(
            f"file_id {file_id!r} is not a valid AQuA file id: pass the plain fileId (or segment id) of a "
            "completed batch (letters, digits, '-', '_' and '.'), without spaces, slashes, '..', '?', '#' or '%'."
        ) from None


class FileReceiver:
    """
    Receive one file into a staged file: write, hash and count each chunk as it arrives.

    :param file_format: the format the job says (``csv``, ``gzip``, ``zip``); None takes the
        format the bytes show.
    :param records_known: Zuora's ``recordCount`` will check the count; else the file is held
        to what Python's ``csv`` module reads (see :mod:`.records`).
    """

    def __init__(
        self, file_id: str, staged: StagedFile, file_format: str | None = None, *, records_known: bool = False
    ) -> None:
        if file_format is not None and file_format not in FORMATS:
            raise AquaConfigurationError(f"file format {file_format!r} is unknown; use one of {', '.join(FORMATS)}")
        self.file_id = file_id
        self.staged = staged
        self._expected_format = file_format
        self._agree_with_csv = not records_known
        #: Whether a later attempt may ask for the rest with ``Range``.
        self.resumable = True
        self._expected_size: int | None = None
        #: The file's size as its first answer told it (Content-Length of an unencoded 200).
        self._total: int | None = None
        self._validator: str | None = None
        self.restart()

    @property
    def resume_offset(self) -> int:
        """
        Where the next request starts: the bytes already held, or 0 when resuming is not
        possible (no validator to send with ``If-Range``, or an answer that did not continue).
        """
        return self.received if self.resumable and self._validator is not None else 0

    @property
    def validator(self) -> str | None:
        """What a resumed request sends as ``If-Range``: the ``ETag`` (strong) or ``Last-Modified`` of the file."""
        return self._validator

    def begin(self, status: int, headers: Mapping[str, str], offset: int) -> None:
        """
        Take the framing of an answer to a request from ``offset``: a ``200`` starts the file
        again; a ``206`` must continue exactly at ``offset``, unencoded, the same file (its
        ``Content-Range`` total the size the file had, its ``ETag`` the one sent in
        ``If-Range``), or the next attempt starts from zero (as after a ``416``).
        """
        self._expected_size = None
        if status == 200:
            if self.received:
                self.restart()
            self._validator = _validator(headers)
            identity = headers.get("Content-Encoding", "").strip().lower() in ("", "identity")
            length = headers.get("Content-Length", "").strip()
            self._total = int(length) if identity and length.isdigit() else None
            return
        found = _CONTENT_RANGE.fullmatch(headers.get("Content-Range", "")) if status == 206 else None
        encoding = headers.get("Content-Encoding", "").strip().lower()
        total = None if found is None or found.group("size") == "*" else int(found.group("size"))
        etag = headers.get("ETag")
        if (
            found is None
            or int(found.group("start")) != offset
            or offset != self.received
            or encoding not in ("", "identity")
            or total is None
            or (self._total is not None and total != self._total)
            or (etag is not None and _strong(etag) and self._validator != etag.strip())
        ):
            self.resumable = False
            raise AquaTransportError(
                f"GET {FILES_PATH}/{self.file_id}: HTTP {status} (Content-Range {headers.get('Content-Range')!r}) "
                f"does not continue the same file at byte {offset}; downloading it again from the start",
                request_sent=True,
            )
        self._expected_size = self._total = total

    def end(self) -> None:
        """The body ended: a resumed answer must have brought the file to its full size."""
        if self._expected_size is not None and self.received != self._expected_size:
            raise AquaTransportError(
                f"GET {FILES_PATH}/{self.file_id} ended at byte {self.received} of {self._expected_size}",
                request_sent=True,
            )

    def restart(self) -> None:
        """Forget every byte received: the next answer starts the file again."""
        self.staged.restart()
        self.received = 0
        self._digest = hashlib.sha256()
        self._head = b""
        self._format: str | None = None
        self._counter: RecordCounter | None = None

    def write(self, chunk: bytes) -> None:
        """Store, hash and count the next bytes of the file."""
        self.received += len(chunk)
        if self.received > MAX_FILE_BYTES:
            raise self._integrity_error(f"is over {MAX_FILE_BYTES} bytes, twice Zuora's cap: stopped receiving it")
        self.staged.write(chunk)
        self._digest.update(chunk)
        try:
            if self._format is not None:
                if self._counter is not None:
                    self._counter.feed(chunk)
                return
            self._head += chunk
            if len(self._head) >= _SNIFF_BYTES:
                self._start_counting()
        except MalformedResultError as exc:  # found mid-stream (corrupt gzip, a CSV readers disagree on)
            raise self._malformed(exc) from None

    def finish(self, expected_records: int | None = None) -> dict[str, Any]:
        """Verify the complete file; return its facts. Raise :class:`AquaIntegrityError` on any doubt."""
        if self._format is None:
            self._start_counting()
        self.staged.file.flush()
        try:
            if self._counter is not None:
                records = self._counter.finish()
            else:
                records = count_zip_records(self.staged.path, agree_with_csv=self._agree_with_csv)
        except MalformedResultError as exc:
            raise self._malformed(exc) from None
        if expected_records is not None and records != expected_records:
            raise self._integrity_error(f"holds {records} records, but Zuora reported {expected_records}")
        return {
            "file_id": self.file_id,
            "uri": self.staged.target.uri,
            "format": self._format,
            "bytes": self.received,
            "records": records,
            "sha256": self._digest.hexdigest(),
        }

    def _start_counting(self) -> None:
        shown = sniff_format(self._head)
        if self._expected_format is not None and shown != self._expected_format:
            raise self._integrity_error(
                f"should be {self._expected_format} (the job's format) but its bytes are {shown}"
            )
        self._format = shown
        self._counter = None if shown == ZIP else record_counter(shown, agree_with_csv=self._agree_with_csv)
        if self._counter is not None:
            self._counter.feed(self._head)
        self._head = b""

    def _malformed(self, exc: MalformedResultError) -> AquaIntegrityError:
        return self._integrity_error(f"is not a valid {self._format} file: {exc}")

    def _integrity_error(self, problem: str) -> AquaIntegrityError:
        return AquaIntegrityError(
            f"AQuA result file {self.file_id} {problem}; nothing was published to {self.staged.target.uri}"
        )


def _strong(etag: str) -> bool:
    """A strong entity tag (``"x"``, not ``W/"x"``): only those may go into ``If-Range``."""
    etag = etag.strip()
    return etag.startswith('"') and etag.endswith('"') and len(etag) >= 2


def _validator(headers: Mapping[str, str]) -> str | None:
    """The ``If-Range`` value of a file answer: its strong ``ETag``, else its ``Last-Modified``, else None."""
    etag = headers.get("ETag")
    if etag is not None and _strong(etag) and etag.isascii() and etag.isprintable():
        return etag.strip()
    modified = (headers.get("Last-Modified") or "").strip()
    if modified and len(modified) <= 64 and modified.isascii() and modified.isprintable():
        return modified
    return None
