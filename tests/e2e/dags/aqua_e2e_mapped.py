"""A mapped AQuA task with the DAG-level failure callback: each map index talks to its own connection."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG

from airflow_provider_zuora_aqua.callbacks import cancel_aqua_job_on_failure
from airflow_provider_zuora_aqua.operators.aqua import AquaSubmitJobOperator

with DAG(
    dag_id="aqua_e2e_mapped",
    start_date=datetime(2026, 1, 1),
    schedule=None,
    catchup=False,
    default_args={"retries": 1, "retry_delay": timedelta(seconds=1)},
    on_failure_callback=cancel_aqua_job_on_failure,
):
    # The connection id is a template: only the task knows what it renders to (zuora_e2e_0, zuora_e2e_1).
    AquaSubmitJobOperator.partial(
        task_id="export",
        queries={"accounts": "select Id, Name from Account"},
        poll_interval=1,
        zuora_conn_id="zuora_e2e_{{ ti.map_index }}",
    ).expand(job_name=["e2e-mapped-0", "e2e-mapped-1"])
