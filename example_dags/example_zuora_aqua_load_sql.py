"""
Load every window the incremental export publishes into a SQL table, exactly once.

``zuora_account_changes`` exports Account in windows and announces each published window with
one asset event (its outlet is an asset alias): the event's extra names the window's manifest,
its ``window`` and ``records``. ``example_zuora_aqua_load_sql`` runs on those events and merges
each window into the table ``zuora_account`` through Airflow's common-sql (a SQLite connection
by default, any database whose ``INSERT ... ON CONFLICT`` upsert it speaks, such as PostgreSQL):

* merged on ``Id`` by ``UpdatedDate``: an older version never overwrites a newer one, so the
  order windows arrive in does not matter;
* deleted rows (``deleted=True``) stay as tombstones (``IsDeleted = 1``): live rows are
  ``WHERE "IsDeleted" = 0``;
* each window in one transaction that also records its manifest (URI and SHA-256) in
  ``_loaded_windows``: a window loaded twice changes nothing, a load killed halfway left nothing.

See the downstream guide in the docs.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.providers.common.compat.sdk import BaseHook
from airflow.providers.common.sql.operators.sql import SQLExecuteQueryOperator
from airflow.sdk import DAG, AssetAlias, task

from airflow_provider_zuora_aqua.operators.aqua import AquaIncrementalExportOperator
from airflow_provider_zuora_aqua.results.lineage import window_asset
from airflow_provider_zuora_aqua.results.windows_reader import MergeTable, announced_windows

EXPORT_FOLDER = os.environ.get("ZUORA_EXPORT_FOLDER", "/tmp/zuora-exports") + "/load-sql"
# A sqlite connection (AIRFLOW_CONN_ZUORA_WAREHOUSE='{"conn_type": "sqlite", "host": "/tmp/zuora.db"}'), or postgres.
SQL_CONN_ID = "zuora_warehouse"

# [START howto_zuora_aqua_window_events]
# One asset event per published window, on the asset of the query's folder.
WINDOWS = AssetAlias("zuora_aqua_windows")
ACCOUNT_WINDOWS = window_asset(EXPORT_FOLDER, "Account")

with DAG(
    dag_id="zuora_account_changes",
    start_date=datetime(2026, 1, 1),
    schedule="@hourly",
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=1)},
    tags=["example", "zuora"],
):
    AquaIncrementalExportOperator(
        task_id="export_accounts",
        queries={"Account": "select Id, Name, Status, Balance, UpdatedDate from Account"},
        destination=EXPORT_FOLDER,
        start="2026-11-01T00:00:00Z",
        deleted=True,  # an IsDeleted column: deletes reach the table
        poll_interval=30,
        outlets=[WINDOWS],
    )
# [END howto_zuora_aqua_window_events]

# [START howto_zuora_aqua_load_sql]
ACCOUNTS = MergeTable(
    "zuora_account",
    columns=["Id", "Name", "Status", "Balance", "UpdatedDate", "IsDeleted"],
    key="Id",  # rows are merged on Id
    version="UpdatedDate",  # ... and a version replaces the row only if it is not older
    deleted="IsDeleted",  # deletes kept as tombstones (IsDeleted = 1)
)

with DAG(
    dag_id="example_zuora_aqua_load_sql",
    start_date=datetime(2026, 1, 1),
    schedule=ACCOUNT_WINDOWS,
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 3, "retry_delay": timedelta(seconds=10)},
    tags=["example", "zuora"],
):
    create_tables = SQLExecuteQueryOperator(task_id="create_tables", conn_id=SQL_CONN_ID, sql=ACCOUNTS.ddl())

    @task(inlets=[ACCOUNT_WINDOWS])
    def load_windows(triggering_asset_events=None, inlet_events=None) -> list[dict]:
        # The windows of this run's events, and those announced since on the same asset (Airflow
        # may hand the other windows of one export run to the next consumer run).
        windows = announced_windows(ACCOUNT_WINDOWS, triggering_asset_events, inlet_events)
        conn = BaseHook.get_hook(SQL_CONN_ID).get_conn()
        try:
            # One transaction per window; a window in _loaded_windows already is skipped.
            results = ACCOUNTS.load_all(conn, windows)
        finally:
            conn.close()
        return [{"manifest": r.manifest, "loaded": r.loaded, "rows": r.rows} for r in results]

    create_tables >> load_windows()
# [END howto_zuora_aqua_load_sql]
