"""
The job engine: the whole life of a task's AQuA jobs, for one job or several at once.

Every operator that runs AQuA jobs goes through :class:`JobEngine`, so each step has one home:

* **re-attach**: the jobs an earlier try recorded (by id, or by a submit sent again through
  :func:`~airflow_provider_zuora_aqua.engine.resend.resend_recorded_submit`);
* **submit**: keyed, recorded before it is sent, a full tenant waited out
  (:func:`~airflow_provider_zuora_aqua.jobs.slots.submit_until_accepted`) with a new key after
  each refusal, or the same key when an earlier send of it may have made the job;
* **hold and watch**: the jobs in flight, polled by the rules of
  :class:`~airflow_provider_zuora_aqua.jobs.status.JobWatch` (the trigger follows the same rules
  in the triggerer), each against its ``job_timeout``;
* **cancel**: bounded, and never raising, from a failure or from ``on_kill``;
* **release**: a job whose end was handled leaves the task's record.

The engine speaks to Zuora only through the hook, and writes the record only through a
:class:`~airflow_provider_zuora_aqua.tasks.job_records.JobLedger`; the operators adapt Airflow's
arguments and context to it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_zuora_aqua.engine.resend import resend_recorded_submit
from airflow_provider_zuora_aqua.exceptions import (
    AquaError,
    AquaJobNotFoundError,
    AquaJobTimeoutError,
)
from airflow_provider_zuora_aqua.jobs.event import POLL_FAILED, TIMEOUT, AquaJobEvent
from airflow_provider_zuora_aqua.jobs.request import query_names, submit_refused
from airflow_provider_zuora_aqua.jobs.slots import submit_until_accepted
from airflow_provider_zuora_aqua.jobs.status import AquaJobStatus, JobWatch, job_failure_reason

if TYPE_CHECKING:
    from airflow_provider_zuora_aqua.hooks.aqua import ZuoraAquaHook
    from airflow_provider_zuora_aqua.tasks.job_records import JobLedger, TaskJobRecord

#: Total time ``on_kill`` may spend cancelling: Airflow sends SIGKILL a few seconds after SIGTERM.
ON_KILL_CANCEL_SECONDS = 3.0
#: Reads answering "no such job" before a job counts as gone: one lost read must not make a
#: second job for the same work while the first may still run.
UNKNOWN_READS_BEFORE_GONE = 3


@dataclass
class HeldJob:
    """A job the task holds: it runs (or its end is not handled yet) and stopping the task cancels it."""

    slot: str
    job_id: str
    hook: ZuoraAquaHook
    watch: JobWatch
    next_poll: float
    #: The names of the queries submitted (None: not known, a job re-attached by its id alone).
    expected: list[str] | None = None
    unknown_reads: int = 0


@dataclass
class Finished:
    """A held job that ended: its last JSON, or None when Zuora no longer knows it (a cancel was sent)."""

    slot: str
    job_id: str
    job: dict[str, Any] | None
    request_id: str | None
    hook: ZuoraAquaHook
    #: The names of the queries submitted: a completed job must hold exactly their batches.
    expected: list[str] | None = None


class JobEngine:
    """
    The AQuA jobs of one task try (see the module docs).

    :param hook: the hook new jobs are submitted through; a recorded job is read through the
        connection it was submitted with.
    :param ledger: the task's record of its jobs (XCom and the task state store).
    :param track_id: ``Zuora-Track-Id`` of every call.
    :param new_key: makes a new ``Idempotency-Key`` for each submit attempt.
    :param stopped: set by ``on_kill``; every wait ends at once when it is set.
    :param poll_interval: longest wait between two reads of a job, in seconds.
    :param job_timeout: seconds a held job may run before it is cancelled and the wait fails
        (None: no limit).
    """

    def __init__(
        self,
        hook: ZuoraAquaHook,
        ledger: JobLedger,
        *,
        track_id: str | None,
        new_key: Callable[[], str],
        stopped: threading.Event,
        log: Any,
        poll_interval: float = 30.0,
        job_timeout: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.hook = hook
        self.ledger = ledger
        self.track_id = track_id
        self.new_key = new_key
        self.stopped = stopped
        self.log = log
        self.poll_interval = poll_interval
        self.job_timeout = job_timeout
        self.clock = clock
        #: The jobs held, by slot: what a failure or ``on_kill`` cancels.
        self.in_flight: dict[str, HeldJob] = {}
        #: The last job held for each slot, ended or not (what the task reports as its job).
        self.job_ids: dict[str, str] = {}
        #: Jobs ``on_kill`` saw end: its thread never writes the record, the task's thread does.
        self._ended: set[str] = set()
        self._hooks: dict[str, ZuoraAquaHook] = {hook.zuora_conn_id: hook}

    # -- re-attach --------------------------------------------------------------------------

    def reattach(self, keep: Callable[[str], bool] = lambda slot: True) -> dict[str, dict[str, Any]]:
        """
        Hold again the jobs earlier tries recorded that still run or completed, and return them
        by slot; forget the others (failed, cancelled, gone, refused) and the slots ``keep`` rejects.
        """
        found = {}
        for slot, record in self.ledger.recorded().items():
            hook = self.hook_for(record.conn_id)
            job = self._earlier_job(hook, slot, record) if keep(slot) else None
            if job is None:
                self.ledger.drop(slot)
                continue
            self.ledger.submitted(slot, str(job["id"]))
            self.hold(slot, job, hook, expected=query_names(record.submit_body))
            found[slot] = job
        return found

    def _earlier_job(self, hook: ZuoraAquaHook, slot: str, record: TaskJobRecord) -> dict[str, Any] | None:
        job_id = record.job_id or resend_recorded_submit(
            hook,
            record,
            track_id=self.track_id,
            deadline=self._deadline(),
            log=self.log,
            stopped=self.stopped,
            clock=self.clock,
        )
        if job_id is None:
            return None
        try:
            job = hook.get_job(job_id, track_id=self.track_id)
        except AquaJobNotFoundError:
            self.log.warning("AQuA job %s of an earlier try (%s) no longer exists: submitting a new job", job_id, slot)
            return None
        status = job.get("status")
        if not AquaJobStatus.is_terminal(status):
            self.log.info("Re-attaching to AQuA job %s (%s) of an earlier try for %s", job_id, status, slot)
            return job
        if job_failure_reason(job) is None:
            self.log.info("AQuA job %s of an earlier try completed: using it without submitting again", job_id)
            return job
        self.log.info("AQuA job %s of an earlier try ended %s: submitting a new job", job_id, status)
        return None

    def hook_for(self, conn_id: str | None) -> ZuoraAquaHook:
        """The hook of a recorded job: it lives at the connection it was submitted with."""
        if conn_id is None:
            return self.hook
        if conn_id not in self._hooks:
            self.log.info("Using connection %s, the one the recorded AQuA job was submitted with", conn_id)
            self._hooks[conn_id] = type(self.hook)(zuora_conn_id=conn_id)
        return self._hooks[conn_id]

    # -- submit and hold ----------------------------------------------------------------------

    def submit(self, slot: str, body: dict[str, Any], *, deadline: float | None = None) -> dict[str, Any]:
        """
        Submit one job for ``slot`` and hold it; return the submit's answer.

        Each attempt gets a new ``Idempotency-Key``, recorded before it is sent; a refused attempt
        (its key spent) leaves the record, and a full tenant is waited out until ``deadline``
        (on the scale of ``clock``; None: wait on). A key whose earlier send may have made the
        job (its answer was lost, then a resend got a ``429``) is sent again, never replaced.
        """
        key_in_doubt: str | None = None

        def submit_once() -> dict[str, Any]:
            nonlocal key_in_doubt
            key = key_in_doubt or self.new_key()
            if key_in_doubt is None:
                # Recorded before sending: whatever kills the task from here on, the key names its job.
                self.ledger.submitting(slot, key, body, self.hook.zuora_conn_id)
            try:
                job = self.hook.submit_job(body, track_id=self.track_id, idempotency_key=key)
            except AquaError as exc:
                # The hook resends a key only after an answer that may hide a job.
                may_name_a_job = key_in_doubt is not None or self.hook.last_attempts > 1
                if submit_refused(exc, key_may_name_a_job=may_name_a_job):
                    self.ledger.drop(slot)
                    key_in_doubt = None
                else:
                    key_in_doubt = key
                raise
            self.log.info(
                "Submitted AQuA job %s for %s (Idempotency-Key %s, Zuora-Request-Id %s)",
                job["id"],
                slot,
                key,
                self.hook.last_request_id,
            )
            return job

        job = submit_until_accepted(
            submit_once, deadline=deadline, stopped=self.stopped, log=self.log, clock=self.clock
        )
        self.ledger.submitted(slot, str(job["id"]))
        self.hold(slot, job, self.hook, expected=query_names(body))
        if self.stopped.is_set():
            # SIGTERM came while the submit was in flight, when on_kill had no job id to cancel.
            self.cancel_all("the task was killed while submitting it")
            raise AquaError(f"AQuA job {job['id']} was cancelled: the task was killed while submitting it")
        return job

    def _deadline(self) -> float | None:
        """When a job held from now on, or a wait for it, is past ``job_timeout`` (None: no limit)."""
        return None if self.job_timeout is None else self.clock() + self.job_timeout

    def hold(
        self, slot: str, job: dict[str, Any], hook: ZuoraAquaHook | None = None, *, expected: list[str] | None = None
    ) -> HeldJob:
        """Hold a job from now on: it is watched, and a failure or ``on_kill`` cancels it."""
        job_id = str(job["id"])
        watch = JobWatch(
            job_id, poll_interval=self.poll_interval, deadline=self._deadline(), clock=self.clock, log=self.log
        )
        watch.saw(job)
        # A job already finished (re-attached) is handed back without another read.
        first_poll = self.clock() if watch.finished else self.clock() + watch.next_wait()
        held = self.in_flight[slot] = HeldJob(slot, job_id, hook or self.hook, watch, first_poll, expected)
        self.job_ids[slot] = job_id
        return held

    def hook_of(self, slot: str) -> ZuoraAquaHook:
        """The hook of the job held for ``slot`` (the connection it was submitted with)."""
        held = self.in_flight.get(slot)
        return held.hook if held is not None else self.hook

    # -- watch ----------------------------------------------------------------------------------

    def next_finished(self) -> Finished:
        """
        Poll the held jobs, each when its wait is over, until one ended; it is no longer held
        (its record stays until :meth:`release`).

        :raises AquaJobTimeoutError: a job ran past ``job_timeout``; it was cancelled.
        :raises AquaError: the task was stopped, or a job cannot be read for a reason waiting
            will not fix (credentials refused).
        """
        while True:
            self._check_stopped()
            for held in sorted(self.in_flight.values(), key=lambda held: held.next_poll):
                if held.next_poll <= self.clock():
                    finished = self._poll(held)
                    if finished is not None:
                        return finished
            if not self.in_flight:
                raise AquaError("No AQuA job is held: nothing to wait for")
            if self.stopped.wait(max(0.0, min(held.next_poll for held in self.in_flight.values()) - self.clock())):
                self._check_stopped()

    def wait(self, slot: str) -> Finished:
        """Wait for the job held for ``slot`` to end (the other held jobs are polled meanwhile)."""
        while True:
            finished = self.next_finished()
            if finished.slot == slot:
                return finished

    def _poll(self, held: HeldJob) -> Finished | None:
        if not held.watch.finished:
            try:
                job = held.hook.get_job(held.job_id, track_id=self.track_id)
            except AquaJobNotFoundError:
                return self._unknown(held)
            except AquaError as exc:
                if not held.watch.tolerate(exc):
                    raise
            else:
                held.unknown_reads = 0
                held.watch.saw(job)
        if held.watch.finished:
            del self.in_flight[held.slot]
            return Finished(held.slot, held.job_id, held.watch.job, held.hook.last_request_id, held.hook, held.expected)
        if held.watch.timed_out:
            raise self._timed_out(held)
        held.next_poll = self.clock() + held.watch.next_wait()
        return None

    def _unknown(self, held: HeldJob) -> Finished | None:
        """Zuora says it has no such job: read again a few times, then cancel it (it may run unseen) and let it go."""
        held.unknown_reads += 1
        if held.unknown_reads < UNKNOWN_READS_BEFORE_GONE:
            self.log.warning(
                "Zuora does not know AQuA job %s of %s (read %d of %d): reading it again",
                held.job_id,
                held.slot,
                held.unknown_reads,
                UNKNOWN_READS_BEFORE_GONE,
            )
            held.next_poll = self.clock() + held.watch.next_wait()
            return None
        self._cancel(held, "Zuora no longer knows it")
        del self.in_flight[held.slot]
        return Finished(held.slot, held.job_id, None, held.hook.last_request_id, held.hook)

    def _timed_out(self, held: HeldJob) -> AquaJobTimeoutError:
        limit = f"job_timeout of {self.job_timeout:g} s"
        cancelled = self._cancel(held, f"the {limit} was reached")
        del self.in_flight[held.slot]
        if cancelled is not None and AquaJobStatus.is_terminal(cancelled.get("status")):
            self.ledger.drop(held.slot)
        return AquaJobTimeoutError(
            f"AQuA job {held.job_id} of {held.slot} did not finish within the {limit}; it was cancelled",
            job=cancelled or held.watch.job,
            request_id=held.hook.last_request_id,
        )

    def settle_deferred(
        self, slot: str, event: AquaJobEvent, hook: ZuoraAquaHook, limit: str, *, expected: list[str] | None = None
    ) -> Finished:
        """
        What the trigger saw of the job it watched for ``slot``: the ended job; or, when the
        trigger timed out (``limit`` says which) or could not read the job, cancel it and raise.
        """
        self.job_ids[slot] = event.job_id
        job = event.job or {"id": event.job_id}
        if event.status not in (TIMEOUT, POLL_FAILED):
            return Finished(slot, event.job_id, job, event.request_id, hook, expected)
        self.hold(slot, job, hook)
        if event.status == POLL_FAILED:
            self.cancel_all("its status could not be read")
            raise event.error_to_raise()
        cancelled = self.cancel_all(f"the {limit} was reached").get(slot)
        raise AquaJobTimeoutError(
            f"AQuA job {event.job_id} did not finish within the {limit}; it was cancelled",
            job=cancelled or job,
            request_id=event.request_id,
        )

    def _check_stopped(self) -> None:
        if self.stopped.is_set():
            raise AquaError("Stopped waiting for AQuA jobs: the task was killed")

    # -- cancel and release -----------------------------------------------------------------------

    def release(self, slot: str) -> None:
        """The end of the slot's job was handled: a later try (or clear) starts anew."""
        self.in_flight.pop(slot, None)
        self.ledger.drop(slot)

    @contextmanager
    def cancelling_on_error(self) -> Iterator[None]:
        """Whatever ends the block with an error (the task stopped, a job failed), the held jobs are cancelled."""
        try:
            yield
        except BaseException as exc:
            self.cancel_all(f"the task stopped ({type(exc).__name__})")
            raise

    def cancel_all(self, reason: str, *, max_seconds: float | None = None) -> dict[str, dict[str, Any]]:
        """
        Cancel every held job, within ``max_seconds`` in all; never raise. A job seen to end
        leaves the record; one that could not be cancelled stays for the next try or the
        failure callback. Returns the cancelled jobs' JSON by slot.
        """
        deadline = None if max_seconds is None else self.clock() + max_seconds
        cancelled = {}
        for held in list(self.in_flight.values()):
            remaining = None if deadline is None else deadline - self.clock()
            if remaining is not None and remaining <= 0:
                self.log.warning("No time left to cancel AQuA job %s of %s", held.job_id, held.slot)
                continue
            job = None if held.job_id in self._ended else self._cancel(held, reason, max_seconds=remaining)
            del self.in_flight[held.slot]
            if held.job_id in self._ended or (job is not None and AquaJobStatus.is_terminal(job.get("status"))):
                self.ledger.drop(held.slot)
            if job is not None:
                cancelled[held.slot] = job
        return cancelled

    def cancel_on_kill(self) -> None:
        """
        ``on_kill``: cancel every held job in a few seconds at most, and never raise.

        It runs in a signal handler that may have interrupted this task's own calls (HTTP, or
        the task runner's channel to its supervisor, which takes a non-reentrant lock). So the
        cancels run in a thread, each hook with a new HTTP session, that the handler waits for
        only :data:`ON_KILL_CANCEL_SECONDS`; the thread never writes the record.
        """
        held = [held for held in list(self.in_flight.values()) if held.job_id not in self._ended]
        if not held:
            self.log.info("on_kill: no running AQuA job to cancel")
            return

        def cancel() -> None:
            deadline = self.clock() + ON_KILL_CANCEL_SECONDS
            sessions: dict[str, ZuoraAquaHook] = {}
            for job in held:
                remaining = deadline - self.clock()
                if remaining <= 0:
                    return
                hook = sessions.setdefault(job.hook.zuora_conn_id, job.hook.with_new_session())
                self._cancel(job, "the task was killed", hook=hook, max_seconds=remaining)

        canceller = threading.Thread(target=cancel, name="aqua-on-kill-cancel", daemon=True)
        canceller.start()
        canceller.join(ON_KILL_CANCEL_SECONDS + 0.5)
        if canceller.is_alive():
            self.log.warning(
                "on_kill: the cancel of AQuA job(s) %s did not finish in time", [job.job_id for job in held]
            )

    def _cancel(
        self, held: HeldJob, reason: str, *, hook: ZuoraAquaHook | None = None, max_seconds: float | None = None
    ) -> dict[str, Any] | None:
        """Cancel one job; log what happened and never raise (the task is stopping anyway)."""
        try:
            job = (hook or held.hook).cancel_job_if_running(
                held.job_id, track_id=self.track_id, max_seconds=max_seconds
            )
        except Exception as exc:
            self.log.error("Could not cancel AQuA job %s after %s: %s", held.job_id, reason, exc)
            return None
        if AquaJobStatus.is_terminal(job.get("status")):
            self._ended.add(held.job_id)
        self.log.warning("Cancelled AQuA job %s because %s: it is now %s", held.job_id, reason, job.get("status"))
        return job
