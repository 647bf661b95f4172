"""Trigger that waits for a Zuora AQuA job in the triggerer, and cancels it if its task is stopped."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_zuora_aqua.client.async_client import shared_client_session
from airflow_provider_zuora_aqua.exceptions import AquaError
from airflow_provider_zuora_aqua.hooks.aqua import ZuoraAquaHook
from airflow_provider_zuora_aqua.jobs.event import POLL_FAILED, TIMEOUT, AquaJobEvent
from airflow_provider_zuora_aqua.jobs.status import FIRST_POLL_SECONDS, JobWatch, validate_interval

__all__ = ["POLL_FAILED", "TIMEOUT", "AquaJobTrigger"]
#: Airflow 3.3 added ``BaseTrigger.on_kill()``, fired when a user stops the deferred task.
TRIGGER_HAS_ON_KILL = "on_kill" in BaseTrigger.__dict__
#: Time the triggerer's ``on_kill`` gives the cancel (bounded by ``[triggerer] on_kill_timeout``).
TRIGGER_CANCEL_SECONDS = 10.0
#: Time ``on_kill`` gives the read of its task's state; then the job is cancelled (no orphan).
TRIGGER_STATE_READ_SECONDS = 10.0


class AquaJobTrigger(BaseTrigger):
    """
    Poll an AQuA job with backoff and fire exactly one event when it ends.

    The event is an :class:`~airflow_provider_zuora_aqua.jobs.event.AquaJobEvent` as a dict:
    ``status`` (the job's terminal status, ``timeout`` or ``poll_failed``), ``job_id``, ``job``
    (the last job JSON, or None), ``message``, ``request_id``, and for ``poll_failed`` the
    error's class name and codes. Token cache, headers, retries and error rules are the hook's.

    When a user marks the deferred task failed or success, or clears it, the triggerer calls
    :meth:`on_kill` (Airflow 3.3+), which cancels the job when ``cancel_on_kill`` is set. A
    triggerer restart never cancels a job: the trigger resumes elsewhere.

    :param job_id: The AQuA job id.
    :param zuora_conn_id: The Airflow connection of type ``zuora_aqua``.
    :param poll_interval: Longest wait between two polls, in seconds; must be > 0.
    :param end_time: Epoch seconds after which the trigger fires a ``timeout`` event.
    :param track_id: ``Zuora-Track-Id`` of every call.
    :param cancel_on_kill: Cancel the job when the deferred task is stopped by a user.
    """

    def __init__(
        self,
        *,
        job_id: str,
        zuora_conn_id: str = ZuoraAquaHook.default_conn_name,
        poll_interval: float = 30.0,
        end_time: float | None = None,
        track_id: str | None = None,
        cancel_on_kill: bool = True,
    ) -> None:
        super().__init__()
        self.job_id = job_id
        self.zuora_conn_id = zuora_conn_id
        self.poll_interval = validate_interval("poll_interval", poll_interval)
        self.end_time = end_time
        self.track_id = track_id
        self.cancel_on_kill = cancel_on_kill

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "job_id": self.job_id,
                "zuora_conn_id": self.zuora_conn_id,
                "poll_interval": self.poll_interval,
                "end_time": self.end_time,
                "track_id": self.track_id,
                "cancel_on_kill": self.cancel_on_kill,
            },
        )

    def _hook(self) -> ZuoraAquaHook:
        return ZuoraAquaHook(zuora_conn_id=self.zuora_conn_id)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = self._hook()
        try:
            async with shared_client_session():
                event = await self._wait(hook)
        except asyncio.CancelledError:
            if not TRIGGER_HAS_ON_KILL and self.cancel_on_kill:
                if await self._task_left_deferred_state():
                    await self._cancel("the deferred task was stopped")
                else:
                    self.log.info("Trigger stopped, its task still deferred: AQuA job %s keeps running", self.job_id)
            raise
        yield TriggerEvent(event.to_payload())

    async def on_kill(self) -> None:
        """
        Cancel the job when a user stopped the deferred task (marked it failed or success).

        A triggerer also "kills" a trigger it no longer owns because another triggerer took it
        over (it stalled past ``[triggerer] triggerer_health_check_threshold``), with the same
        call (apache/airflow#41231): then the task is still deferred, its trigger runs on the
        other triggerer, and the job must go on. Only a task that left the deferred state was
        stopped by a user; when its state cannot be read, the job is cancelled (no orphan).
        """
        if not self.cancel_on_kill:
            return
        # The triggerer cancels the trigger's task again at each of its syncs until the trigger
        # has ended, which would cut a slow on_kill (a busy triggerer) short and leave the job
        # running: the stop goes on shielded, bounded by its own deadlines.
        stop = asyncio.ensure_future(self._stop_the_job_if_the_task_was_stopped())
        while not stop.done():
            try:
                await asyncio.shield(stop)
            except asyncio.CancelledError:
                self.log.info("Cancelled again while stopping AQuA job %s: the stop goes on", self.job_id)

    async def _stop_the_job_if_the_task_was_stopped(self) -> None:
        try:
            stopped_by_user = self.task_instance is None or await asyncio.wait_for(
                self._task_left_deferred_state(), TRIGGER_STATE_READ_SECONDS
            )
        except Exception as exc:
            self.log.error("Could not read the state of the task of AQuA job %s (%s): cancelling it", self.job_id, exc)
            stopped_by_user = True
        if stopped_by_user:
            await self._cancel("the deferred task was stopped")
        else:
            self.log.info(
                "Trigger moved to another triggerer, its task still deferred: AQuA job %s goes on", self.job_id
            )

    async def _wait(self, hook: ZuoraAquaHook) -> AquaJobEvent:
        watch = JobWatch(
            self.job_id, poll_interval=self.poll_interval, deadline=self.end_time, clock=time.time, log=self.log
        )
        # A triggerer starts all its triggers at once (after a restart, hundreds): spread the
        # first polls over the first wait instead of sending them in one burst.
        await asyncio.sleep(random.uniform(0, min(FIRST_POLL_SECONDS, self.poll_interval)))
        while True:
            try:
                watch.saw(await hook.aget_job(self.job_id, track_id=self.track_id))
            except AquaError as exc:
                if not watch.tolerate(exc):
                    self.log.error("Could not read AQuA job %s: %s", self.job_id, exc)
                    return AquaJobEvent.poll_failed(self.job_id, exc)
            except Exception as exc:
                # Never crash run(): a crashed trigger fails its task without cancelling the job.
                # The task cancels it on this event. Only the type is logged: the text may echo an answer.
                self.log.error("Unexpected %s while reading AQuA job %s", type(exc).__name__, self.job_id)
                unexpected = AquaError(f"Unexpected {type(exc).__name__} while reading AQuA job {self.job_id}")
                return AquaJobEvent.poll_failed(self.job_id, unexpected)
            if watch.finished:
                status = str(watch.job["status"])  # a terminal status: present and a string
                return self._event(status, watch.job, f"AQuA job {self.job_id} ended with status {status!r}", hook)
            if watch.timed_out:
                return self._event(TIMEOUT, watch.job, f"AQuA job {self.job_id} did not finish in time", hook)
            await asyncio.sleep(watch.next_wait())

    def _event(self, status: str, job: dict[str, Any] | None, message: str, hook: ZuoraAquaHook) -> AquaJobEvent:
        return AquaJobEvent(
            status=status, job_id=self.job_id, job=job, message=message, request_id=hook.last_request_id
        )

    async def _cancel(self, reason: str) -> None:
        try:
            job = await self._hook().acancel_job_if_running(
                self.job_id, track_id=self.track_id, max_seconds=TRIGGER_CANCEL_SECONDS
            )
        except Exception as exc:
            self.log.error("Could not cancel AQuA job %s after %s: %s", self.job_id, reason, exc)
            return
        self.log.warning("Cancelled AQuA job %s because %s: it is now %s", self.job_id, reason, job.get("status"))

    async def _task_left_deferred_state(self) -> bool:
        """
        Tell a user's stop from a triggerer restart or move.

        The trigger is cancelled (``on_kill`` on Airflow 3.3+) in every case; only when its task
        instance is no longer deferred did a user stop it. A restart or a move to another
        triggerer leaves the task deferred and must not cancel.
        """
        from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance
        from asgiref.sync import sync_to_async

        ti = self.task_instance
        if ti is None:
            return False
        states = await sync_to_async(RuntimeTaskInstance.get_task_states)(
            dag_id=ti.dag_id, task_ids=[ti.task_id], run_ids=[ti.run_id], map_index=ti.map_index
        )
        state = states.get(ti.run_id, {}).get(ti.task_id)
        return state is not None and state != "deferred"
