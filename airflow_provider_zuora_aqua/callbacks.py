"""
Failure callback that cancels the AQuA jobs of task processes that died.

``on_kill`` runs only when Airflow stops a task process with SIGTERM. After a SIGKILL, an OOM
kill, a lost worker or a zombie task nothing runs in the task process, and the AQuA job would
keep running on Zuora's side. Airflow then runs failure callbacks elsewhere: a DAG-level
``on_failure_callback`` (in a child of the DAG processor, seconds after the run failed) and,
when the whole worker died, the task's own ``on_failure_callback``.

* As a task's callback (``AquaSubmitJobOperator`` installs it by default), it cancels the job
  that task instance recorded in XCom (key ``aqua_job_id``), if it still runs.
* At DAG level, ``DAG(..., on_failure_callback=cancel_aqua_job_on_failure)``, it cancels every
  AQuA job that any task of the failed run recorded and that still runs: a DAG-level callback
  is called once for the run, even when several AQuA tasks died.

It is idempotent (Airflow was seen to run a callback twice for one failure), bounded in time
(``CALLBACK_CANCEL_SECONDS`` in all) and never raises. It is deliberately not an
``on_retry_callback``: the next try re-attaches to a running job.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_provider_zuora_aqua.exceptions import AquaSubmitInProgressError
from airflow_provider_zuora_aqua.hooks.aqua import ZuoraAquaHook
from airflow_provider_zuora_aqua.jobs.status import AquaJobStatus
from airflow_provider_zuora_aqua.tasks.record import (
    AQUA_CONN_ID_XCOM_KEY,
    AQUA_JOB_ID_XCOM_KEY,
    AQUA_SUBMIT_XCOM_KEY,
    task_track_id,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

#: Callbacks run under the DAG processor's timeout: all cancels of one call end within this.
CALLBACK_CANCEL_SECONDS = 30.0
#: Pause between resends while Zuora still processes a dead task's submit (``409``).
_IN_PROGRESS_WAIT_SECONDS = 1.0

log = logging.getLogger(__name__)

__all__ = ["AQUA_CONN_ID_XCOM_KEY", "AQUA_JOB_ID_XCOM_KEY", "cancel_aqua_job_on_failure"]


def cancel_aqua_job_on_failure(context: Context | None) -> None:
    """Cancel the AQuA jobs recorded by the failed task instance (task level) or run (DAG level) that still run."""
    if not context or context.get("ti") is None:
        log.warning("No task instance in the callback context: no AQuA job to cancel")
        return
    ti = context["ti"]
    deadline = time.monotonic() + CALLBACK_CANCEL_SECONDS
    try:
        recorded = _recorded(context)
    except ImportError:
        # ``airflow dags test`` runs DAG callbacks without a task supervisor, and XCom is read through it.
        log.warning("AQuA failure callback: XCom cannot be read in this process, so no AQuA job is cancelled here")
        return
    except Exception as exc:
        log.error("AQuA failure callback could not read the recorded AQuA job ids: %s", exc)
        return
    track_id = task_track_id(ti)
    jobs = recorded.jobs + [
        job for submit in recorded.unanswered_submits if (job := _job_of_submit(submit, track_id, deadline))
    ]
    if not jobs:
        log.info("Task %s recorded no AQuA job id: nothing to cancel", ti.task_id)
        return
    for job_id, conn_id in dict.fromkeys(jobs):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            log.warning("AQuA failure callback ran out of time before AQuA job %s", job_id)
            continue
        _cancel_if_running(job_id, conn_id, track_id, remaining)


def _cancel_if_running(job_id: str, conn_id: str, track_id: str, max_seconds: float) -> None:
    """Read first (after an ordinary failure the task has already ended its job), then cancel; never raise."""
    try:
        deadline = time.monotonic() + max_seconds
        hook = ZuoraAquaHook(zuora_conn_id=conn_id)
        job = hook.get_job(job_id, track_id=track_id, max_seconds=max_seconds)
        if not AquaJobStatus.is_terminal(job.get("status")):
            job = hook.cancel_job_if_running(
                job_id, track_id=track_id, max_seconds=max(0.1, deadline - time.monotonic())
            )
        log.info("AQuA failure callback: job %s is %s", job_id, job.get("status"))
    except Exception as exc:
        log.error("AQuA failure callback could not cancel AQuA job %s: %s", job_id, exc)


def _job_of_submit(submit: dict[str, Any], track_id: str, deadline: float) -> tuple[str, str] | None:
    """
    A task died after recording a submit but before recording its job id: send that keyed
    submit again, and Zuora names the job the first request created (if that request never
    left, this creates the job, which is then cancelled with the others). Never raises.
    """
    hook = ZuoraAquaHook(zuora_conn_id=submit["conn_id"])
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            job = hook.submit_job(
                submit["body"], idempotency_key=submit["key"], track_id=track_id, max_seconds=remaining
            )
        except AquaSubmitInProgressError:
            # The dead task's own request is still being processed: its answer will name the job.
            time.sleep(min(_IN_PROGRESS_WAIT_SECONDS, max(0.0, deadline - time.monotonic())))
            continue
        except Exception as exc:
            log.error("AQuA failure callback could not find the job of submit %s: %s", submit.get("key"), exc)
            return None
        log.info("AQuA failure callback: submit %s created AQuA job %s", submit["key"], job["id"])
        return job["id"], submit["conn_id"]
    log.warning("AQuA failure callback ran out of time before the job of submit %s", submit.get("key"))
    return None


@dataclass
class _Recorded:
    #: ``(job id, connection id)`` of the jobs whose ids were recorded.
    jobs: list[tuple[str, str]] = field(default_factory=list)
    #: Submits (``{"key", "body", "conn_id"}``) that may have created a job whose id was never recorded.
    unanswered_submits: list[dict[str, Any]] = field(default_factory=list)


def _recorded(context: Context) -> _Recorded:
    """
    What to look at: the failed task instance's own job, or, for a DAG-level callback (its
    context has a ``reason``), the jobs of every task of the run.
    """
    ti = context["ti"]
    if "reason" not in context or context.get("dag") is None:
        default_conn = getattr(context.get("task"), "zuora_conn_id", ZuoraAquaHook.default_conn_name)
        job_id, conn_id = _pull_one(ti, AQUA_JOB_ID_XCOM_KEY), _pull_one(ti, AQUA_CONN_ID_XCOM_KEY)
        if isinstance(job_id, str) and job_id:
            return _Recorded(jobs=[(job_id, conn_id if isinstance(conn_id, str) else default_conn)])
        submit = _valid_submit(_pull_one(ti, AQUA_SUBMIT_XCOM_KEY))
        return _Recorded(unanswered_submits=[submit] if submit else [])
    dag = context["dag"]
    recorded = _Recorded()
    for task_id in dag.task_ids:
        task = dag.task_dict.get(task_id)
        if task is None or not hasattr(task, "zuora_conn_id"):
            continue
        # One list per task, over all its map indexes, in the same order for every key.
        job_ids = [value for value in _pull_all(ti, task_id, AQUA_JOB_ID_XCOM_KEY) if isinstance(value, str) and value]
        conn_ids = _pull_all(ti, task_id, AQUA_CONN_ID_XCOM_KEY)
        if len(conn_ids) != len(job_ids):
            conn_ids = [None] * len(job_ids)
        recorded.jobs += [
            (job_id, conn_id if isinstance(conn_id, str) else task.zuora_conn_id)
            for job_id, conn_id in zip(job_ids, conn_ids)
        ]
        submits = [submit for value in _pull_all(ti, task_id, AQUA_SUBMIT_XCOM_KEY) if (submit := _valid_submit(value))]
        if len(submits) > len(job_ids):
            # Some map index died before recording its job id; a resend of a known job's key
            # only names that job again.
            recorded.unanswered_submits += submits
    return recorded


def _valid_submit(value: object) -> dict[str, Any] | None:
    if isinstance(value, dict) and isinstance(value.get("key"), str) and isinstance(value.get("body"), dict):
        conn_id = value.get("conn_id")
        return {**value, "conn_id": conn_id if isinstance(conn_id, str) else ZuoraAquaHook.default_conn_name}
    return None


def _pull_all(ti: Any, task_id: str, key: str) -> list[Any]:
    values = ti.xcom_pull(task_ids=[task_id], key=key)
    return [value for value in values or [] if value is not None]


def _pull_one(ti: Any, key: str) -> Any:
    map_index = getattr(ti, "map_index", -1)
    kwargs: dict[str, Any] = {"task_ids": ti.task_id, "key": key}
    if map_index is not None and map_index >= 0:
        kwargs["map_indexes"] = map_index
    return ti.xcom_pull(**kwargs)
