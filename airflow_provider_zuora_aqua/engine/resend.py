"""
Sending a recorded submit again: the one rule of every path that resends one (a retry's
re-attach, the failure callback).

A task records each submit (its ``Idempotency-Key`` and body) before sending it. A task that
died before it recorded the job id left only that submit: sent again with its key, Zuora answers
with the job the first request created (or creates it now, if that request never arrived).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from airflow_provider_zuora_aqua.exceptions import AquaError, AquaSubmitInProgressError
from airflow_provider_zuora_aqua.jobs.request import submit_refused
from airflow_provider_zuora_aqua.jobs.slots import submit_until_accepted

if TYPE_CHECKING:
    from airflow_provider_zuora_aqua.hooks.aqua import ZuoraAquaHook
    from airflow_provider_zuora_aqua.tasks.job_records import TaskJobRecord

#: Pause between resends while Zuora still processes the first request with the key (``409``).
IN_PROGRESS_WAIT_SECONDS = 1.0
#: Longest time ``409`` is waited out, whatever the deadline: a first request takes seconds.
IN_PROGRESS_MAX_SECONDS = 60.0


def resend_recorded_submit(
    hook: ZuoraAquaHook,
    record: TaskJobRecord,
    *,
    track_id: str | None,
    deadline: float | None,
    log: Any,
    stopped: threading.Event | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> str | None:
    """
    The id of the job a recorded submit created, or None when it created none.

    * Zuora names the job: its id.
    * Zuora refuses the submit (the tenant's job limit as ``90028``, a ZOQL error, a key reused
      with another body, see :func:`~airflow_provider_zuora_aqua.jobs.request.submit_refused`):
      None. The key is spent, and the caller drops it from the record: it is never sent again,
      and the next submit gets a new key.
    * ``409`` (the first request is still in progress) or ``429`` (answered before Zuora looks
      at the key, while the first request may have made the job): sent again with the same key,
      after a second for a ``409`` (for a minute at most) and after the slot wait for a ``429``,
      until ``deadline``; then raised (the key may still name a job: it stays recorded). Should
      a tenant keep a ``429`` under a key (Zuora's guide does not say; the simulator does not),
      the key is resent until ``deadline`` and the task fails with the key kept.
    * Any other error (transport, ``5xx`` after the hook's retries, ``401``/``403``/``404``
      that may come before Zuora looks at the key): raised, the key kept.

    :param deadline: on the scale of ``clock``; None: no bound but ``stopped``.
    :param stopped: ends a wait at once (``on_kill``); the resend then raises.
    """
    if record.submit_key is None or record.submit_body is None:
        return None
    key, body = record.submit_key, record.submit_body
    stopped = stopped or threading.Event()
    in_progress_until = clock() + IN_PROGRESS_MAX_SECONDS

    def send_once() -> dict[str, Any] | None:
        """The job the key names, or None when Zuora refused it; a 409 is waited out here."""
        while True:
            remaining = None if deadline is None else max(0.1, deadline - clock())
            try:
                return hook.submit_job(body, idempotency_key=key, track_id=track_id, max_seconds=remaining)
            except AquaSubmitInProgressError:
                left = min(in_progress_until, in_progress_until if deadline is None else deadline) - clock()
                if left <= 0:
                    raise
                log.info("The recorded submit %s is still in progress at Zuora: sent again in a second", key)
                if stopped.wait(min(IN_PROGRESS_WAIT_SECONDS, left)):
                    raise AquaError("Stopped sending the recorded submit again: the task was killed") from None
            except AquaError as exc:
                if not submit_refused(exc, key_may_name_a_job=True):
                    raise  # a 429 among them: waited out below, the same key sent again
                log.warning("The recorded submit %s was refused (%s): its key is not sent again", key, exc)
                return None

    job = submit_until_accepted(send_once, deadline=deadline, stopped=stopped, log=log, clock=clock)
    if job is None:
        return None
    log.info("The recorded submit %s names AQuA job %s", key, job["id"])
    return str(job["id"])
