"""
The incremental export's engine: windows planned from what the destination holds, several AQuA
jobs at a time, each window published with its manifest last.

The watermark is never stored apart from the data: it is where the run of published windows
from ``start`` ends (:func:`~airflow_provider_zuora_aqua.incremental.windows.contiguous_end`).
A run exports the gaps up to ``now - lag``, oldest first; a window whose file is over Zuora's
size cap, or whose query ran past Zuora's time limit, is halved and its halves exported instead.

Every job in flight is in the task's :class:`~airflow_provider_zuora_aqua.tasks.record.TaskJobSet`
(its submit before it is sent, its id once known), so ``on_kill``, the failure callback and the
next try find all of them: the next try re-attaches to a job that still runs, or sends its
recorded submit again, and never exports a published window twice.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from airflow_provider_zuora_aqua.exceptions import (
    AquaError,
    AquaFileTooLargeError,
    AquaJobFailedError,
    AquaJobNotFoundError,
    AquaJobTimeoutError,
)
from airflow_provider_zuora_aqua.hooks.aqua import ZuoraAquaHook
from airflow_provider_zuora_aqua.incremental.ledger import clear_window, published_windows, window_folder
from airflow_provider_zuora_aqua.incremental.query import window_query
from airflow_provider_zuora_aqua.incremental.windows import (
    UTC,
    Window,
    contiguous_end,
    iso,
    plan_windows,
    whole_second,
)
from airflow_provider_zuora_aqua.jobs.request import build_job_request, submit_refused
from airflow_provider_zuora_aqua.jobs.slots import submit_until_accepted
from airflow_provider_zuora_aqua.jobs.status import AquaJobStatus, JobWatch, batches_of, job_failure_reason
from airflow_provider_zuora_aqua.results.delivery import MANIFEST_NAME, Manifest, download_job_results
from airflow_provider_zuora_aqua.results.destination import Destination
from airflow_provider_zuora_aqua.tasks.record import TaskJobSet

#: How Zuora says a query ran past its 3-hour limit (its wording is not documented; these cover
#: the forms seen and the simulator's). Any other failed batch fails the task.
_TOO_LONG = re.compile(r"exceed\w*\s+(the\s+)?(maximum\s+)?(\w+\s+)?time|time\s*limit|3\s*hours", re.IGNORECASE)


@dataclass
class WindowJob:
    """One window of one query, and the AQuA job exporting it."""

    query: str
    window: Window
    job_id: str | None = None
    watch: JobWatch | None = None
    next_poll: float = 0.0

    @property
    def slot(self) -> str:
        return slot_of(self.query, self.window)


def slot_of(query: str, window: Window) -> str:
    """The job's name in the task's record: ``<query>/<window folder>``."""
    return f"{query}/{window.slug}"


@dataclass
class Delivery:
    """A window published by this run: its job and its manifest."""

    query: str
    window: Window
    job: dict[str, Any]
    manifest: Manifest
    manifest_uri: str

    def to_json(self, cursor: str) -> dict[str, Any]:
        """What the task returns for the window (XCom)."""
        return {
            "query": self.query,
            "window": self.window.to_json(cursor),
            "manifest": self.manifest_uri,
            "records": self.manifest.records,
            "job_id": self.job.get("id"),
        }


@dataclass
class IncrementalExport:
    """
    One run of the incremental export (see the module docs). Built by the operator, which owns
    the arguments' validation; :meth:`run` returns the windows it published, oldest first.
    """

    hook: ZuoraAquaHook
    jobs: TaskJobSet
    destination: Destination
    destination_conn_id: str | None
    queries: Mapping[str, str]
    cursor: str
    start: datetime
    lag: timedelta
    max_window: timedelta
    file_format: str
    deleted: Mapping[str, Any] | None
    max_active_jobs: int
    poll_interval: float
    job_timeout: float | None
    track_id: str | None
    new_key: Callable[[], str]
    stopped: threading.Event
    log: Any
    now: Callable[[], datetime] = field(default_factory=lambda: _utc_now)
    clock: Callable[[], float] = field(default_factory=lambda: time.monotonic)
    #: The jobs this run watches, by slot: what ``on_kill`` cancels.
    in_flight: dict[str, WindowJob] = field(default_factory=dict)
    #: Per query, the windows published before this run and by it.
    published: dict[str, list[Window]] = field(default_factory=dict)

    def run(self) -> list[Delivery]:
        end = whole_second(self.now(), field="now") - self.lag
        queue = self._plan(end)
        self.log.info(
            "Incremental export up to %s (now - %s): %d window(s) to export, %d job(s) of an earlier try to re-attach",
            iso(end),
            self.lag,
            len(queue),
            len(self.in_flight),
        )
        delivered: list[Delivery] = []
        try:
            while queue or self.in_flight:
                self._check_stopped()
                while queue and len(self.in_flight) < self.max_active_jobs:
                    self._submit(queue.popleft())
                    self._check_stopped()
                for job in [job for job in self.in_flight.values() if job.next_poll <= self.clock()]:
                    self._poll(job, queue, delivered)
                if self.in_flight:
                    self.stopped.wait(max(0.0, min(job.next_poll for job in self.in_flight.values()) - self.clock()))
        except BaseException as exc:
            self.cancel_in_flight(f"the export stopped ({type(exc).__name__})")
            raise
        for query in self.queries:
            self.log.info("Watermark of %s: %s", query, iso(self.mark(query)))
        # Published as their jobs finished (a split window's halves last): returned oldest first.
        order = list(self.queries)
        return sorted(delivered, key=lambda delivery: (delivery.window.start, order.index(delivery.query)))

    def mark(self, query: str) -> datetime:
        """Where the run of published windows of ``query`` from ``start`` ends."""
        return contiguous_end(self.published.get(query, []), self.start)

    def cancel_in_flight(self, why: str, max_seconds: float | None = None) -> None:
        """Cancel every job this run watches (``on_kill``, or a failure); never raises."""
        deadline = None if max_seconds is None else self.clock() + max_seconds
        for job in list(self.in_flight.values()):
            remaining = None if deadline is None else deadline - self.clock()
            if job.job_id is None or (remaining is not None and remaining <= 0):
                continue
            try:
                self.hook.cancel_job_if_running(job.job_id, track_id=self.track_id, max_seconds=remaining)
                self.log.info("Cancelled AQuA job %s of %s: %s", job.job_id, job.slot, why)
            except Exception as exc:
                self.log.error("Could not cancel AQuA job %s of %s: %s", job.job_id, job.slot, exc)

    # -- planning ---------------------------------------------------------------------------

    def _plan(self, end: datetime) -> deque[WindowJob]:
        """Re-attach to the earlier tries' jobs, then plan the gaps, oldest window first."""
        for query in self.queries:
            self.published[query] = published_windows(self.destination, query, self.cursor)
        self._reattach()
        todo = []
        for order, query in enumerate(self.queries):
            taken = self.published[query] + [job.window for job in self.in_flight.values() if job.query == query]
            todo += [
                (window.start, order, WindowJob(query, window))
                for window in plan_windows(taken, self.start, end, self.max_window)
            ]
        return deque(job for _, _, job in sorted(todo, key=lambda item: item[:2]))

    def _reattach(self) -> None:
        """The jobs an earlier try recorded: a published window's is done, any other is watched again."""
        for slot, record in list(self.jobs.jobs.items()):
            query, _, slug = slot.partition("/")
            window = next((w for w in self.published.get(query, []) if w.slug == slug), None)
            if query not in self.queries or window is not None:
                # Published by the earlier try (or no longer asked for): its end was handled.
                self.jobs.drop(slot)
                continue
            job = WindowJob(query, _window_of(slug))
            job.job_id = record.job_id or self._resend(job, record.submit_key, record.submit_body)
            status = None if job.job_id is None else self._status(job.job_id)
            if status is None or (AquaJobStatus.is_terminal(status) and status != AquaJobStatus.COMPLETED):
                # Gone, cancelled (by on_kill) or failed: the window is planned and exported anew.
                self.jobs.drop(slot)
                continue
            self.log.info("Re-attaching to AQuA job %s (%s) of an earlier try for %s", job.job_id, status, slot)
            self.jobs.submitted(slot, str(job.job_id))
            self._watch(job)

    def _status(self, job_id: str) -> str | None:
        """The job's status, normalized; None when Zuora no longer knows it."""
        try:
            return AquaJobStatus.normalize(self.hook.get_job(job_id, track_id=self.track_id).get("status"))
        except AquaJobNotFoundError:
            return None

    def _resend(self, job: WindowJob, key: str | None, body: dict[str, Any] | None) -> str | None:
        """An earlier try died before recording the job id of a submit it sent: Zuora names the job."""
        if key is None or body is None:
            return None
        try:
            return str(self.hook.submit_job(body, track_id=self.track_id, idempotency_key=key)["id"])
        except AquaError as exc:
            if not submit_refused(exc):
                raise
            self.log.warning("The submit of an earlier try for %s cannot be sent again (%s)", job.slot, exc)
            return None

    # -- one job ----------------------------------------------------------------------------

    def _submit(self, job: WindowJob) -> None:
        body = self._body(job)

        def submit_once() -> dict[str, Any]:
            key = self.new_key()
            # Recorded before sending: whatever kills the task from here on, the key names the job.
            self.jobs.submitting(job.slot, key, body, self.hook.zuora_conn_id)
            try:
                return self.hook.submit_job(body, track_id=self.track_id, idempotency_key=key)
            except AquaError as exc:
                if submit_refused(exc):
                    self.jobs.drop(job.slot)
                raise

        # A full tenant is waited out: the jobs in flight keep running at Zuora meanwhile.
        answer = submit_until_accepted(submit_once, deadline=None, stopped=self.stopped, log=self.log, clock=self.clock)
        job.job_id = str(answer["id"])
        self.jobs.submitted(job.slot, job.job_id)
        self.log.info(
            "Submitted AQuA job %s for %s [%s, %s)", job.job_id, job.query, iso(job.window.start), iso(job.window.end)
        )
        self._watch(job)

    def _watch(self, job: WindowJob) -> None:
        assert job.job_id is not None
        deadline = None if self.job_timeout is None else self.clock() + self.job_timeout
        job.watch = JobWatch(
            job.job_id, poll_interval=self.poll_interval, deadline=deadline, clock=self.clock, log=self.log
        )
        job.next_poll = self.clock() + job.watch.next_wait()
        self.in_flight[job.slot] = job

    def _poll(self, job: WindowJob, queue: deque[WindowJob], delivered: list[Delivery]) -> None:
        assert job.job_id is not None and job.watch is not None
        try:
            answer = self.hook.get_job(job.job_id, track_id=self.track_id)
        except AquaJobNotFoundError:
            del self.in_flight[job.slot]
            self.jobs.drop(job.slot)
            self.log.warning("AQuA job %s of %s no longer exists: exporting the window again", job.job_id, job.slot)
            queue.appendleft(WindowJob(job.query, job.window))
            return
        except AquaError as exc:
            if not job.watch.tolerate(exc):
                raise
            answer = None
        if answer is not None:
            job.watch.saw(answer)
        if not job.watch.finished:
            if job.watch.timed_out:
                raise AquaJobTimeoutError(
                    f"AQuA job {job.job_id} of {job.slot} did not finish within {self.job_timeout:g} s",
                    job=job.watch.job,
                )
            job.next_poll = self.clock() + job.watch.next_wait()
            return
        finished = job.watch.job
        del self.in_flight[job.slot]
        reason = job_failure_reason(finished)
        if reason is None:
            try:
                delivered.append(self._publish(job, finished))
            except AquaFileTooLargeError as exc:
                self._split(job, queue, f"a file is over Zuora's size cap ({exc})")
        elif _ran_too_long(finished):
            self._split(job, queue, f"its query ran past Zuora's time limit ({reason})")
        else:
            self.jobs.drop(job.slot)
            raise AquaJobFailedError(reason, job=finished)
        # Only now: a completed job stays recorded until its window is published, so a retry
        # publishes it instead of exporting the window again.
        self.jobs.drop(job.slot)

    def _split(self, job: WindowJob, queue: deque[WindowJob], why: str) -> None:
        first, second = job.window.bisect()
        self.log.warning("Splitting %s in two: %s", job.slot, why)
        queue.extendleft([WindowJob(job.query, second), WindowJob(job.query, first)])

    def _publish(self, job: WindowJob, finished: dict[str, Any]) -> Delivery:
        """The window's files, then its manifest; a folder a killed run left half-written is emptied first."""
        folder = window_folder(self.destination, job.query, job.window)
        clear_window(folder)
        manifest = download_job_results(
            self.hook.fetch_file,
            finished,
            folder.local if folder.local is not None else folder.remote,
            destination_conn_id=self.destination_conn_id,
            track_id=self.track_id,
            labels={"query": job.query, "window": job.window.to_json(self.cursor)},
        )
        self.published[job.query] = sorted([*self.published[job.query], job.window])
        self.log.info("Published %s: %d records", job.slot, manifest.records)
        return Delivery(job.query, job.window, finished, manifest, folder.child(MANIFEST_NAME).uri)

    def _body(self, job: WindowJob) -> dict[str, Any]:
        query: dict[str, Any] = {
            "name": job.query,
            "query": window_query(self.queries[job.query], self.cursor, job.window, name=job.query),
            "type": "zoqlexport",
        }
        if self.deleted:
            query["deleted"] = dict(self.deleted)
        return build_job_request(
            queries=[query],
            job_name=f"{job.query[:16]}.{job.window.start:%Y%m%dT%H%M%S}",
            format=self.file_format,
            version="1.0",
            partner=None,
            project=None,
            use_query_labels=None,
            date_time_utc=True,
            job_options=None,
        )

    def _check_stopped(self) -> None:
        if self.stopped.is_set():
            raise AquaError("Stopped the incremental export: the task was killed")


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _window_of(slug: str) -> Window:
    start, _, end = slug.partition("_")
    return Window(*(datetime.strptime(bound, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC) for bound in (start, end)))


def _ran_too_long(job: dict[str, Any]) -> bool:
    """Whether a failed job's batches say their query ran past Zuora's time limit."""
    failed: Iterable[dict[str, Any]] = (
        batch
        for batch in batches_of(job)
        if AquaJobStatus.normalize(batch.get("status")) in (AquaJobStatus.ABORTED, AquaJobStatus.ERROR)
    )
    return any(_TOO_LONG.search(str(batch.get("message") or "")) for batch in failed)
