"""
Sending a recorded submit again: the one rule of every path that resends one (a retry's
re-attach, the failure callback).

A task records each submit (its ``Idempotency-Key`` and body) before sending it. A task that
died before it recorded the job id left only that submit: sent again with its key, Zuora answers
with the job the first request created (or creates it now, if that request never arrived).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from airflow_provider_zuora_aqua.exceptions import AquaSubmitInProgressError
from airflow_provider_zuora_aqua.jobs.request import submit_refused

if TYPE_CHECKING:
    from airflow_provider_zuora_aqua.hooks.aqua import ZuoraAquaHook
    from airflow_provider_zuora_aqua.tasks.job_records import TaskJobRecord

#: Pause between resends while Zuora still processes the first request with the key (``409``).
IN_PROGRESS_WAIT_SECONDS = 1.0


def resend_recorded_submit(
    hook: ZuoraAquaHook,
    record: TaskJobRecord,
    *,
    track_id: str | None,
    deadline: float | None,
    log: Any,
    clock: Callable[[], float] = time.monotonic,
) -> str | None:
    """
    The id of the job a recorded submit created, or None when it created none.

    * Zuora names the job: its id.
    * Zuora refuses the submit (the tenant's job limit, a ZOQL error, a key reused with another
      body, see :func:`~airflow_provider_zuora_aqua.jobs.request.submit_refused`): None. The key
      is spent, and the caller drops it from the record: it is never sent again, and the next
      submit gets a new key.
    * ``409`` (the first request is still in progress): sent again until ``deadline``, then
      raised (the key may still name a job: it stays recorded).
    * Any other error (transport, ``5xx`` after the hook's retries): raised, the key kept.

    :param deadline: on the scale of ``clock``; None: the hook's own retry budget only.
    """
    if record.submit_key is None or record.submit_body is None:
        return None
    while True:
        remaining = None if deadline is None else max(0.1, deadline - clock())
        try:
            job = hook.submit_job(
                record.submit_body, idempotency_key=record.submit_key, track_id=track_id, max_seconds=remaining
            )
        except AquaSubmitInProgressError:
            if deadline is None or deadline - clock() <= 0:
                raise
            time.sleep(min(IN_PROGRESS_WAIT_SECONDS, max(0.0, deadline - clock())))
            continue
        except Exception as exc:
            if not submit_refused(exc):
                raise
            log.warning("The recorded submit %s was refused (%s): its key is not sent again", record.submit_key, exc)
            return None
        log.info("The recorded submit %s names AQuA job %s", record.submit_key, job["id"])
        return str(job["id"])
