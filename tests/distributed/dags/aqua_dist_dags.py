"""DAGs run on the distributed stack (CeleryExecutor): short polls so that scenarios stay quick."""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

from airflow.sdk import DAG

from airflow_provider_zuora_aqua.callbacks import cancel_aqua_job_on_failure
from airflow_provider_zuora_aqua.operators.aqua import AquaSubmitJobOperator

START = datetime(2026, 1, 1)
QUERIES = {"accounts": "select Id, Name, Balance from Account"}
#: Every DAG here cancels the AQuA jobs of a failed run, as the docs recommend.
COMMON = {"start_date": START, "schedule": None, "catchup": False, "on_failure_callback": cancel_aqua_job_on_failure}
#: Where :func:`mark_callback_ran` leaves its marks (the tests read them).
MARKS_ENV = "AQUA_DIST_MARKS"


def mark_callback_ran(context) -> None:
    """Leave ``<run_id>.<try_number>`` in ``$AQUA_DIST_MARKS``: the callbacks before it have run."""
    ti = context["ti"]
    folder = Path(os.environ.get(MARKS_ENV, "/tmp/aqua-dist-marks"))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{ti.run_id}.{ti.try_number}").touch()


# Waits on a worker; no retry: a lost worker fails it, and the failure callback cancels its job.
with DAG(dag_id="aqua_dist_wait", **COMMON):
    AquaSubmitJobOperator(task_id="export", job_name="dist-wait", queries=QUERIES, poll_interval=1)

# Waits on a worker; one retry: a lost worker's try is retried on another worker, which re-attaches.
with DAG(dag_id="aqua_dist_retry", default_args={"retries": 1, "retry_delay": timedelta(seconds=1)}, **COMMON):
    AquaSubmitJobOperator(task_id="export", job_name="dist-retry", queries=QUERIES, poll_interval=1)

# Two deferred tasks: their triggers run on the triggerers.
with DAG(dag_id="aqua_dist_deferred", **COMMON):
    for name in ("first", "second"):
        AquaSubmitJobOperator(
            task_id=name, job_name=f"dist-deferred-{name}", queries=QUERIES, poll_interval=1, deferrable=True
        )

# apache/airflow#65400: Airflow before its fix ran on_failure_callback for a heartbeat timeout
# although a retry was to come. Here the failure callback is the retry callback, so that every
# Airflow version runs it there: the job the retry re-attaches to must survive it. The retry
# waits long enough for the callback to have run before it starts; a mark says it ran.
with DAG(dag_id="aqua_dist_cb_retry", **COMMON):
    AquaSubmitJobOperator(
        task_id="export",
        job_name="dist-callback-before-retry",
        queries=QUERIES,
        poll_interval=1,
        retries=1,
        retry_delay=timedelta(seconds=20),
        on_retry_callback=[cancel_aqua_job_on_failure, mark_callback_ran],
    )

# 60 exports at once against a tenant that runs 50 jobs at a time: the last ones wait for a slot.
# max_active_tasks lifts Airflow's own cap (16 per DAG) so that the tenant's limit is the one met.
with DAG(dag_id="aqua_dist_limit", max_active_tasks=60, **COMMON):
    AquaSubmitJobOperator.partial(task_id="export", queries=QUERIES, poll_interval=5, deferrable=True).expand(
        job_name=[f"dist-limit-{index}" for index in range(60)]
    )
