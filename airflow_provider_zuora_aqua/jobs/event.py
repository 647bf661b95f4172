"""The event :class:`~airflow_provider_zuora_aqua.triggers.aqua.AquaJobTrigger` fires, typed and checked.

The trigger writes it, Airflow stores it as JSON, and ``execute_complete`` reads it back in
another process: it is validated there, and a failure is raised again with its own class.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from airflow_provider_zuora_aqua import exceptions
from airflow_provider_zuora_aqua.exceptions import AquaApiError, AquaConfigurationError, AquaError

#: Event status when the job cannot be read for a reason waiting will not fix (not found, refused).
POLL_FAILED = "poll_failed"
#: Event status when ``end_time`` passed before the job finished.
TIMEOUT = "timeout"


@dataclass(frozen=True)
class AquaJobEvent:
    """
    What the trigger saw when it stopped waiting.

    :param status: the job's terminal status, :data:`TIMEOUT` or :data:`POLL_FAILED`.
    :param job_id: the AQuA job id.
    :param job: the last job JSON read (None if none was read).
    :param message: what happened, for the task log.
    :param request_id: ``Zuora-Request-Id`` of the last answer.
    :param error: for :data:`POLL_FAILED`, the class name of the error, so that it is raised again as such.
    :param status_code: for :data:`POLL_FAILED`, the HTTP status of the error.
    :param error_code: for :data:`POLL_FAILED`, the Zuora error code.
    """

    status: str
    job_id: str
    job: dict[str, Any] | None
    message: str
    request_id: str | None = None
    error: str | None = None
    status_code: int | None = None
    error_code: str | None = None

    @classmethod
    def poll_failed(cls, job_id: str, exc: AquaError) -> AquaJobEvent:
        return cls(
            status=POLL_FAILED,
            job_id=job_id,
            job=None,
            message=exc.message,
            request_id=exc.request_id,
            error=type(exc).__name__,
            status_code=exc.status_code,
            error_code=exc.error_code,
        )

    def to_payload(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_payload(cls, payload: object) -> AquaJobEvent:
        """Check an event read back from Airflow; an odd shape is an :class:`AquaError`, not a KeyError."""
        if not isinstance(payload, dict):
            raise AquaError(f"The AQuA trigger sent an event that is not a dict: {type(payload).__name__}")
        problems = [
            f"{name!r} is {type(payload.get(name)).__name__}"
            for name, kinds in _FIELD_TYPES.items()
            if not isinstance(payload.get(name), kinds)
        ]
        if problems:
            raise AquaError(f"The AQuA trigger sent an invalid event: {'; '.join(problems)}")
        fields: dict[str, Any] = {name: payload.get(name) for name in _FIELD_TYPES}
        return cls(**fields)

    def error_to_raise(self) -> AquaError:
        """The :data:`POLL_FAILED` error, rebuilt with its own class (e.g. ``AquaJobNotFoundError``)."""
        kind = getattr(exceptions, self.error or "", None)
        error_class: type[AquaError] = AquaError
        if isinstance(kind, type) and (issubclass(kind, AquaApiError) or kind in (AquaError, AquaConfigurationError)):
            error_class = kind
        return error_class(
            self.message, status_code=self.status_code, error_code=self.error_code, request_id=self.request_id
        )


_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "status": str,
    "job_id": str,
    "job": (dict, type(None)),
    "message": str,
    "request_id": (str, type(None)),
    "error": (str, type(None)),
    "status_code": (int, type(None)),
    "error_code": (str, type(None)),
}
