"""The DAG whose task process the cancel-latency benchmark kills."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG

from airflow_provider_zuora_aqua.operators.aqua import AquaSubmitJobOperator

with DAG(dag_id="aqua_bench_cancel", start_date=datetime(2026, 1, 1), schedule=None, catchup=False):
    AquaSubmitJobOperator(
        task_id="export", job_name="bench", queries={"accounts": "select Id from Account"}, poll_interval=1
    )
