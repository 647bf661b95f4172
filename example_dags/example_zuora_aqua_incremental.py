"""
Export what changed in Zuora since the last run: every record version exactly once.

``zuora_changes`` exports each query in half-open windows ``[start, end)`` on ``UpdatedDate``
into ``$ZUORA_EXPORT_FOLDER/incremental/<query>/<start>_<end>/`` (default ``/tmp/zuora-exports``),
each window's files verified and its ``_manifest.json`` written last. The watermark is read from
those manifests at every run, so it is never ahead of the data: the first run catches up from
``start`` in windows of at most ``max_window``, several AQuA jobs at a time; later runs export
from where the last published window ended to ``now - lag``. The data interval of the run plays
no part. A consumer reads every ``_manifest.json`` under the destination and the files they list.

``max_active_runs=1``: two runs of one export at once would plan from the same mark and publish
overlapping windows. Retries re-attach to the jobs of the killed try (Airflow 3.3+).
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import DAG

from airflow_provider_zuora_aqua.callbacks import cancel_aqua_job_on_failure
from airflow_provider_zuora_aqua.operators.aqua import AquaIncrementalExportOperator

EXPORT_FOLDER = os.environ.get("ZUORA_EXPORT_FOLDER", "/tmp/zuora-exports")

with DAG(
    dag_id="example_zuora_aqua_incremental",
    start_date=datetime(2026, 1, 1),
    schedule="@hourly",
    catchup=False,
    max_active_runs=1,
    on_failure_callback=cancel_aqua_job_on_failure,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=1)},
    tags=["example", "zuora"],
) as dag:
    zuora_changes = AquaIncrementalExportOperator(
        task_id="zuora_changes",
        queries={
            "Account": "select Id, Name, Balance, UpdatedDate from Account",
            # A query's own condition is kept, in parentheses, and the window added to it.
            "Subscription": "select Id, Name, Status, UpdatedDate from Subscription where Status != 'Expired'",
        },
        destination=EXPORT_FOLDER + "/incremental",  # or s3://bucket/prefix with destination_conn_id
        start="2026-11-01T00:00:00Z",  # where the first window starts when nothing was exported yet
        lag=timedelta(hours=2),  # the newest window ends 2 hours before now: Zuora's rule (the default)
        max_window=timedelta(days=30),  # a catch-up is cut into windows of at most this (the default)
        deleted=True,  # deleted records too: Account.IsDeleted, first in each row (Zuora keeps them 30 days)
        max_active_jobs=4,  # AQuA jobs at once, of the tenant's 50 (the default)
        poll_interval=30,
        job_timeout=3 * 60 * 60,
        execution_timeout=timedelta(hours=6),
    )
