"""The AQuA wire rules shared by the sync and the async HTTP client.

Input checks that run before any request, the headers every call sends, the reading of an
answer (a job, a token, a result file) into either data or one of the provider's exceptions,
and what a failed exchange means (:func:`transport_error`). Transport-free: each client in
:mod:`.session` and :mod:`.asession` brings its HTTP library and says how an exchange failed.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from enum import Enum
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from airflow_provider_zuora_aqua.exceptions import (
    AquaApiError,
    AquaAuthenticationError,
    AquaConfigurationError,
    AquaError,
    AquaFileAccessDeniedError,
    AquaFileNotFoundError,
    AquaFileTooLargeError,
    AquaInvalidAnswerError,
    AquaJobNotFoundError,
    AquaRateLimitError,
    AquaServerError,
    AquaTransportError,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from airflow_provider_zuora_aqua.client.settings import AquaConnectionSettings

JOBS_PATH = "/v1/batch-query/jobs"
SUBMIT_PATH = "/v1/batch-query/"
FILES_PATH = "/v1/files"
REQUEST_ID_HEADER = "Zuora-Request-Id"
TRACK_ID_HEADER = "Zuora-Track-Id"
TRACK_ID_MAX_LENGTH = 64
IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"
IDEMPOTENCY_KEY_MAX_LENGTH = 255
_TRACK_ID_FORBIDDEN = frozenset(":;\"'")
#: AQuA error codes meaning "no such job/batch" (90001 Invalid Batch Id, 90002 Invalid Job Id).
JOB_NOT_FOUND_CODES = frozenset({"90001", "90002"})
#: AQuA error code for the concurrent-job limit: transient, like a 429.
JOB_LIMIT_CODES = frozenset({"90028"})
_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
#: Other servers word "no such job" without AQuA's codes (not 90003: a refused cancel).
_NOT_FOUND_MESSAGE = re.compile(r"\bnot found\b|^invalid job id\.?$", re.IGNORECASE)
_MAX_MESSAGE = 500
_MAX_REQUEST_ID = 100
#: Longest error code or job status kept from an answer.
_MAX_CODE = 64
#: Token lifetime when the answer gives none (or an unusable one), and the longest believed.
DEFAULT_TOKEN_LIFETIME = 3599.0
MAX_TOKEN_LIFETIME = 86400.0
_ACCESS_TOKEN = re.compile(r"[\x21-\x7e]{1,8192}")


@dataclass(frozen=True)
class HttpAnswer:
    """What any HTTP client got back, reduced to what the AQuA rules read."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def request_id(self) -> str | None:
        return short_text(self.headers.get(REQUEST_ID_HEADER), _MAX_REQUEST_ID)


@dataclass
class CallRecord:
    """What the last call of a hook leaves for error reports, whichever client sent it."""

    #: ``Zuora-Request-Id`` of the last answer (support asks for it).
    request_id: str | None = None
    #: How many times the last call was sent (more than 1 after retries).
    attempts: int = 0


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
    if _is_job_id(job_id):
        return job_id  # type: ignore[return-value]
    raise AquaConfigurationError(
        f"job_id {job_id!r} is not a valid AQuA job id: pass the plain id Zuora returned on submit "
        "(letters, digits, '-', '_' and '.', for example 'e20b07474688ad5001468daf10e501de'), "
        "without spaces, slashes, '..', '?', '#' or '%'."
    )


def _is_job_id(value: object) -> bool:
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


def parse_answer(answer: HttpAnswer, *, what: str, required_key: str, job_id: str | None = None) -> dict[str, Any]:
    """
    Return the JSON of a successful answer, or raise the matching exception.

    AQuA often answers HTTP 200 with an error body, so success needs both a 2xx status and a
    body that holds ``required_key`` (``id`` for a job) and no error marker.

    :param what: the call, for messages, e.g. ``"GET job 123"``; never holds a secret.
    :param required_key: key a successful body must have.
    :param job_id: set for calls about one job: "not found" answers then raise
        :class:`AquaJobNotFoundError`.
    """
    body, unreadable = _decode_json(answer.body)
    try:
        error_code, message = _error_details(body)
        odd = None
    except _OddShape as exc:
        error_code, message, odd = None, None, str(exc)
    ok_body = odd is None and isinstance(body, dict) and error_code is None and body.get(required_key) not in (None, "")
    if 200 <= answer.status < 300:
        if ok_body:
            return body
        if odd is None and (unreadable or (body is not None and not isinstance(body, dict))):
            odd = "its body is not a JSON object"

    if not message:
        message = odd or _fallback_message(answer, body, required_key)
    kwargs: dict[str, Any] = {
        "status_code": answer.status,
        "error_code": error_code,
        "request_id": answer.request_id,
    }
    text = f"Zuora answered {what} with an error: {message}"
    if answer.status == 401:
        raise AquaAuthenticationError(text, **kwargs)
    if answer.status == 429 or error_code in JOB_LIMIT_CODES:
        raise AquaRateLimitError(text, retry_after=parse_retry_after(answer.headers.get("Retry-After")), **kwargs)
    if answer.status >= 500:
        raise AquaServerError(text, **kwargs)
    if job_id is not None and (
        answer.status == 404 or error_code in JOB_NOT_FOUND_CODES or _NOT_FOUND_MESSAGE.search(message)
    ):
        raise AquaJobNotFoundError(
            f"AQuA job {job_id!r} does not exist ({what}: {message}); check the job id "
            "(Zuora keeps job records for 180 days)",
            **kwargs,
        )
    if odd is not None:
        raise AquaInvalidAnswerError(text, **kwargs)
    raise AquaApiError(text, **kwargs)


def parse_job_answer(answer: HttpAnswer, *, what: str, job_id: str | None = None) -> dict[str, Any]:
    """
    :func:`parse_answer` for calls that return a job: the job's ``id`` must be a valid job id
    (the one asked about, if any) and its ``status`` a short string, so that a hostile answer can
    never put a path such as ``../../v1/x`` into XCom, the state store or a later request.
    """
    job = parse_answer(answer, what=what, required_key="id", job_id=job_id)
    answered, status = job["id"], job.get("status")
    problem = None
    if not _is_job_id(answered):
        problem = f"an invalid job id {short_text(repr(answered), _MAX_CODE)}"
    elif job_id is not None and answered != job_id:
        problem = f"the JSON of job id {answered!r} instead of {job_id!r}"
    elif status is not None and not (isinstance(status, str) and len(status) <= _MAX_CODE):
        problem = f"a job status that is not a short string: {short_text(repr(status), _MAX_CODE)}"
    if problem is not None:
        raise AquaInvalidAnswerError(
            f"Zuora answered {what} with {problem}; the answer is not used",
            status_code=answer.status,
            request_id=answer.request_id,
        )
    return job


def access_token(body: dict[str, Any]) -> str | None:
    """
    The ``access_token`` of an OAuth answer, without surrounding whitespace; None when it is
    missing or unusable in a header (control characters, spaces, non-ASCII, over 8 KB).

    An HTTP client refuses such a header only when the call is sent, quoting the value in its
    error: refusing it here keeps the token out of every message.
    """
    token = body.get("access_token")
    if not isinstance(token, str):
        return None
    token = token.strip()
    return token if _ACCESS_TOKEN.fullmatch(token) else None


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return max(0.0, (moment - datetime.now(timezone.utc)).total_seconds())


def token_lifetime(value: object) -> float:
    """
    ``expires_in`` of an OAuth answer, in seconds: a positive finite number up to a day, else
    the usual 3599 (a hostile ``"abc"``, ``[1]``, ``"nan"`` or ``"inf"`` must not break the cache).
    """
    if isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except (ValueError, OverflowError):
            seconds = math.nan
        if math.isfinite(seconds) and seconds > 0:
            return min(seconds, MAX_TOKEN_LIFETIME)
    return DEFAULT_TOKEN_LIFETIME


class _OddShape(Exception):
    """An error body whose structure cannot be read (the message says what is odd)."""


def _decode_json(body: bytes) -> tuple[Any, bool]:
    """The JSON of a body (None when empty), and whether a non-empty body could not be read."""
    if not body:
        return None, False
    try:
        return json.loads(body), False
    except (ValueError, RecursionError):  # RecursionError: nesting beyond the parser's depth
        return None, True


def _error_details(body: Any) -> tuple[str | None, str | None]:
    """Read Zuora's error shapes: AQuA's ``errorCode``, the general ``reasons``, OAuth's ``error``."""
    if not isinstance(body, dict):
        return None, None
    if body.get("errorCode") not in (None, ""):
        return short_text(body["errorCode"], _MAX_CODE), short_text(body.get("message"))
    if body.get("success") is False:
        reasons = body.get("reasons") or [{}]
        if not isinstance(reasons, list) or not isinstance(reasons[0], dict):
            raise _OddShape(f"an error body whose 'reasons' is not a list of objects ({type(reasons).__name__})")
        code = reasons[0].get("code")
        return short_text(code, _MAX_CODE) or "unknown", short_text(reasons[0].get("message"))
    if isinstance(body.get("error"), str):
        return short_text(body["error"], _MAX_CODE), short_text(body.get("error_description"))
    return None, short_text(body.get("message"))


def _fallback_message(answer: HttpAnswer, body: Any, required_key: str) -> str:
    if 200 <= answer.status < 300:
        return f"the answer has no {required_key!r}"
    if body is None and answer.body:
        return f"HTTP {answer.status} with a non-JSON body"
    return f"HTTP {answer.status}"


def short_text(value: Any, limit: int = _MAX_MESSAGE) -> str | None:
    """Server-derived text for messages: None when empty, else cut to ``limit`` characters."""
    if value is None or value == "":
        return None
    text = str(value)
    return text if len(text) <= limit else f"{text[:limit]}..."


#: Largest answer accepted, raw or decoded. Job JSON of 50 queries is a few hundred kilobytes.
MAX_ANSWER_BYTES = 10 * 1024 * 1024
#: Size of the reads from the connection.
READ_CHUNK_BYTES = 64 * 1024


class AnswerReader:
    """
    Collect one answer's body: decode ``Content-Encoding`` (gzip, deflate), count raw and
    decoded bytes against ``limit``, and check the deadline at every chunk.

    :param status: HTTP status of the answer, for errors.
    :param headers: its headers (``Content-Encoding``, ``Zuora-Request-Id``).
    :param what: the call, for errors, e.g. ``"GET /v1/batch-query/jobs/..."``.
    :param deadline: ``time.monotonic()`` after which the answer is given up (None: no bound).
    :param limit: most bytes accepted, raw or decoded.
    """

    def __init__(
        self,
        status: int,
        headers: Mapping[str, str],
        *,
        what: str,
        deadline: float | None,
        limit: int = MAX_ANSWER_BYTES,
    ) -> None:
        self._status = status
        self._request_id = short_text(headers.get(REQUEST_ID_HEADER))
        self._what = what
        self._deadline = deadline
        self._limit = limit
        self._raw = 0
        self._parts: list[bytes] = []
        self._size = 0
        try:
            self._decoder = BodyDecoder(headers.get("Content-Encoding"))
        except UnsupportedEncodingError as exc:
            raise self._invalid(str(exc)) from None

    def feed(self, chunk: bytes) -> None:
        """Add raw bytes from the connection."""
        if self._deadline is not None and time.monotonic() > self._deadline:
            raise AquaTransportError(f"{self._what}: the answer did not arrive in time", request_sent=True)
        self._raw += len(chunk)
        if self._raw > self._limit:
            raise self._too_large()
        try:
            for piece in self._decoder.decode(chunk):
                self._keep(piece)
        except CorruptEncodingError as exc:
            raise self._invalid(str(exc)) from None

    def finish(self) -> bytes:
        """The decoded body; a compressed body that ended early is refused."""
        try:
            self._decoder.finish()
        except CorruptEncodingError as exc:
            raise self._invalid(str(exc)) from None
        return b"".join(self._parts)

    def _keep(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self._limit:
            raise self._too_large()
        if data:
            self._parts.append(data)

    def _too_large(self) -> AquaInvalidAnswerError:
        return self._invalid(f"it is larger than {self._limit // (1024 * 1024)} MB, which no AQuA answer needs")

    def _invalid(self, why: str) -> AquaInvalidAnswerError:
        return AquaInvalidAnswerError(
            f"Zuora's answer to {self._what} was refused: {why}",
            status_code=self._status,
            request_id=self._request_id,
        )


_UNSUPPORTED = -1
#: Largest piece of decoded data a :class:`BodyDecoder` hands over at once, whatever the ratio.
DECODED_PIECE_BYTES = 1024 * 1024


class UnsupportedEncodingError(Exception):
    """A ``Content-Encoding`` this client did not ask for (the message says which)."""


class CorruptEncodingError(Exception):
    """A body whose ``Content-Encoding`` cannot be decoded: corrupt, or cut short."""


class BodyDecoder:
    """
    Decode the ``Content-Encoding`` (gzip, deflate; identity passes through) of a body read
    raw, in pieces of at most ``piece_bytes``: memory stays bounded whatever the compression
    ratio, and whatever the HTTP library would have done (urllib3 decodes a read in one go).

    :raises UnsupportedEncodingError: for any other encoding.
    """

    def __init__(self, content_encoding: str | None, *, piece_bytes: int = DECODED_PIECE_BYTES) -> None:
        self._wbits = _decoder_wbits(content_encoding)
        if self._wbits == _UNSUPPORTED:
            raise UnsupportedEncodingError(
                f"its Content-Encoding {short_text(content_encoding)!r} is not one this client asked for"
            )
        self._piece = piece_bytes
        self._inflate = None if self._wbits is None else zlib.decompressobj(self._wbits)
        self._pending = False

    def decode(self, chunk: bytes) -> Iterator[bytes]:
        """The decoded pieces of the next raw ``chunk``."""
        if self._inflate is None:
            if chunk:
                yield chunk
            return
        self._pending = self._pending or bool(chunk)
        try:
            while chunk:
                piece = self._inflate.decompress(chunk, self._piece)
                if piece:
                    yield piece
                if self._inflate.eof:  # gzip allows several members one after the other
                    chunk = self._inflate.unused_data
                    self._pending = bool(chunk)
                    if chunk:
                        self._inflate = zlib.decompressobj(cast(int, self._wbits))
                else:
                    chunk = self._inflate.unconsumed_tail
        except zlib.error:
            raise CorruptEncodingError("its compressed body is corrupt") from None

    def finish(self) -> None:
        """The body ended: a compressed body must have ended with its stream."""
        if self._inflate is not None and self._pending:
            raise CorruptEncodingError("its compressed body is truncated")


def decode_prefix(raw: bytes, content_encoding: str | None, limit: int) -> bytes:
    """At most ``limit`` decoded bytes of a body that may be cut short: for error messages only."""
    wbits = _decoder_wbits(content_encoding)
    if wbits is None or wbits == _UNSUPPORTED:
        return raw[:limit]
    try:
        return zlib.decompressobj(wbits).decompress(raw, limit)
    except zlib.error:
        return b""


def _decoder_wbits(content_encoding: str | None) -> int | None:
    """zlib ``wbits`` for the encoding: None for identity, :data:`_UNSUPPORTED` for one we do not decode."""
    codings = [c.strip().lower() for c in (content_encoding or "").split(",")]
    codings = [c for c in codings if c not in ("", "identity")]
    if not codings:
        return None
    if codings in (["gzip"], ["x-gzip"]):
        return 16 + zlib.MAX_WBITS
    if codings == ["deflate"]:
        return 32 + zlib.MAX_WBITS  # zlib or gzip wrapped, told apart by its header
    return _UNSUPPORTED


# Result files: what a file answer means.

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


#: A file download fails when fewer than this many bytes arrive within one ``timeout``-long window.
FLOOR_BYTES = 64 * 1024


class ThroughputFloor:
    """
    The floor under a file download's pace: every window of ``timeout`` seconds (from the first
    byte of the body, then from the end of the previous window) must bring :data:`FLOOR_BYTES`
    or more; a read that does not return at all fails at ``timeout`` already.

    So a server that drips bytes just under the read timeout apart fails within two windows,
    and a download at F bytes per ``timeout`` or faster (any steady pace of 64 KiB per window)
    is never stopped.

    :param timeout: the connection's ``timeout``, seconds.
    """

    def __init__(self, timeout: float, *, floor_bytes: int = FLOOR_BYTES, clock: Callable[[], float] = time.monotonic):
        self._timeout = timeout
        self._floor = floor_bytes
        self._clock = clock
        self._window_start = clock()
        self._window_bytes = 0

    def arrived(self, size: int) -> str | None:
        """Count ``size`` bytes just read; say why the download is too slow, or None."""
        self._window_bytes += size
        now = self._clock()
        if now - self._window_start < self._timeout:
            return None
        if self._window_bytes < self._floor:
            return (
                f"only {self._window_bytes} bytes arrived in {now - self._window_start:.1f} s, under the floor of "
                f"{self._floor} bytes per {self._timeout:g} s (the connection's timeout)"
            )
        self._window_start, self._window_bytes = now, 0
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


# Exchanges that got no answer: the one wording and the one "may the request have arrived" rule.

#: Longest wait for a connection to open (within the bound of the exchange).
CONNECT_SECONDS = 10.0


class Failure(Enum):
    """Where an exchange failed without an answer, as its HTTP client tells it."""

    #: No connection was made (refused, unreachable, name not found).
    NOT_CONNECTED = "not connected"
    #: The connection did not open in time.
    CONNECT_TIMEOUT = "connect timeout"
    #: Connected, but the TLS handshake failed: the request was never sent.
    TLS_HANDSHAKE = "tls handshake"
    #: Connected, then no byte came within the read timeout.
    READ_TIMEOUT = "read timeout"
    #: Connected, then the exchange passed its wall-clock bound.
    DEADLINE = "deadline"
    #: Connected, then the connection broke (reset, closed mid-answer, a malformed answer).
    BROKEN = "broken"

    @property
    def request_may_have_arrived(self) -> bool:
        """False only when no connection was made: then Zuora cannot have seen the request."""
        return self not in (Failure.NOT_CONNECTED, Failure.CONNECT_TIMEOUT, Failure.TLS_HANDSHAKE)


def exchange_seconds(timeout: float, deadline: float | None) -> float:
    """Wall-clock bound of one exchange: the connection's ``timeout``, within the call's ``deadline``."""
    if deadline is None:
        return timeout
    return max(0.1, min(timeout, deadline - time.monotonic()))


def transport_error(
    what: str,
    base_url: str,
    failure: Failure,
    detail: str = "",
    *,
    seconds: float | None = None,
    received: int | None = None,
) -> AquaTransportError:
    """
    The error of an exchange that got no (complete) answer; both clients raise this one.

    :param what: the call, e.g. ``"GET /v1/batch-query/jobs/..."``.
    :param failure: where the client saw it fail.
    :param detail: the client's own words for a failure to connect or a broken connection.
    :param seconds: the exchange's bound, for :attr:`Failure.DEADLINE`.
    :param received: bytes of a file already received when the connection broke.
    """
    reasons = {
        Failure.NOT_CONNECTED: f"could not connect: {detail}",
        Failure.CONNECT_TIMEOUT: "timed out while connecting",
        Failure.TLS_HANDSHAKE: f"the TLS handshake failed: {detail}{_plain_http_hint(base_url)}",
        Failure.READ_TIMEOUT: "timed out waiting for the answer",
        Failure.DEADLINE: f"timed out waiting for the answer (none complete within {seconds or 0:g} s)",
        Failure.BROKEN: detail,
    }
    where = f"{what} to {base_url} failed" if received is None else f"{what} broke off after {received} bytes"
    return AquaTransportError(f"{where}: {reasons[failure]}", request_sent=failure.request_may_have_arrived)


def _plain_http_hint(base_url: str) -> str:
    """For ``https://`` to a loopback host (where the local simulator speaks plain HTTP): say to use ``http://``."""
    from airflow_provider_zuora_aqua.client.settings import is_loopback

    parts = urlsplit(base_url)
    if parts.scheme != "https" or not is_loopback(parts.hostname or ""):
        return ""
    return (
        f". {parts.hostname} is a loopback host, where a local server such as the AQuA simulator speaks plain "
        f"HTTP: write the connection's host as {parts._replace(scheme='http').geturl()}"
    )
