"""
The incremental export's engine: windows planned from what the destination holds, several AQuA
jobs at a time, each window published with its manifest last.

The watermark is never stored apart from the data: it is where the run of published windows
from ``start`` ends (:func:`~airflow_provider_zuora_aqua.incremental.windows.contiguous_end`).
A run exports the gaps up to ``now - lag``, oldest first; a window whose file is over Zuora's
size cap, or whose query ran past Zuora's time limit, is halved and its halves exported instead.

Its jobs are the job engine's (:class:`~airflow_provider_zuora_aqua.engine.job_engine.JobEngine`),
one slot per window in the task's :class:`~airflow_provider_zuora_aqua.tasks.job_records.TaskJobSet`
(its submit before it is sent, its id once known), so ``on_kill``, the failure callback and the
next try find all of them: the next try re-attaches to a job that still runs, or sends its
recorded submit again, and never exports a published window twice.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from airflow_provider_zuora_aqua.engine.job_engine import Finished, JobEngine
from airflow_provider_zuora_aqua.exceptions import AquaFileTooLargeError, AquaJobFailedError
from airflow_provider_zuora_aqua.incremental.lease import DestinationLease, LeaseHolder
from airflow_provider_zuora_aqua.incremental.ledger import clear_window, published_windows, window_folder
from airflow_provider_zuora_aqua.incremental.query import window_query
from airflow_provider_zuora_aqua.incremental.series import Series
from airflow_provider_zuora_aqua.incremental.windows import (
    UTC,
    Window,
    contiguous_end,
    iso,
    plan_exports,
    split_window,
    whole_second,
)
from airflow_provider_zuora_aqua.jobs.limits import ZuoraLimit, ran_too_long
from airflow_provider_zuora_aqua.jobs.request import build_job_request
from airflow_provider_zuora_aqua.jobs.status import job_failure_reason
from airflow_provider_zuora_aqua.results.delivery import MANIFEST_NAME, Manifest, download_job_results
from airflow_provider_zuora_aqua.results.destination import Destination


def slot_of(query: str, window: Window) -> str:
    """The job's name in the task's record: ``<query>/<window folder>``."""
    return f"{query}/{window.slug}"


#: Zuora's rule for stateless exports that keep their own high-water mark: "set the new high
#: water mark to at least 2 hours earlier than the current time. It might take a long time for
#: some transactions to be completed." (docs.zuora.com, Aggregate Query API, "High water mark
#: approach for AQuA stateless queries").
ZUORA_LAG = timedelta(hours=2)
#: A difference between Zuora's clock and the worker's beyond this is logged with both times.
CLOCK_SKEW_WARNING_SECONDS = 5


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
    the arguments' validation; :meth:`run` returns the windows it published, oldest first. Its
    jobs are the engine's: submitted, re-attached, watched and cancelled there.
    """

    engine: JobEngine
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
    #: Who holds the destination's lease while this run writes (the task try).
    lease_holder: LeaseHolder
    #: How long to wait for a lease another export holds before failing.
    lease_wait: timedelta
    now: Callable[[], datetime] = field(default_factory=lambda: _utc_now)
    #: The lease of each query's folder, held while the run writes.
    leases: dict[str, DestinationLease] = field(default_factory=dict)
    #: The windows of the jobs held, by slot.
    windows: dict[str, tuple[str, Window]] = field(default_factory=dict)
    #: Per query, the windows published before this run and by it.
    published: dict[str, list[Window]] = field(default_factory=dict)

    @property
    def log(self) -> Any:
        return self.engine.log

    def run(self) -> list[Delivery]:
        if self.lag < ZUORA_LAG:
            self.log.warning(
                "lag is %s, under the 2 hours Zuora tells stateless exports to keep their high-water mark "
                "behind now: a record whose transaction commits more than %s after its UpdatedDate is never "
                "exported",
                self.lag,
                self.lag,
            )
        with ExitStack() as leases:
            # One writer per destination and query, from before the mark is read until the last publish.
            # In one order for every writer: two exports of the same queries never wait on each other.
            for query in sorted(self.queries):
                self.leases[query] = leases.enter_context(
                    DestinationLease.acquire(
                        self.destination.child(query),
                        self.lease_holder,
                        wait_seconds=self.lease_wait.total_seconds(),
                        stop=self.engine.stopped,
                        log=self.log,
                    )
                )
            delivered = self._export(self._now() - self.lag)
        for query in self.queries:
            self.log.info("Watermark of %s: %s", query, iso(self.mark(query)))
        # Published as their jobs finished (a split window's halves last): returned oldest first.
        order = list(self.queries)
        return sorted(delivered, key=lambda delivery: (delivery.window.start, order.index(delivery.query)))

    def _now(self) -> datetime:
        """
        Now, by the earlier of Zuora's clock (the ``Date`` of its answers) and this worker's, in
        whole seconds: a worker ahead of Zuora must not close windows on records Zuora has not
        stamped yet.
        """
        worker = whole_second(self.now(), field="now")
        zuora = self.engine.hook.zuora_now()
        if zuora is None:
            self.log.warning("No answer from Zuora carried a usable Date header: windows end by this worker's clock")
            return worker
        zuora = zuora.replace(microsecond=0)
        if abs((zuora - worker).total_seconds()) > CLOCK_SKEW_WARNING_SECONDS:
            self.log.warning(
                "Zuora's clock says %s, this worker's %s: windows end by the earlier (set the worker's clock by NTP)",
                iso(zuora),
                iso(worker),
            )
        return min(worker, zuora)

    def _export(self, end: datetime) -> list[Delivery]:
        with self.engine.cancelling_on_error():
            queue = self._plan(end)
            self.log.info(
                "Incremental export up to %s (now - %s): %d window(s) to export, %d job(s) of an earlier try "
                "to re-attach",
                iso(end),
                self.lag,
                len(queue),
                len(self.windows),
            )
            delivered: list[Delivery] = []
            while queue or self.engine.in_flight:
                while queue and len(self.engine.in_flight) < self.max_active_jobs:
                    self._submit(*queue.popleft())
                self._finished(self.engine.next_finished(), queue, delivered)
        return delivered

    def mark(self, query: str) -> datetime:
        """Where the run of published windows of ``query`` from ``start`` ends."""
        return contiguous_end(self.published.get(query, []), self.start)

    # -- planning ---------------------------------------------------------------------------

    def _plan(self, end: datetime) -> deque[tuple[str, Window]]:
        """Re-attach to the earlier tries' jobs, then plan the gaps, oldest window first."""
        for query in self.queries:
            # Refused here, before any submit or resend: another query's windows in this folder.
            self.published[query] = published_windows(self.destination, query, self.cursor, self._series(query))
        for slot in self.engine.reattach(keep=self._still_wanted):
            query, _, slug = slot.partition("/")
            self.windows[slot] = (query, Window.from_slug(slug))
        taken = {
            query: self.published[query] + [window for q, window in self.windows.values() if q == query]
            for query in self.queries
        }
        # Counted before any window is made: a plan over the bound is refused before anything is sent.
        planned = plan_exports(taken, self.start, end, self.max_window)
        todo = [
            (window.start, order, query, window)
            for order, query in enumerate(self.queries)
            for window in planned[query]
        ]
        return deque((query, window) for _, _, query, window in sorted(todo, key=lambda item: item[:2]))

    def _still_wanted(self, slot: str) -> bool:
        """An earlier try's job is watched again unless its window was published or its query is no longer asked for."""
        query, _, slug = slot.partition("/")
        return query in self.queries and not any(window.slug == slug for window in self.published.get(query, []))

    # -- one job ----------------------------------------------------------------------------

    def _submit(self, query: str, window: Window) -> None:
        slot = slot_of(query, window)
        # A full tenant is waited out: the jobs in flight keep running at Zuora meanwhile.
        job = self.engine.submit(slot, self._body(query, window))
        self.windows[slot] = (query, window)
        self.log.info("Submitted AQuA job %s for %s [%s, %s)", job["id"], query, iso(window.start), iso(window.end))

    def _finished(self, finished: Finished, queue: deque[tuple[str, Window]], delivered: list[Delivery]) -> None:
        query, window = self.windows.pop(finished.slot)
        if finished.job is None:
            self.engine.release(finished.slot)
            self.log.warning(
                "AQuA job %s of %s no longer exists: exporting the window again", finished.job_id, finished.slot
            )
            queue.appendleft((query, window))
            return
        reason = job_failure_reason(finished.job, expected=finished.expected)
        if reason is None:
            try:
                delivered.append(self._publish(query, window, finished))
            except AquaFileTooLargeError as exc:
                self._split(query, window, queue, ZuoraLimit.FILE_SIZE, f"a file is over Zuora's size cap ({exc})")
        elif ran_too_long(finished.job):
            self._split(
                query, window, queue, ZuoraLimit.PROCESSING_TIME, f"its query ran past Zuora's time limit ({reason})"
            )
        else:
            self.engine.release(finished.slot)
            raise AquaJobFailedError(reason, job=finished.job)
        # Only now: a completed job stays recorded until its window is published, so a retry
        # publishes it instead of exporting the window again.
        self.engine.release(finished.slot)

    def _split(self, query: str, window: Window, queue: deque[tuple[str, Window]], limit: ZuoraLimit, why: str) -> None:
        first, second = split_window(window, limit, query=query)
        self.log.warning("Splitting %s in two: %s", slot_of(query, window), why)
        queue.extendleft([(query, second), (query, first)])

    def _publish(self, query: str, window: Window, finished: Finished) -> Delivery:
        """The window's files, then its manifest; a folder a killed run left half-written is emptied first."""
        assert finished.job is not None
        self.leases[query].check()
        folder = window_folder(self.destination, query, window)
        clear_window(folder)
        manifest = download_job_results(
            finished.hook.fetch_file,
            finished.job,
            folder.local if folder.local is not None else folder.remote,
            destination_conn_id=self.destination_conn_id,
            track_id=self.engine.track_id,
            labels={"query": query, "window": window.to_json(self.cursor), "series": self._series(query).to_json()},
            # Nothing is published once another writer took the lease (this one was stalled past it).
            before_manifest=self.leases[query].check,
        )
        self.published[query] = sorted([*self.published[query], window])
        self.log.info("Published %s: %d records", slot_of(query, window), manifest.records)
        return Delivery(query, window, finished.job, manifest, folder.child(MANIFEST_NAME).uri)

    def _series(self, query: str) -> Series:
        return Series.of(self.queries[query], self.cursor, self.deleted, self.file_format)

    def _body(self, query: str, window: Window) -> dict[str, Any]:
        query_json: dict[str, Any] = {
            "name": query,
            "query": window_query(self.queries[query], self.cursor, window, name=query),
            "type": "zoqlexport",
        }
        if self.deleted:
            query_json["deleted"] = dict(self.deleted)
        return build_job_request(
            queries=[query_json],
            job_name=f"{query[:16]}.{window.start:%Y%m%dT%H%M%S}",
            format=self.file_format,
            version="1.0",
            partner=None,
            project=None,
            use_query_labels=None,
            date_time_utc=True,
            job_options=None,
        )


def _utc_now() -> datetime:
    return datetime.now(UTC)
