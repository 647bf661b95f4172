"""The AQuA wire rules shared by the sync hook and the async trigger.

Input checks that run before any request, the headers every call sends, and the reading of an
answer into either JSON or one of the provider's exceptions. Transport-free: the callers bring
the HTTP client.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, cast

from airflow_provider_zuora_aqua.exceptions import (
    AquaApiError,
    AquaAuthenticationError,
    AquaConfigurationError,
    AquaInvalidAnswerError,
    AquaJobNotFoundError,
    AquaRateLimitError,
    AquaServerError,
    AquaTransportError,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from airflow_provider_zuora_aqua.client.settings import AquaConnectionSettings

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
        encoding = headers.get("Content-Encoding")
        self._wbits = _decoder_wbits(encoding)
        if self._wbits == _UNSUPPORTED:
            raise self._invalid(f"its Content-Encoding {short_text(encoding)!r} is not one this client asked for")
        self._decoder = None if self._wbits is None else zlib.decompressobj(self._wbits)

    def feed(self, chunk: bytes) -> None:
        """Add raw bytes from the connection."""
        if self._deadline is not None and time.monotonic() > self._deadline:
            raise AquaTransportError(f"{self._what}: the answer did not arrive in time", request_sent=True)
        self._raw += len(chunk)
        if self._raw > self._limit:
            raise self._too_large()
        if self._decoder is None:
            self._keep(chunk)
            return
        try:
            while chunk:
                self._keep(self._decoder.decompress(chunk, self._limit - self._size + 1))
                if self._decoder.eof:  # gzip allows several members one after the other
                    chunk = self._decoder.unused_data
                    if chunk:
                        # Only an encoded answer has a decoder, so its window bits are set.
                        self._decoder = zlib.decompressobj(cast(int, self._wbits))
                else:
                    chunk = self._decoder.unconsumed_tail
        except zlib.error:
            raise self._invalid("its compressed body is corrupt") from None

    def finish(self) -> bytes:
        """The decoded body; a compressed body that ended early is refused."""
        if self._decoder is not None and self._raw and not self._decoder.eof:
            raise self._invalid("its compressed body is truncated")
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
