"""Tokens and jobs behind one lock; job status is computed lazily from a monotonic clock.

Lifecycle of a job submitted at ``t0`` with ``job_seconds = J``:
``submitted`` until ``t0 + Q`` (``queue_seconds``, by default ``min(0.5, J / 10)``),
then ``executing`` until ``t0 + J``, then ``completed``. AQuA runs a job's queries one
after another, so the executing window is split evenly between the batches: each batch is
``pending``, then ``executing``, then ``completed`` (with its ``recordCount`` and
``fileId``) at its share's end; the last batch completes with the job. A cancel or a
forced outcome freezes the job at that moment.

A completed batch's file (or each of its ``segments``) is downloadable until
``file_purge_seconds`` after the batch completed, or until the files are purged by hand.

A query on an object with a table in the tenant (:mod:`.tenant`) exports the rows visible at
submit (one snapshot per job, as AQuA runs a job's queries in one transaction); other objects
export generated rows (:mod:`.results`).

The query-time limit: a batch with more than ``max_query_rows`` records stands in for a query
that ran past Zuora's 3 hours. It runs its share of the job, then ends ``aborted`` with
:data:`~.errors.QUERY_TIME_LIMIT_MESSAGE`; the job ends ``aborted`` then too, the batches after
it ``aborted`` without running (message empty). Batches before it completed and keep their
files, as after a cancel.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from . import errors, results
from .errors import QUERY_TIME_LIMIT_MESSAGE, AquaError
from .submit import JobSpec, QuerySpec
from .tenant import DeletedExport, Tenant
from .where import ZoqlValueError
from .zoql import parse_datetime_literal

TERMINAL_STATUSES = ("completed", "error", "aborted", "cancelled")
_ACTIVE_STATUSES = ("submitted", "executing")
_SUBMIT_PHASE_MAX = 0.5
_TOKEN_SCOPE = "entity.simulated platform.write service.aqua.read service.aqua.write tenant.9999999 user.simulator"


def zuora_timestamp(wall_seconds: float) -> str:
    """Zuora's job timestamp format, in UTC: ``2026-11-25T13:52:00+0000``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S+0000", time.gmtime(wall_seconds))


@dataclass
class _Batch:
    batch_id: str
    file_id: str
    spec: QuerySpec
    record_count: int
    full: bool | None
    # File ids of the segments of a split stateful full load, in row order; empty if not split.
    segment_ids: tuple[str, ...] = ()
    # The rendered rows of a query on a tenant table (None: generated rows) and header cells before the fields'.
    table_rows: tuple[tuple[str | None, ...], ...] | None = None
    leading_header: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Outcome:
    """A terminal status imposed at ``at`` (monotonic) by a cancel or by ``finish_job``."""

    status: str
    at: float
    batch_statuses: tuple[str, ...]
    message: str


@dataclass
class _Job:
    job_id: str
    spec: JobSpec
    batches: list[_Batch]
    submitted_at: float
    # The tenant clock at submit, as POSIX seconds: job times are read from it.
    submitted_wall: float
    job_seconds: float
    queue_seconds: float
    max_query_rows: int | None = None
    outcome: _Outcome | None = None
    files_purged: bool = False
    # The first batch over the query-time limit (it and the job end aborted), None if none.
    abort_index: int | None = None
    # The tenant clock at submit (the start of a stateful session's next increment).
    tenant_submitted: datetime | None = None
    # Every submitted query's batch, shown until the job executes; ``batches`` are those that run
    # (a query on an object the API user may not read is dropped then).
    listed_batches: list[_Batch] = field(default_factory=list)
    # Monotonic instants derived from the above, set in __post_init__.
    executing_at: float = field(init=False)
    done_at: float = field(init=False)

    def __post_init__(self) -> None:
        self.executing_at = self.submitted_at + min(self.queue_seconds, self.job_seconds)
        self.done_at = self.submitted_at + self.job_seconds
        self.abort_index = next(
            (i for i, batch in enumerate(self.batches) if batch.record_count > (self.max_query_rows or float("inf"))),
            None,
        )
        if self.abort_index is not None:
            # The job ends when the over-long batch does.
            self.done_at = self.batch_bounds(self.abort_index)[1]

    def wall(self, monotonic: float) -> str:
        return zuora_timestamp(self.submitted_wall + (monotonic - self.submitted_at))

    def batch_bounds(self, index: int) -> tuple[float, float]:
        share = (self.submitted_at + self.job_seconds - self.executing_at) / len(self.batches)
        return self.executing_at + share * index, self.executing_at + share * (index + 1)

    def natural_status(self, now: float) -> str:
        if now >= self.done_at:
            return "completed" if self.abort_index is None else "aborted"
        return "executing" if now >= self.executing_at else "submitted"

    def natural_batch_status(self, index: int, now: float) -> str:
        if self.natural_status(now) == "submitted":
            return "pending"
        if self.abort_index is not None and index >= self.abort_index and now >= self.done_at:
            return "aborted"
        start, end = self.batch_bounds(index)
        if now >= end:
            return "completed"
        return "executing" if now >= start else "pending"

    def batch_message(self, index: int, now: float) -> str:
        if self.outcome is not None:
            return self.outcome.message
        aborted = index == self.abort_index and self.natural_batch_status(index, now) == "aborted"
        return QUERY_TIME_LIMIT_MESSAGE if aborted else ""

    def status(self, now: float) -> str:
        return self.outcome.status if self.outcome else self.natural_status(now)

    def batch_status(self, index: int, now: float) -> str:
        if self.outcome:
            return self.outcome.batch_statuses[index]
        return self.natural_batch_status(index, now)

    def batch_completed_at(self, index: int, now: float) -> float | None:
        """The monotonic instant a batch completed, None if it has not (or never will)."""
        if self.batch_status(index, now) != "completed":
            return None
        natural_end = self.batch_bounds(index)[1]
        # Forced to completed early (finish_job): it completed then.
        return natural_end if self.outcome is None else min(natural_end, self.outcome.at)

    def times(self, now: float) -> tuple[float | None, float | None]:
        """Monotonic start and end instants as the job JSON shows them (None: not yet)."""
        if self.outcome is None:
            start = self.executing_at if now >= self.executing_at else None
            return start, (self.done_at if now >= self.done_at else None)
        at = self.outcome.at
        if self.executing_at <= at:
            return self.executing_at, at
        # Forced to completed before it started: it ran in no time at all.
        return (at if self.outcome.status == "completed" else None), at


class AquaState:
    """All mutable simulator state (tokens, jobs, files); every method takes the lock."""

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        job_seconds: float,
        token_seconds: float,
        queue_seconds: float | None = None,
        concurrent_job_limit: int | None = None,
        file_rows: int | None = None,
        segment_rows: int | None = None,
        file_purge_seconds: float = float("inf"),
        tenant: Tenant | None = None,
        max_query_rows: int | None = None,
    ) -> None:
        self._client_id = client_id
        self._client_secret = client_secret
        self._job_seconds = job_seconds
        self._queue_seconds = min(_SUBMIT_PHASE_MAX, job_seconds / 10) if queue_seconds is None else queue_seconds
        self._token_seconds = token_seconds
        self._concurrent_job_limit = concurrent_job_limit
        self._file_rows = file_rows
        self._segment_rows = segment_rows
        self._file_purge_seconds = file_purge_seconds
        self.tenant = Tenant() if tenant is None else tenant
        self._max_query_rows = max_query_rows
        self._lock = threading.Lock()
        self._tokens: dict[str, float] = {}
        self._tokens_issued = 0
        self._jobs: dict[str, _Job] = {}
        # File id -> (job, batch index, 1-based segment number or None for the batch's own file).
        self._files: dict[str, tuple[_Job, int, int | None]] = {}

    # Tokens

    def credentials_match(self, client_id: str, client_secret: str) -> bool:
        """Whether the OAuth client credentials are the configured ones (constant time)."""
        id_ok = hmac.compare_digest(client_id.encode(), self._client_id.encode())
        secret_ok = hmac.compare_digest(client_secret.encode(), self._client_secret.encode())
        return id_ok and secret_ok

    def issue_token(self) -> dict[str, Any]:
        """A new bearer token, as the token endpoint's JSON body."""
        token = secrets.token_hex(16)
        with self._lock:
            self._tokens[token] = time.monotonic() + self._token_seconds
            self._tokens_issued += 1
        return {
            "access_token": token,
            "token_type": "bearer",
            # Zuora sends whole seconds; a fractional lifetime (tests) is kept as is.
            "expires_in": int(self._token_seconds) if float(self._token_seconds).is_integer() else self._token_seconds,
            "scope": _TOKEN_SCOPE,
            "jti": secrets.token_hex(16),
        }

    def token_valid(self, token: str) -> bool:
        """Whether ``token`` was issued here and has neither expired nor been revoked."""
        with self._lock:
            expires_at = self._tokens.get(token)
        return expires_at is not None and time.monotonic() < expires_at

    def expire_tokens(self) -> int:
        """Make every token issued so far invalid; return how many there were."""
        with self._lock:
            for token in self._tokens:
                self._tokens[token] = float("-inf")
            return len(self._tokens)

    @property
    def issued_tokens(self) -> list[str]:
        """Every token issued so far (tests check that none leaks into logs)."""
        with self._lock:
            return list(self._tokens)

    @property
    def tokens_issued(self) -> int:
        """How many tokens have been issued."""
        with self._lock:
            return self._tokens_issued

    # Jobs

    def submit(self, spec: JobSpec) -> dict[str, Any]:
        """Create a job; return the submit response (status ``submitted``)."""
        now = time.monotonic()
        with self._lock:
            self._check_concurrency(spec, now)
            previous = self._last_completed(spec.partner, spec.project, now) if spec.stateful else None
            first_load = spec.stateful and previous is None
            since = None if previous is None else self._increment_start(spec, previous)
            tenant_now = self.tenant.clock.now()
            # Stateful jobs export everything the first time, increments afterwards.
            listed = [
                self._new_batch(index, query, spec, first_load if spec.stateful else None, since)
                for index, query in enumerate(spec.queries)
            ]
            # Zuora ignores a query on an object the API user may not read (90018): it does not run.
            batches = [batch for batch in listed if self.tenant.may_read(batch.spec.parsed)]
            job = _Job(
                secrets.token_hex(16),
                spec,
                batches,
                now,
                # Job times come from the tenant's clock (skewed or set), like the Date header.
                tenant_now.timestamp(),
                self._job_seconds,
                self._queue_seconds,
                self._max_query_rows,
                tenant_submitted=tenant_now,
                listed_batches=listed,
            )
            self._jobs[job.job_id] = job
            for index, batch in enumerate(batches):
                # A split batch is downloadable only as its segments.
                for part, segment_id in enumerate(batch.segment_ids, start=1):
                    self._files[segment_id] = (job, index, part)
                if not batch.segment_ids:
                    self._files[batch.file_id] = (job, index, None)
            return _render(job, now, submitted=True)

    def _new_batch(
        self, index: int, query: QuerySpec, spec: JobSpec, full: bool | None, since: datetime | None
    ) -> _Batch:
        deleted = None
        # Deleted rows come with a stateful increment, or where forced (a stateless job must force);
        # a full load without force has the column but no deleted rows.
        if query.deleted is not None:
            include = not full or query.deleted["forceExport"]
            deleted = DeletedExport(query.deleted["column"], query.deleted["format"], include)
        try:
            table = self.tenant.export(
                query.parsed, spec.date_time_utc, deleted, since, export_zoql=query.batch_type == "zoqlexport"
            )
        except ZoqlValueError as exc:
            raise AquaError(
                errors.QUERY_SYNTAX_ERROR,
                f"There is a syntax error in one of the queries in the AQuA input. Query {index + 1}: {exc}.",
            ) from None
        if table is not None:
            count = len(table.rows)
        else:
            count = results.record_count(query.query) if self._file_rows is None else self._file_rows
        segments: tuple[str, ...] = ()
        # Zuora splits only a stateful full load, and only with segmentation enabled.
        if full and self._segment_rows is not None and count > self._segment_rows:
            segments = tuple(secrets.token_hex(16) for _ in range(-(-count // self._segment_rows)))
        return _Batch(
            secrets.token_hex(16),
            secrets.token_hex(16),
            query,
            count,
            full,
            segments,
            None if table is None else table.rows,
            () if table is None else table.leading_header,
        )

    def _increment_start(self, spec: JobSpec, previous: _Job) -> datetime | None:
        """Where a stateful increment starts: ``incrementalTime`` (tenant zone) or the last session."""
        if spec.incremental_time is not None:
            return parse_datetime_literal(spec.incremental_time, self.tenant.zone)
        return previous.tenant_submitted

    def job_ids(self) -> list[str]:
        """Ids of every job, in submit order."""
        with self._lock:
            return list(self._jobs)

    def jobs(self) -> list[dict[str, Any]]:
        """The JSON of every job as ``GET`` answers it now, in submit order."""
        now = time.monotonic()
        with self._lock:
            return [_render(job, now) for job in self._jobs.values()]

    def job(self, job_id: str) -> dict[str, Any]:
        """The job JSON as ``GET`` answers it; KeyError if unknown."""
        now = time.monotonic()
        with self._lock:
            return _render(self._jobs[job_id], now)

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel a job still running; raise the 90003 refusal otherwise."""
        now = time.monotonic()
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.status(now) in TERMINAL_STATUSES:
                raise errors.invalid_job_id_for_cancellation()
            # Batches already done keep their files, as on Zuora.
            statuses = tuple(
                "completed" if job.natural_batch_status(i, now) == "completed" else "cancelled"
                for i in range(len(job.batches))
            )
            job.outcome = _Outcome("cancelled", now, statuses, "")
            return _render(job, now)

    def finish(self, job_id: str, status: str, message: str = "") -> dict[str, Any]:
        """Force a terminal status on a job and all its batches, even one already finished."""
        if status not in TERMINAL_STATUSES:
            raise ValueError(f"status must be one of {', '.join(TERMINAL_STATUSES)}, not {status!r}")
        now = time.monotonic()
        with self._lock:
            job = self._jobs[job_id]
            job.outcome = _Outcome(status, now, (status,) * len(job.batches), message)
            return _render(job, now)

    def last_completed(self, partner: str, project: str) -> dict[str, Any]:
        """The last completed stateful job of a partner/project pair; KeyError if none."""
        now = time.monotonic()
        with self._lock:
            job = self._last_completed(partner, project, now)
            if job is None:
                raise KeyError((partner, project))
            return _render(job, now)

    def file_content(self, file_id: str) -> results.FileContent:
        """What a file holds; KeyError if it is unknown, not completed (yet), or purged."""
        now = time.monotonic()
        with self._lock:
            job, index, part = self._files[file_id]
            completed_at = job.batch_completed_at(index, now)
            if completed_at is None or job.files_purged or now - completed_at >= self._file_purge_seconds:
                raise KeyError(file_id)
            batch = job.batches[index]
            first_row, rows = 1, batch.record_count
            if part is not None:
                size = self._segment_rows or batch.record_count
                first_row = 1 + (part - 1) * size
                rows = min(size, batch.record_count - first_row + 1)
            table_rows = batch.table_rows
            if table_rows is not None:
                table_rows = table_rows[first_row - 1 : first_row - 1 + rows]
            return results.FileContent(
                batch_name=batch.spec.name,
                parsed=batch.spec.parsed,
                first_row=first_row,
                rows=rows,
                file_format=job.spec.format,
                use_query_labels=job.spec.use_query_labels,
                null_replacement=job.spec.null_replacement,
                part=part,
                table_rows=table_rows,
                leading_header=batch.leading_header,
            )

    def purge_files(self, job_id: str | None = None) -> list[str]:
        """Make the files of one job (or of every job so far) unavailable; return their ids.

        KeyError if ``job_id`` is unknown.
        """
        with self._lock:
            purged = set(self._jobs) if job_id is None else {self._jobs[job_id].job_id}
            for purged_id in purged:
                self._jobs[purged_id].files_purged = True
            return [file_id for file_id, (job, _, _) in self._files.items() if job.job_id in purged]

    def _check_concurrency(self, spec: JobSpec, now: float) -> None:
        # Zuora counts stateful and stateless jobs against separate limits.
        if self._concurrent_job_limit is None:
            return
        running = sum(
            1
            for job in self._jobs.values()
            if job.spec.stateful == spec.stateful and job.status(now) in _ACTIVE_STATUSES
        )
        if running >= self._concurrent_job_limit:
            raise AquaError(
                errors.CONCURRENT_JOB_LIMIT,
                f"The number of concurrent {'stateful' if spec.stateful else 'stateless'} AQuA jobs "
                f"has reached the limit of {self._concurrent_job_limit}.",
            )

    def _last_completed(self, partner: str | None, project: str | None, now: float) -> _Job | None:
        candidates = [
            job
            for job in self._jobs.values()
            if job.spec.stateful
            and (job.spec.partner, job.spec.project) == (partner, project)
            and job.status(now) == "completed"
        ]
        return max(candidates, key=lambda job: job.times(now)[1] or 0.0, default=None)


def _render_batch(job: _Job, index: int, now: float) -> dict[str, Any]:
    status = job.batch_status(index, now)
    return _batch_body(job.batches[index], status, job.batch_message(index, now))


def _batch_body(batch: _Batch, status: str, message: str | None) -> dict[str, Any]:
    """A batch's JSON; ``message`` None leaves it out (the submit answer has none)."""
    body: dict[str, Any] = {
        "batchId": batch.batch_id,
        "batchType": batch.spec.batch_type,
        "name": batch.spec.name,
        "query": batch.spec.query,
        "status": status,
        "recordCount": batch.record_count if status == "completed" else 0,
    }
    if message is not None:
        body["message"] = message
    if status == "completed":
        if batch.segment_ids:
            body["segments"] = list(batch.segment_ids)
        else:
            body["fileId"] = batch.file_id
    if batch.spec.api_version is not None:
        body["apiVersion"] = batch.spec.api_version
    if batch.full is not None:
        body["full"] = batch.full
    if batch.spec.deleted is not None:
        body["deleted"] = batch.spec.deleted
    return body


def _render(job: _Job, now: float, submitted: bool = False) -> dict[str, Any]:
    """The job JSON; ``submitted`` renders the submit response, before any progress."""
    spec = job.spec
    status = "submitted" if submitted else job.status(now)
    if status == "submitted":
        # Until it executes, the job lists every query, those it will drop (90018) too.
        batches = [_batch_body(batch, "pending", None if submitted else "") for batch in job.listed_batches]
    else:
        batches = [_render_batch(job, i, now) for i in range(len(job.batches))]
    body: dict[str, Any] = {
        "batches": batches,
        "encrypted": spec.encrypted,
        "format": spec.format.upper(),
        "id": job.job_id,
    }
    if spec.name is not None:
        body["name"] = spec.name
    body.update(
        sourceData="LIVE",
        status=status,
        version=spec.version,
        useQueryLabels=spec.use_query_labels,
        dateTimeUtc=spec.date_time_utc,
    )
    if not submitted:
        start, end = job.times(now)
        if start is not None:
            body["startTime"] = job.wall(start)
        if end is not None:
            body["endTime"] = job.wall(end)
    if spec.stateful:
        body["partner"] = spec.partner
        body["project"] = spec.project
        if any(batch.segment_ids for batch in job.batches):
            body["segmented"] = True
    if spec.incremental_time is not None:
        body["incrementalTime"] = spec.incremental_time
    if spec.offset is not None:
        body["offset"] = spec.offset
    if spec.notify_url is not None:
        body["notifyUrl"] = spec.notify_url
    return body
