"""What the downstream-load tests compare: the tenant's current rows and a loaded table's live rows."""

from __future__ import annotations

import importlib.util
import os
from datetime import datetime, timezone
from typing import Any

import pytest

from airflow_provider_zuora_aqua.results.windows_reader import MergeTable
from airflow_provider_zuora_aqua.simulator import AquaSimulator
from airflow_provider_zuora_aqua.testing.distributed import missing_services

QUERY = "select Id, Name, Balance, UpdatedDate from Account"
ACCOUNTS = MergeTable("zuora_account", columns=["Id", "Name", "Balance", "UpdatedDate", "IsDeleted"])
Rows = dict[str, tuple[Any, ...]]


def tenant_truth(sim: AquaSimulator) -> Rows:
    """The tenant's current live rows (deleted ones left out), as the table stores them."""
    return {
        row["Id"]: (
            row.get("Name"),
            None if row.get("Balance") is None else str(row["Balance"]),
            row["UpdatedDate"].astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        for row in sim.tenant.rows("Account")
    }


def table_rows(conn: Any, table: MergeTable = ACCOUNTS, live: bool = True) -> Rows:
    """The table's rows (live ones, or every row with its tombstone flag)."""
    cursor = conn.cursor()
    sql = table.live_rows_sql() if live else f'SELECT * FROM "{table.table}"'
    cursor.execute(sql)
    names = [column[0] for column in cursor.description]
    rows = {}
    for values in cursor.fetchall():
        row = dict(zip(names, values))
        cells = (row["Name"], row["Balance"], row["UpdatedDate"])
        rows[row["Id"]] = cells if live else (*cells, int(row["IsDeleted"]))
    conn.rollback()
    return rows


def ledger(conn: Any, table: MergeTable = ACCOUNTS) -> set[tuple[str, str]]:
    cursor = conn.cursor()
    cursor.execute(f'SELECT manifest, sha256 FROM "{table.ledger}"')
    found = {(manifest, sha) for manifest, sha in cursor.fetchall()}
    conn.rollback()
    return found


def require_postgres() -> None:
    """Skip without psycopg2; skip (fail in CI) when this machine cannot start PostgreSQL; say why."""
    if importlib.util.find_spec("psycopg2") is None:
        # An environment without the distributed extra (the oldest-Airflow leg): the main leg runs them.
        pytest.skip('the Postgres load tests need psycopg2 (pip install -e ".[distributed]")')
    missing = [item for item in missing_services() if item.startswith("PostgreSQL")]
    if missing and os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"the Postgres load tests need {' '.join(missing)} (run `bash .ci/services`)", pytrace=False)
    if missing:
        pytest.skip(f"the Postgres load tests need {' '.join(missing)} (run `bash .ci/services`)")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
