"""
Export Zuora data with AQuA into object storage: an S3 bucket, through an ``aws`` connection.

``export_accounts`` submits a snapshot of the accounts and waits for it; ``download_accounts``
streams the job's files into ``s3://exports/zuora/<run date>/``, each verified (SHA-256, record
count) and uploaded whole, then ``_manifest.json`` last. The ``aws_exports`` connection names the
credentials, and ``endpoint_url`` in its extra for an S3-compatible store. ``s3://`` needs
``apache-airflow-providers-amazon[s3fs]``. The task's outlet carries the exported files' URIs
and record count in its asset event.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, Asset

from airflow_provider_zuora_aqua.callbacks import cancel_aqua_job_on_failure
from airflow_provider_zuora_aqua.operators.aqua import AquaDownloadResultsOperator, AquaSubmitJobOperator

with DAG(
    dag_id="example_zuora_aqua_object_storage",
    start_date=datetime(2026, 1, 1),
    schedule="@daily",
    catchup=False,
    on_failure_callback=cancel_aqua_job_on_failure,
    tags=["example", "zuora"],
) as dag:
    # [START howto_operator_zuora_aqua_download_results_object_storage]
    export = AquaSubmitJobOperator(
        task_id="export_accounts",
        queries={"accounts": "select Id, Name, Balance from Account"},  # a daily snapshot
        job_name="accounts-{{ ds_nodash }}",
    )
    download = AquaDownloadResultsOperator(
        task_id="download_accounts",
        job_id="{{ ti.xcom_pull(task_ids='export_accounts', key='aqua_job_id') }}",
        destination="s3://exports/zuora/{{ ds }}/",  # or a local folder, file:///..., ObjectStoragePath
        destination_conn_id="aws_exports",  # an `aws` connection (endpoint_url for S3-compatible stores)
        outlets=[Asset("s3://exports/zuora")],
    )
    export >> download
    # [END howto_operator_zuora_aqua_download_results_object_storage]
