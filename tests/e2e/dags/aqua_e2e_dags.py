"""DAGs run by the end-to-end tests: short polls so that scenarios stay quick."""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import DAG

from airflow_provider_zuora_aqua.callbacks import cancel_aqua_job_on_failure
from airflow_provider_zuora_aqua.operators.aqua import AquaSubmitJobOperator
from airflow_provider_zuora_aqua.sensors.aqua import AquaJobSensor

START = datetime(2026, 1, 1)
QUERIES = {"accounts": "select Id, Name, Balance from Account"}

with DAG(
    dag_id="aqua_e2e_wait",
    start_date=START,
    schedule=None,
    catchup=False,
    on_failure_callback=cancel_aqua_job_on_failure,
):
    AquaSubmitJobOperator(task_id="export", job_name="e2e-wait", queries=QUERIES, poll_interval=1)

with DAG(dag_id="aqua_e2e_execution_timeout", start_date=START, schedule=None, catchup=False):
    AquaSubmitJobOperator(
        task_id="export",
        job_name="e2e-execution-timeout",
        queries=QUERIES,
        poll_interval=1,
        execution_timeout=timedelta(seconds=6),
    )

with DAG(
    dag_id="aqua_e2e_retry",
    start_date=START,
    schedule=None,
    catchup=False,
    default_args={"retries": 1, "retry_delay": timedelta(seconds=1)},
):
    AquaSubmitJobOperator(task_id="export", job_name="e2e-retry", queries=QUERIES, poll_interval=1)

with DAG(dag_id="aqua_e2e_outcomes", start_date=START, schedule=None, catchup=False):
    for status in ("error", "aborted", "cancelled", "completed"):
        AquaSubmitJobOperator(task_id=f"ends_{status}", job_name=f"e2e-{status}", queries=QUERIES, poll_interval=1)

with DAG(dag_id="aqua_e2e_deferred", start_date=START, schedule=None, catchup=False):
    AquaSubmitJobOperator(task_id="export", job_name="e2e-deferred", queries=QUERIES, poll_interval=1, deferrable=True)

with DAG(dag_id="aqua_e2e_deferred_timeout", start_date=START, schedule=None, catchup=False):
    AquaSubmitJobOperator(
        task_id="export",
        job_name="e2e-deferred-timeout",
        queries=QUERIES,
        poll_interval=1,
        deferrable=True,
        job_timeout=8,
    )

# No DAG-level callback: only the failure callback the operator installs on the task.
with DAG(dag_id="aqua_e2e_zombie", start_date=START, schedule=None, catchup=False):
    AquaSubmitJobOperator(task_id="export", job_name="e2e-zombie", queries=QUERIES, poll_interval=1)

with DAG(dag_id="aqua_e2e_sensor", start_date=START, schedule=None, catchup=False):
    submitted = AquaSubmitJobOperator(
        task_id="submit", job_name="e2e-sensor", queries=QUERIES, wait_for_completion=False
    )
    job_id = "{{ ti.xcom_pull(task_ids='submit', key='aqua_job_id') }}"
    submitted >> [
        AquaJobSensor(task_id="wait_deferred", job_id=job_id, deferrable=True, poke_interval=1),
        AquaJobSensor(task_id="wait_poke", job_id=job_id, poke_interval=1),
    ]

# Exactly one job per try: a patient connection (retry_backoff 1 s) waits out Zuora's 409
# while the killed try's submit is still in flight.
with DAG(
    dag_id="aqua_e2e_exactly_once",
    start_date=START,
    schedule=None,
    catchup=False,
    default_args={"retries": 1, "retry_delay": timedelta(seconds=1)},
):
    AquaSubmitJobOperator(
        task_id="export",
        job_name="e2e-exactly-once",
        queries=QUERIES,
        poll_interval=1,
        zuora_conn_id="zuora_aqua_patient",
    )

# Two AQuA tasks of one run; the DAG-level callback cancels the jobs of both.
with DAG(
    dag_id="aqua_e2e_two_tasks",
    start_date=START,
    schedule=None,
    catchup=False,
    on_failure_callback=cancel_aqua_job_on_failure,
):
    for name in ("first", "second"):
        AquaSubmitJobOperator(task_id=name, job_name=f"e2e-two-{name}", queries=QUERIES, poll_interval=1)

# Results: download into a folder per run; a retry after a failed download downloads again.
with DAG(
    dag_id="aqua_e2e_download",
    start_date=START,
    schedule=None,
    catchup=False,
    default_args={"retries": 1, "retry_delay": timedelta(seconds=1)},
):
    AquaSubmitJobOperator(
        task_id="export",
        job_name="e2e-download",
        queries=QUERIES,
        poll_interval=1,
        destination=os.environ.get("AQUA_E2E_DOWNLOADS", "/tmp/aqua-e2e-downloads") + "/{{ run_id }}",
    )
