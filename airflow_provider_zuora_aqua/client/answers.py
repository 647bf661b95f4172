"""
Reading an AQuA answer (a job, a token, an error) into either data or one of the provider's
exceptions. Transport-free: each client brings its HTTP library and hands over an
:class:`HttpAnswer`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any

from airflow_provider_zuora_aqua.client.defaults import MAX_RETRY_WAIT_SECONDS
from airflow_provider_zuora_aqua.client.request import is_job_id
from airflow_provider_zuora_aqua.exceptions import (
    AquaApiError,
    AquaAuthenticationError,
    AquaInvalidAnswerError,
    AquaJobNotFoundError,
    AquaRateLimitError,
    AquaServerError,
)

REQUEST_ID_HEADER = "Zuora-Request-Id"
#: AQuA error codes meaning "no such job/batch" (90001 Invalid Batch Id, 90002 Invalid Job Id).
JOB_NOT_FOUND_CODES = frozenset({"90001", "90002"})
#: AQuA error code for the concurrent-job limit: transient, like a 429.
JOB_LIMIT_CODES = frozenset({"90028"})
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
#: ``Retry-After`` as delta-seconds; further off than a day it is not believed (see parse_retry_after).
_DELTA_SECONDS = re.compile(r"[0-9]{1,10}(\.[0-9]{1,9})?")
_MAX_RETRY_AFTER = 86400.0


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
    if not is_job_id(answered):
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
    """
    ``Retry-After`` as seconds to wait: delta-seconds (decimals accepted) or an HTTP date, at
    most :data:`~.defaults.MAX_RETRY_WAIT_SECONDS`. None, as if absent, for a value that is no
    such number or date (``inf``, ``nan``, ``-5``, ``1e9``...) or lies more than a day ahead:
    a broken or hostile server must not park a call, nor crash the wait.
    """
    if not value:
        return None
    text = value.strip()
    if _DELTA_SECONDS.fullmatch(text):
        seconds = float(text)
    else:
        try:
            moment = parsedate_to_datetime(text)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=timezone.utc)
            seconds = max(0.0, (moment - datetime.now(timezone.utc)).total_seconds())
        except (TypeError, ValueError, OverflowError, IndexError):
            return None
    if seconds > _MAX_RETRY_AFTER:
        return None
    return min(seconds, MAX_RETRY_WAIT_SECONDS)


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
