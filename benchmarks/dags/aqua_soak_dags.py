"""
The DAG the fault soak (``python -m benchmarks.soak``) runs many times.

One run holds one ``AquaSubmitJobOperator`` task per entry of :data:`SOAK_TASKS`: a mix of
waiting in a worker slot and deferring, of no retries and one quick retry (a SIGKILLed try is
re-attached by the next), and of exports downloaded into ``$AQUA_SOAK_DOWNLOADS/<run>/<task>``
(csv, gzip, zip, one or two batches) or not. The DAG-level failure callback cancels every AQuA
job of a failed run.

The job name is ``<run_id>.<task_id>.<try_number>``: every job at the simulator names the task
try whose submit body created it, which is how the soak counts jobs per try.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from typing import NamedTuple

from airflow.sdk import DAG

from airflow_provider_zuora_aqua.callbacks import cancel_aqua_job_on_failure
from airflow_provider_zuora_aqua.operators.aqua import AquaSubmitJobOperator

SOAK_DAG_ID = "aqua_soak"
SOAK_CONN_ID = "zuora_aqua_soak"
#: The environment variable that names the folder downloads go under.
DOWNLOADS_ENV = "AQUA_SOAK_DOWNLOADS"
#: Long enough for any task the soak lets finish; the soak's ``execution_timeout`` stops wait it out.
EXECUTION_TIMEOUT = timedelta(seconds=45)
#: How many runs may be active at once; later runs wait queued.
MAX_ACTIVE_RUNS = 4


class SoakTask(NamedTuple):
    """One task of the soak DAG, as the soak needs to know it."""

    task_id: str
    deferrable: bool
    retries: int
    #: The result format; the files are downloaded when ``download`` is True.
    format: str
    download: bool
    #: Query name -> ZOQL (the run id in the WHERE clause varies the record counts between runs).
    queries: dict[str, str]


# A string comparison: the simulator refuses a run id compared with a date-time field, as Zuora does.
_ACCOUNTS = {"accounts": "select Id, Name, Balance from Account where Name != '{{ run_id }}'"}
_TWO_BATCHES = {
    **_ACCOUNTS,
    "invoices": "select Id, InvoiceNumber, Amount from Invoice where InvoiceNumber != '{{ run_id }}'",
}

SOAK_TASKS: tuple[SoakTask, ...] = (
    SoakTask("sync_csv", deferrable=False, retries=0, format="csv", download=True, queries=_ACCOUNTS),
    SoakTask("sync_gzip_retry", deferrable=False, retries=1, format="gzip", download=True, queries=_TWO_BATCHES),
    SoakTask("sync_plain", deferrable=False, retries=0, format="csv", download=False, queries=_ACCOUNTS),
    SoakTask("sync_retry", deferrable=False, retries=1, format="csv", download=False, queries=_ACCOUNTS),
    SoakTask("defer_zip", deferrable=True, retries=0, format="zip", download=True, queries=_TWO_BATCHES),
    SoakTask("defer_csv_retry", deferrable=True, retries=1, format="csv", download=True, queries=_ACCOUNTS),
    SoakTask("defer_plain", deferrable=True, retries=0, format="csv", download=False, queries=_ACCOUNTS),
    SoakTask("defer_retry", deferrable=True, retries=1, format="csv", download=False, queries=_ACCOUNTS),
)

_DOWNLOADS = os.environ.get(DOWNLOADS_ENV, "/tmp/aqua-soak-downloads")

with DAG(
    dag_id=SOAK_DAG_ID,
    start_date=datetime(2026, 1, 1),
    schedule=None,
    catchup=False,
    max_active_runs=MAX_ACTIVE_RUNS,
    on_failure_callback=cancel_aqua_job_on_failure,
    tags=["benchmark"],
):
    for spec in SOAK_TASKS:
        AquaSubmitJobOperator(
            task_id=spec.task_id,
            job_name="{{ run_id }}.{{ ti.task_id }}.{{ ti.try_number }}",
            queries=spec.queries,
            format=spec.format,
            destination=f"{_DOWNLOADS}/{{{{ run_id }}}}/{spec.task_id}" if spec.download else None,
            poll_interval=1,
            deferrable=spec.deferrable,
            retries=spec.retries,
            retry_delay=timedelta(seconds=1),
            execution_timeout=EXECUTION_TIMEOUT,
            zuora_conn_id=SOAK_CONN_ID,
        )
