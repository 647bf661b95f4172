"""
Failure callback that cancels the AQuA jobs of task processes that died.

``on_kill`` runs only when Airflow stops a task process with SIGTERM. After a SIGKILL, an OOM
kill, a lost worker or a zombie task nothing runs in the task process, and the AQuA job would
keep running on Zuora's side. Airflow then runs failure callbacks elsewhere: a DAG-level
``on_failure_callback`` (in a child of the DAG processor, seconds after the run failed) and,
when the whole worker died, the task's own ``on_failure_callback``.

* As a task's callback (``AquaSubmitJobOperator`` and ``AquaIncrementalExportOperator`` install
  it by default), it cancels the jobs that task instance recorded and that still run (see
  :class:`~airflow_provider_zuora_aqua.tasks.job_records.TaskJobRecord` and ``TaskJobSet``).
* At DAG level, ``DAG(..., on_failure_callback=cancel_aqua_job_on_failure)``, it cancels every
  AQuA job that any task instance of the failed run recorded, every map index of a mapped task
  on its own, and that still runs: a DAG-level callback is called once for the run, even when
  several AQuA tasks died.

Each job is cancelled through the rendered connection id recorded with it; recorded job ids
first, then the submits without one. A task instance that died after recording a submit but
before recording its job id is found by sending that keyed submit again: only a submit whose
answer never came is recorded (one Zuora refused was dropped from the record), and only with
its own key and connection. It is idempotent (Airflow was seen to run a callback twice for one failure),
bounded in time (``CALLBACK_CANCEL_SECONDS`` in all) and never raises.

It leaves a job alone while a retry of its task instance is still to come and will re-attach
to it (a durable task on Airflow 3.3+): the job then ends with the task's last try, which the
callback handles. So it may also be set as an ``on_retry_callback`` (older Airflow releases
call the failure callback where 3.3 calls the retry callback).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from airflow_provider_zuora_aqua.compat import HAS_TASK_STATE_STORE
from airflow_provider_zuora_aqua.engine.resend import resend_recorded_submit
from airflow_provider_zuora_aqua.hooks.aqua import ZuoraAquaHook
from airflow_provider_zuora_aqua.jobs.status import AquaJobStatus
from airflow_provider_zuora_aqua.tasks.job_records import (
    AQUA_CONN_ID_XCOM_KEY,
    AQUA_JOB_ID_XCOM_KEY,
    TaskJobRecord,
    TaskJobSet,
)
from airflow_provider_zuora_aqua.tasks.try_ids import map_index_of, task_track_id

if TYPE_CHECKING:
    from airflow.sdk import Context

#: Callbacks run under the DAG processor's timeout: all cancels of one call end within this.
CALLBACK_CANCEL_SECONDS = 30.0

log = logging.getLogger(__name__)

__all__ = ["AQUA_CONN_ID_XCOM_KEY", "AQUA_JOB_ID_XCOM_KEY", "cancel_aqua_job_on_failure"]


def cancel_aqua_job_on_failure(context: Context | None) -> None:
    """Cancel the AQuA jobs recorded by the failed task instance (task level) or run (DAG level) that still run."""
    if not context or context.get("ti") is None:
        log.warning("No task instance in the callback context: no AQuA job to cancel")
        return
    ti = context["ti"]
    if "reason" not in context and _retry_will_reattach(ti, context.get("task")):
        log.info(
            "Task %s try %s will be retried, and the retry re-attaches to its AQuA job: the job keeps running",
            ti.task_id,
            ti.try_number,
        )
        return
    deadline = time.monotonic() + CALLBACK_CANCEL_SECONDS
    try:
        records = [record for record in _recorded(context) if record.names_a_job]
    except ImportError:
        # ``airflow dags test`` runs DAG callbacks without a task supervisor, and XCom is read through it.
        log.warning("AQuA failure callback: XCom cannot be read in this process, so no AQuA job is cancelled here")
        return
    except Exception as exc:
        log.error("AQuA failure callback could not read the recorded AQuA jobs: %s", exc)
        return
    if not records:
        log.debug("Task %s recorded no AQuA job: nothing to cancel", ti.task_id)
        return
    track_id = task_track_id(ti)
    cancelled: set[tuple[str, str]] = set()
    # Known jobs first: a submit whose answer never came may take the whole budget to resolve
    # (Zuora answers 409 while it still processes the first request).
    known = [record for record in records if record.job_id]
    for record in known + [record for record in records if not record.job_id]:
        # Per map index: its recorded job id, or else the job its recorded submit names.
        job_id = record.job_id or _job_of_submit(record, track_id, deadline)
        if job_id is None or record.conn_id is None or (job_id, record.conn_id) in cancelled:
            continue
        cancelled.add((job_id, record.conn_id))
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            log.warning("AQuA failure callback ran out of time before AQuA job %s", job_id)
            continue
        _cancel_if_running(job_id, record.conn_id, track_id, remaining)


def _retry_will_reattach(ti: Any, task: Any) -> bool:
    """
    Whether a retry of this task instance is still to come and will take its job over: a
    callback run for a try that is not the last (apache/airflow#65400; older Airflow releases,
    or a callback also set as ``on_retry_callback``) must leave that job to it. Only a durable
    task on Airflow 3.3+ re-attaches; otherwise the retry submits anew and this job must stop.
    """
    try_number, max_tries = getattr(ti, "try_number", None), getattr(ti, "max_tries", None)
    if not (isinstance(try_number, int) and isinstance(max_tries, int) and try_number <= max_tries):
        return False
    return HAS_TASK_STATE_STORE and getattr(task, "durable", True) is True


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


def _job_of_submit(record: TaskJobRecord, track_id: str, deadline: float) -> str | None:
    """
    A task instance died after recording a submit but before recording its job id: Zuora names
    the job when that keyed submit is sent again (if the first request never left, this creates
    the job, which is then cancelled with the others). Never raises.
    """
    if record.conn_id is None:
        return None
    try:
        hook = ZuoraAquaHook(zuora_conn_id=record.conn_id)
        return resend_recorded_submit(hook, record, track_id=track_id, deadline=deadline, log=log)
    except Exception as exc:
        log.error("AQuA failure callback could not find the job of submit %s: %s", record.submit_key, exc)
        return None


def _recorded(context: Context) -> Iterator[TaskJobRecord]:
    """
    The records to look at: the failed task instance's own, or, for a DAG-level callback (its
    context has a ``reason``), those of every map index of every AQuA task of the run.
    """
    ti = context["ti"]
    if "reason" not in context or context.get("dag") is None:
        yield from _pull(ti, ti.task_id, map_index_of(ti), context.get("task"))
        return
    dag = context["dag"]
    for task_id in dag.task_ids:
        task = dag.task_dict.get(task_id)
        if task is None or not _records_aqua_jobs(task):
            continue
        for map_index in _map_indexes(ti, task):
            yield from _pull(ti, task_id, map_index, task)


def _pull(ti: Any, task_id: str, map_index: int, task: Any) -> Iterator[TaskJobRecord]:
    """
    What one task instance recorded: its job (submit operator), or its jobs in flight
    (incremental export). Only the keys its operator writes are read, each written when the task
    starts: Airflow logs every key it does not find as an error.
    """
    fallback_conn_id = _fallback_conn_id(task)
    one, several = _record_kinds(task)
    if one:
        yield TaskJobRecord.pull(ti, task_id, map_index, fallback_conn_id)
    if several:
        yield from TaskJobSet.pull(ti, task_id, map_index, fallback_conn_id)


def _operator_class(task: Any) -> Any:
    return getattr(task, "operator_class", type(task))


def _records_aqua_jobs(task: Any) -> bool:
    """
    Whether the task holds AQuA jobs in a record (``owns_aqua_jobs`` of our operators). A task
    of a serialized DAG (``airflow dags test`` runs DAG callbacks on one) is no instance of
    ours, but keeps the template fields that only our submitting operators have.
    """
    owns = getattr(_operator_class(task), "owns_aqua_jobs", None)
    if isinstance(owns, bool):
        return owns
    fields = getattr(task, "template_fields", None) or ()
    return "zuora_conn_id" in fields and "queries" in fields


def _record_kinds(task: Any) -> tuple[bool, bool]:
    """
    Whether the task records one job (``aqua_job_id``, ``aqua_submit``) and whether several at
    once (the incremental export's ``aqua_jobs``); both when the task does not say.
    """
    several = getattr(_operator_class(task), "holds_several_jobs", None)
    if isinstance(several, bool):
        return not several, several
    fields = getattr(task, "template_fields", None) or ()
    if "queries" in fields:
        several = "cursor" in fields and "start" in fields
        return not several, several
    return True, True


def _map_indexes(ti: Any, task: Any) -> list[int]:
    """
    The map indexes of a task in the failed run: ``-1`` alone for a task that is not mapped.

    Asked through the task states of the run (keys ``<task id>_<map index>`` for a mapped task):
    a DAG processor child cannot decode the answer to ``get_ti_count`` (seen on Airflow 3.3.2).
    """
    if not getattr(task, "is_mapped", False):
        return [-1]
    states = ti.get_task_states(dag_id=ti.dag_id, task_ids=[task.task_id], run_ids=[ti.run_id])
    prefix = f"{task.task_id}_"
    keys = (states or {}).get(ti.run_id) or {}
    return sorted(int(key[len(prefix) :]) for key in keys if key.startswith(prefix) and key[len(prefix) :].isdigit())


def _fallback_conn_id(task: Any) -> str:
    """
    The connection of a job recorded without one (an older release recorded none): the task's
    own, unless it is a template, which cannot be rendered here; then the default connection.
    """
    conn_id = getattr(task, "zuora_conn_id", None)
    if conn_id is None:
        conn_id = (getattr(task, "partial_kwargs", None) or {}).get("zuora_conn_id")
    if isinstance(conn_id, str) and conn_id and "{{" not in conn_id:
        return conn_id
    return ZuoraAquaHook.default_conn_name
