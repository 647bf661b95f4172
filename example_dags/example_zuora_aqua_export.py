"""
Export Zuora data with AQuA, and never leave the job running when the task stops.

``export_accounts`` submits a snapshot of the accounts (every row, no window) and waits for it.
For what changed since the last run, use ``AquaIncrementalExportOperator``
(``example_zuora_aqua_incremental.py``): a condition on ``UpdatedDate`` from the run's date
loses or doubles records (see the incremental guide in the docs). If the task is killed (marked failed,
cleared, ``execution_timeout``), times out or fails, the job is cancelled. The DAG-level
failure callback covers a task process that died without running ``on_kill`` (SIGKILL, OOM).
On a retry, the task re-attaches to the job of the previous try instead of submitting again.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG

from airflow_provider_zuora_aqua.callbacks import cancel_aqua_job_on_failure
from airflow_provider_zuora_aqua.operators.aqua import AquaSubmitJobOperator

# [START howto_callback_zuora_aqua_dag_level]
with DAG(
    dag_id="example_zuora_aqua_export",
    start_date=datetime(2026, 1, 1),
    schedule="@daily",
    catchup=False,
    on_failure_callback=cancel_aqua_job_on_failure,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=1)},
    tags=["example", "zuora"],
) as dag:
    # [END howto_callback_zuora_aqua_dag_level]
    # [START howto_operator_zuora_aqua_submit_job]
    export_accounts = AquaSubmitJobOperator(
        task_id="export_accounts",
        job_name="accounts-{{ ds_nodash }}",
        queries={
            "accounts": "select Id, Name, Balance, UpdatedDate from Account",
        },
        format="csv",
        poll_interval=30,
        job_timeout=3 * 60 * 60,
        execution_timeout=timedelta(hours=4),
        cancel_on_task_failure=True,  # the default: a lost worker, where the task's own callback runs
    )
    # [END howto_operator_zuora_aqua_submit_job]
