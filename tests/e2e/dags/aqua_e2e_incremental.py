"""The incremental export on the full stack (tests/e2e/test_incremental_export.py): real time, a lag of seconds."""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import DAG

from airflow_provider_zuora_aqua.operators.aqua import AquaIncrementalExportOperator

#: The test sets these; the defaults only let other modules' stacks parse this file.
DESTINATION = os.environ.get("AQUA_E2E_INCREMENTAL_DESTINATION", "/tmp/aqua-e2e-incremental")
START = os.environ.get("AQUA_E2E_INCREMENTAL_START", "2026-01-01T00:00:00Z")
LAG_SECONDS = 6
MAX_WINDOW = timedelta(minutes=15)
QUERIES = {
    "Account": "select Id, Name, Status, Balance, Rev, UpdatedDate from Account",
    # A user's own condition with an "or": the window must still bind every record.
    "Flagged": "select Id, Name, Status, Balance, Rev, UpdatedDate from Account "
    "where Status = 'Active' or Balance > 100",
}

with DAG(
    dag_id="aqua_e2e_incremental",
    start_date=datetime(2026, 1, 1),
    schedule=None,
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(seconds=1)},
):
    AquaIncrementalExportOperator(
        task_id="changes",
        queries=QUERIES,
        destination=DESTINATION,
        start=START,
        lag=LAG_SECONDS,
        max_window=MAX_WINDOW,
        deleted=True,
        poll_interval=1,
        job_timeout=120,
        execution_timeout=timedelta(minutes=4),
    )
