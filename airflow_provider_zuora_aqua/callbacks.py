"""
Failure callback that cancels the AQuA job of a task whose process died.

``on_kill`` runs only when Airflow stops a task process with SIGTERM. After a SIGKILL, an OOM
kill, a lost worker or a zombie task nothing runs in the task process, and the AQuA job would
keep running on Zuora's side. Airflow then runs failure callbacks elsewhere: a DAG-level
``on_failure_callback`` (in a child of the DAG processor, seconds after the task failed) and,
when the whole worker died, the task's own ``on_failure_callback``. This callback reads the job
id the failed try pushed to XCom (key ``aqua_job_id``) and cancels the job if it still runs.

Use it per task or in ``default_args`` (``AquaSubmitJobOperator`` installs it by default), and
at DAG level to cover a SIGKILL of the task process alone::

    DAG(..., on_failure_callback=cancel_aqua_job_on_failure)

It is idempotent (Airflow was seen to run a callback twice for one failure) and never raises.
It is deliberately not an ``on_retry_callback``: the next try re-attaches to a running job.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from airflow_provider_zuora_aqua.hooks.aqua import ZuoraAquaHook
from airflow_provider_zuora_aqua.utils.jobs import AquaJobStatus
from airflow_provider_zuora_aqua.utils.keys import AQUA_CONN_ID_XCOM_KEY, AQUA_JOB_ID_XCOM_KEY
from airflow_provider_zuora_aqua.utils.task_try import task_track_id

if TYPE_CHECKING:
    from airflow.sdk import Context

#: Callbacks run under the DAG processor's timeout: keep the cancel well inside it.
CALLBACK_CANCEL_SECONDS = 30.0

log = logging.getLogger(__name__)

__all__ = ["AQUA_CONN_ID_XCOM_KEY", "AQUA_JOB_ID_XCOM_KEY", "cancel_aqua_job_on_failure"]


def cancel_aqua_job_on_failure(context: Context) -> None:
    """Cancel the AQuA job recorded by the failed task instance in ``context``, if it still runs."""
    ti = context.get("ti")
    if ti is None:
        log.warning("No task instance in the callback context: no AQuA job to cancel")
        return
    try:
        job_id = _recorded(ti, AQUA_JOB_ID_XCOM_KEY)
        if not job_id:
            log.info("Task %s recorded no AQuA job id: nothing to cancel", ti.task_id)
            return
        conn_id = _recorded(ti, AQUA_CONN_ID_XCOM_KEY) or getattr(
            context.get("task"), "zuora_conn_id", ZuoraAquaHook.default_conn_name
        )
        hook = ZuoraAquaHook(zuora_conn_id=conn_id)
        track_id = task_track_id(ti)
        # Read first: after an ordinary failure the task has already ended its job.
        job = hook.get_job(job_id, track_id=track_id)
        if not AquaJobStatus.is_terminal(job.get("status")):
            job = hook.cancel_job_if_running(job_id, track_id=track_id, max_seconds=CALLBACK_CANCEL_SECONDS)
        log.info("Failure callback of task %s: AQuA job %s is %s", ti.task_id, job_id, job.get("status"))
    except Exception:
        log.exception("Failure callback of task %s could not cancel its AQuA job", ti.task_id)


def _recorded(ti: Any, key: str) -> str | None:
    map_index = getattr(ti, "map_index", -1)
    kwargs: dict[str, Any] = {"task_ids": ti.task_id, "key": key}
    if map_index is not None and map_index >= 0:
        kwargs["map_indexes"] = map_index
    value = ti.xcom_pull(**kwargs)
    return value if isinstance(value, str) else None
