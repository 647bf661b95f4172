"""Exceptions raised by the Zuora AQuA provider.

Every error is an :class:`AquaError` (an ``AirflowException``). Errors answered by Zuora carry
the HTTP status, the Zuora error code, the message and the ``Zuora-Request-Id`` response header,
which Zuora support asks for. No exception text ever contains a token or a client secret.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_zuora_aqua.compat import AirflowException


class AquaError(AirflowException):
    """Base class of every error of this provider."""

    #: Zuora's HTTP status, None when no answer came (Airflow's base class types it ``HTTPStatus``).
    status_code: int | None  # type: ignore[assignment]

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        error_code: str | None = None,
        request_id: str | None = None,
    ) -> None:
        self.message = message
        self.status_code = status_code
        self.error_code = error_code
        self.request_id = request_id
        super().__init__(self._describe())

    def _describe(self) -> str:
        details = []
        if self.status_code is not None:
            details.append(f"HTTP {self.status_code}")
        if self.error_code:
            details.append(f"error code {self.error_code}")
        if self.request_id:
            details.append(f"Zuora-Request-Id {self.request_id}")
        return f"{self.message} ({', '.join(details)})" if details else self.message


class AquaConfigurationError(AquaError, ValueError):
    """A connection field or an argument is invalid; the message names it and the fix."""


class AquaTransportError(AquaError):
    """
    The request got no HTTP answer (connection refused or dropped, timeout).

    ``request_sent`` is False only when the connection was never made, so the request cannot
    have reached Zuora.
    """

    def __init__(self, message: str, *, request_sent: bool, **kwargs: Any) -> None:
        self.request_sent = request_sent
        super().__init__(message, **kwargs)


class AquaApiError(AquaError):
    """Zuora answered with an error: an HTTP error status or an error body."""


class AquaAuthenticationError(AquaApiError):
    """Zuora refused the credentials or the token."""


class AquaRateLimitError(AquaApiError):
    """Zuora answered ``429 Too Many Requests`` or the concurrent-job limit error; nothing was processed."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        self.retry_after = retry_after
        super().__init__(message, **kwargs)


class AquaServerError(AquaApiError):
    """Zuora answered with a ``5xx`` status."""


class AquaInvalidAnswerError(AquaServerError):
    """
    An answer that cannot be used: over the size cap, unreadable, or of an odd shape (an invalid
    job id, an error body whose fields have the wrong types).

    Treated like a server fault: idempotent calls retry it and waits tolerate it, while a submit
    without an idempotency key is not resent (a job may exist).
    """


class AquaJobNotFoundError(AquaApiError):
    """No AQuA job has the given id."""


class AquaSubmitInProgressError(AquaApiError):
    """Zuora answered ``409``: a submit with the same ``Idempotency-Key`` is still in progress."""


class AquaIdempotencyKeyReusedError(AquaApiError):
    """Zuora answered ``422``: the submit's ``Idempotency-Key`` was used before with a different body."""


class AquaJobError(AquaError):
    """An error about one job; carries the job JSON as Zuora last returned it."""

    def __init__(self, message: str, *, job: dict[str, Any], **kwargs: Any) -> None:
        self.job = job
        super().__init__(message, **kwargs)


class AquaJobAlreadyFinishedError(AquaJobError):
    """The job could not be cancelled because it had already finished."""


class AquaJobFailedError(AquaJobError):
    """The job ended in a status other than ``completed``, or one of its batches failed."""


class AquaJobTimeoutError(AquaJobError):
    """The job did not finish within the operator's timeout; it was cancelled."""


class AquaIntegrityError(AquaError):
    """A downloaded result file failed verification (record count, format); nothing was published."""


class AquaFileNotFoundError(AquaApiError):
    """Zuora answered ``404`` for a result file: purged (files are kept 72 hours) or never existed."""


class AquaFileTooLargeError(AquaApiError):
    """Zuora refused a result file over its 2,047 MB cap (``403`` with ``max-object-size``)."""


class AquaFileAccessDeniedError(AquaApiError):
    """Zuora answered ``403`` for a result file: the user lacks the permission to export data."""


class AquaDestinationBusyError(AquaError):
    """
    Another export holds the lease of a destination's query folder (one writer per destination
    and query), or this export lost its lease to another one; the message names the holder, when
    its lease expires, and what to do. The export that raises it publishes nothing more.

    ``holder`` is what the lease file says of its holder (``dag_id``, ``task_id``, ``run_id``,
    ``try_number``, ``map_index``, ``host``), None when it cannot be read; ``expires`` is when the
    lease may be taken over (UTC, ISO 8601), None when unknown.
    """

    def __init__(
        self,
        message: str,
        *,
        holder: dict[str, Any] | None = None,
        expires: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.holder = dict(holder) if holder is not None else None
        self.expires = expires
        super().__init__(message, **kwargs)


#: Besides rate limits, the one server status that says a request was not processed at all.
_SERVICE_UNAVAILABLE = 503


def is_retryable(exc: BaseException, *, idempotent: bool = True, keyed_submit: bool = False) -> bool:
    """
    Say whether a failed call may be sent again.

    Idempotent calls (reads, cancels, submits with an ``Idempotency-Key``) retry connection
    errors, ``429`` and ``5xx``; a keyed submit also waits out ``409`` (its first request is
    still in progress). A non-idempotent call (a submit without a key) is
    retried only when the request cannot have created anything: a connection that was never
    made, ``429`` or ``503``. Every other ``4xx`` is final.

    A keyed submit refused for the rate or job limit (``429``, error ``90028``) is final too:
    the caller waits for a slot (:mod:`~.jobs.slots`) and sends it again, with a new key after a
    refusal Zuora keeps (it replays a key's answer for 24 hours), with the same key when an
    earlier send of it may have made the job (:func:`~.jobs.request.submit_refused`).
    """
    if isinstance(exc, AquaTransportError):
        return idempotent or not exc.request_sent
    if isinstance(exc, AquaRateLimitError):
        return not keyed_submit
    if isinstance(exc, AquaSubmitInProgressError):
        return True
    if isinstance(exc, AquaServerError):
        return idempotent or exc.status_code == _SERVICE_UNAVAILABLE
    return False
