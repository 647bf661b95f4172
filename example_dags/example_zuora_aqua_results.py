"""
Export Zuora data with AQuA into a folder: files verified, published whole, with a manifest.

``export_accounts`` submits a snapshot of the accounts (every row, no window), waits, then streams each result file into
``$ZUORA_EXPORT_FOLDER/<run date>/`` (default ``/tmp/zuora-exports``): each file's SHA-256 and
record count are computed while it streams, checked against the batch's ``recordCount``, and
only then published under its final name; ``_manifest.json`` is written last. The task returns
the manifest (XCom ``return_value``). A retry after a failed download downloads the same job's
files again: it never submits a second job.

``submit_invoices`` → ``wait_for_invoices`` → ``download_invoices`` does the same in three
steps, for jobs watched by a sensor or submitted elsewhere: ``AquaDownloadResultsOperator``
downloads the files of any completed job by id. The destination can also be object storage
(``s3://bucket/prefix`` with ``destination_conn_id``). For what changed since the last run, use
``AquaIncrementalExportOperator`` (``example_zuora_aqua_incremental.py``).
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import DAG

from airflow_provider_zuora_aqua.callbacks import cancel_aqua_job_on_failure
from airflow_provider_zuora_aqua.operators.aqua import AquaDownloadResultsOperator, AquaSubmitJobOperator
from airflow_provider_zuora_aqua.sensors.aqua import AquaJobSensor

EXPORT_FOLDER = os.environ.get("ZUORA_EXPORT_FOLDER", "/tmp/zuora-exports")

with DAG(
    dag_id="example_zuora_aqua_results",
    start_date=datetime(2026, 1, 1),
    schedule="@daily",
    catchup=False,
    on_failure_callback=cancel_aqua_job_on_failure,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=1)},
    tags=["example", "zuora"],
) as dag:
    # [START howto_operator_zuora_aqua_submit_job_destination]
    export_accounts = AquaSubmitJobOperator(
        task_id="export_accounts",
        job_name="accounts-{{ ds_nodash }}",
        queries={"accounts": "select Id, Name, Balance, UpdatedDate from Account"},
        format="gzip",
        poll_interval=30,
        job_timeout=3 * 60 * 60,
        destination=EXPORT_FOLDER + "/{{ ds_nodash }}/accounts",
    )
    # [END howto_operator_zuora_aqua_submit_job_destination]

    # [START howto_sensor_zuora_aqua_job]
    submit_invoices = AquaSubmitJobOperator(
        task_id="submit_invoices",
        job_name="invoices-{{ ds_nodash }}",
        queries={"invoices": "select Id, InvoiceNumber, Amount from Invoice where Status = 'Posted'"},
        wait_for_completion=False,
    )
    wait_for_invoices = AquaJobSensor(
        task_id="wait_for_invoices",
        job_id="{{ ti.xcom_pull(task_ids='submit_invoices', key='aqua_job_id') }}",
        poke_interval=30,
        timeout=3 * 60 * 60,
    )
    # [END howto_sensor_zuora_aqua_job]
    # [START howto_operator_zuora_aqua_download_results]
    download_invoices = AquaDownloadResultsOperator(
        task_id="download_invoices",
        job_id="{{ ti.xcom_pull(task_ids='submit_invoices', key='aqua_job_id') }}",
        destination=EXPORT_FOLDER + "/{{ ds_nodash }}/invoices",
    )
    submit_invoices >> wait_for_invoices >> download_invoices
    # [END howto_operator_zuora_aqua_download_results]
