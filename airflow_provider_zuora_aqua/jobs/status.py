"""What an AQuA job's status means, and how long to wait between two looks at it.

The job rules shared by the hook, the operators, the sensor and the trigger: the status words,
which ones are terminal, when a finished job counts as a failure, and the waiting policy
(:class:`JobWatch`) that the operator's poll loop and the trigger's share. No HTTP here.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator, Sequence
from enum import Enum
from typing import Any

from airflow_provider_zuora_aqua.exceptions import (
    AquaConfigurationError,
    AquaError,
    AquaJobError,
    AquaJobFailedError,
    is_retryable,
)

#: First wait between two polls of a job; it doubles up to the caller's poll interval.
FIRST_POLL_SECONDS = 2.0
#: Random spread of each wait between polls.
POLL_JITTER = 0.1


class AquaJobStatus(str, Enum):
    """Statuses of an AQuA job (and of its batches)."""

    SUBMITTED = "submitted"
    PENDING = "pending"
    EXECUTING = "executing"
    COMPLETED = "completed"
    ERROR = "error"
    ABORTED = "aborted"
    CANCELLED = "cancelled"
    FAILED = "failed"

    @staticmethod
    def normalize(status: object) -> str:
        """Statuses compare case-insensitively: Zuora's own answers mix case (``"format": "CSV"``)."""
        return str(status or "").strip().lower()

    @classmethod
    def is_terminal(cls, status: object) -> bool:
        return cls.normalize(status) in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset(
    {
        AquaJobStatus.COMPLETED,
        AquaJobStatus.ERROR,
        AquaJobStatus.ABORTED,
        AquaJobStatus.CANCELLED,
        AquaJobStatus.FAILED,
    }
)
#: A batch can also fail because its objects do not support deleted records.
_BATCH_FAILURE_STATUSES = TERMINAL_STATUSES - {AquaJobStatus.COMPLETED} | {"deleted_notallowed"}


def validate_interval(name: str, seconds: object) -> float:
    """
    Refuse a wait between polls that is not a positive number of seconds, naming the argument.

    ``0`` would poll in a tight loop (dozens of calls a second against Zuora's rate limits).
    """
    if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and seconds > 0 and math.isfinite(seconds):
        return float(seconds)
    raise AquaConfigurationError(
        f"{name} must be a positive number of seconds, got {seconds!r}; AQuA quotas favour 30 to 60 s"
    )


def poll_delays(poll_interval: float) -> Iterator[float]:
    """
    Waits between polls: 2 s, doubling up to ``poll_interval`` (AQuA quotas favour 30-60 s).

    Each wait is spread by ±10 % at random, so that many waiting jobs (a triggerer holds
    hundreds) do not poll in lockstep; the average stays the same.
    """
    delay = min(FIRST_POLL_SECONDS, poll_interval)
    while True:
        yield delay * random.uniform(1 - POLL_JITTER, 1 + POLL_JITTER)
        delay = min(delay * 2, poll_interval)


class JobWatch:
    """
    The waiting rules shared by the operator's poll loop and the trigger's: backoff, a log line
    per status change, transient read failures tolerated, and a deadline.

    The caller reads the job (sync or async) and reports each outcome; the watch says whether
    the job finished, whether the deadline passed, and how long to wait next.

    :param deadline: when to give up, on the scale of ``clock`` (None: never).
    """

    def __init__(
        self,
        job_id: str,
        *,
        poll_interval: float,
        deadline: float | None,
        clock: Callable[[], float],
        log: Any,
    ) -> None:
        self.job_id = job_id
        #: The last job JSON read (only the id until a read succeeds).
        self.job: dict[str, Any] = {"id": job_id}
        self._delays = poll_delays(poll_interval)
        self._deadline = deadline
        self._clock = clock
        self._log = log
        self._last_status: object = None

    def saw(self, job: dict[str, Any]) -> None:
        self.job = job
        status = job.get("status")
        if status != self._last_status:
            self._log.info("AQuA job %s is %s", self.job_id, status)
            self._last_status = status

    def tolerate(self, exc: AquaError) -> bool:
        """
        Say whether a failed read leaves the wait going: transient failures (connection,
        ``429``, ``5xx``, and answers that cannot be read: over the size cap, unreadable JSON, an
        odd shape, see :class:`~airflow_provider_zuora_aqua.exceptions.AquaInvalidAnswerError`)
        that outlasted the hook's retries do, so an outage or a garbled answer cannot cancel
        healthy jobs, and a server that keeps answering garbage ends the wait at its deadline;
        anything else (job not found, credentials refused) does not.
        """
        if not is_retryable(exc):
            return False
        self._log.warning("Could not read AQuA job %s (%s); still waiting for it", self.job_id, exc)
        return True

    @property
    def finished(self) -> bool:
        return AquaJobStatus.is_terminal(self.job.get("status"))

    @property
    def timed_out(self) -> bool:
        return self._deadline is not None and self._clock() >= self._deadline

    def next_wait(self) -> float:
        delay = next(self._delays)
        return delay if self._deadline is None else max(0.0, min(delay, self._deadline - self._clock()))


def batches_of(job: dict[str, Any]) -> list[dict[str, Any]]:
    """The job's batches; a ``batches`` that is not a list of objects (a hostile answer) counts as none."""
    batches = job.get("batches")
    if not isinstance(batches, list):
        return []
    return [batch for batch in batches if isinstance(batch, dict)]


def job_failure_reason(job: dict[str, Any], expected: Sequence[str] | None = None) -> str | None:
    """
    Say why a finished job is not a success, with the messages of its failed batches.

    ``None`` means success: the job is ``completed``, so is every batch (a batch of a completed
    job still ``pending`` or ``executing`` has no file: it is no success either), and it holds
    exactly the batches submitted (:func:`batch_mismatch`, when ``expected`` names them).
    """
    status = job.get("status")
    completed = AquaJobStatus.normalize(status) == AquaJobStatus.COMPLETED
    batch_statuses = [(batch, AquaJobStatus.normalize(batch.get("status"))) for batch in batches_of(job)]
    failed = [
        batch
        for batch, batch_status in batch_statuses
        if (batch_status != AquaJobStatus.COMPLETED if completed else batch_status in _BATCH_FAILURE_STATUSES)
    ]
    if completed and not failed:
        return batch_mismatch(job, expected)
    reason = f"AQuA job {job.get('id')} ended with status {status!r}"
    if failed:
        details = "; ".join(
            f"{batch.get('name')!r} {batch.get('status')}" + (f": {batch['message']}" if batch.get("message") else "")
            for batch in failed
        )
        reason += f"; failed batches: {details}"
    return reason


def batch_mismatch(job: dict[str, Any], expected: Sequence[str] | None) -> str | None:
    """
    Say how a completed job's batches differ from the queries submitted; None when they match.

    Zuora ignores a query on an object the API user may not read (error 90018) and still
    completes the job without its batch: delivering that job would lose the query's records
    silently. Without ``expected`` (a job submitted elsewhere), a job without any batch is refused.
    """
    names = [str(batch.get("name")) for batch in batches_of(job)]
    said = f" (Zuora said: {job['message']})" if isinstance(job.get("message"), str) and job["message"] else ""
    if expected is None:
        if names:
            return None
        return f"AQuA job {job.get('id')} completed without any batch{said}: Zuora dropped every query"
    missing = [name for name in expected if name not in names]
    extra = sorted(set(names) - set(expected))
    problems = []
    if missing:
        problems.append(
            f"without the batch of {', '.join(repr(name) for name in missing)}: Zuora ignores a query on an object "
            "the API user may not read (error 90018) and completes the job without it; grant the user access to "
            "the object, or remove the query"
        )
    if extra:
        problems.append(f"with batches no query asked for ({', '.join(repr(name) for name in extra)})")
    if len(names) != len(set(names)):
        problems.append("with two batches of one name")
    if not problems:
        return None
    return f"AQuA job {job.get('id')} completed " + "; and ".join(problems) + said + ": nothing of it is delivered"


#: Why a stateful (version 1.1) batch comes back ``full: true``: the warning that goes with it.
STATEFUL_FULL_LOAD_REASONS = (
    "Zuora reloads everything when the partner/project session is new (its first job), was idle "
    "for more than 180 days, or its query or deleted column changed since the last session; "
    "unless one of these was meant, downstream consumers get every record again"
)


def log_completed_batches(job: dict[str, Any], *, version: str, log: Any) -> None:
    """A line per batch of a completed job; a stateful batch that is a full load is warned about."""
    for batch in batches_of(job):
        log.info(
            "AQuA job %s batch %r completed: %s records, file %s",
            job.get("id"),
            batch.get("name"),
            batch.get("recordCount"),
            batch.get("fileId") or batch.get("segments"),
        )
        if version == "1.1" and batch.get("full") is True:
            log.warning(
                "AQuA job %s batch %r is a full load (full: true), not an increment: %s",
                job.get("id"),
                batch.get("name"),
                STATEFUL_FULL_LOAD_REASONS,
            )


def check_deliverable(job: dict[str, Any]) -> dict[str, Any]:
    """Return a job whose results can be downloaded (it completed, every batch too); else raise saying why."""
    status = job.get("status")
    mismatch = batch_mismatch(job, None) if AquaJobStatus.normalize(status) == AquaJobStatus.COMPLETED else None
    if mismatch is not None:
        raise AquaJobFailedError(mismatch, job=job)
    if AquaJobStatus.normalize(status) != AquaJobStatus.COMPLETED:
        if AquaJobStatus.is_terminal(status):
            reason = job_failure_reason(job) or f"AQuA job {job.get('id')} ended {status!r}"
            raise AquaJobFailedError(f"{reason}: it has no results to download", job=job)
        raise AquaJobError(
            f"AQuA job {job.get('id')} is {status!r}, not 'completed': its results are not ready. "
            "Wait for the job first (AquaSubmitJobOperator waits by default, or use AquaJobSensor).",
            job=job,
        )
    return job


def check_job_succeeded(job: dict[str, Any], request_id: str | None = None) -> dict[str, Any]:
    """Return a finished job that succeeded; else raise :class:`AquaJobFailedError` saying why."""
    reason = job_failure_reason(job)
    if reason is not None:
        raise AquaJobFailedError(reason, job=job, request_id=request_id)
    return job
