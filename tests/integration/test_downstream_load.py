"""
Windows of the incremental export merged into a SQL table (SQLite always, PostgreSQL when it can
start here; in CI it must): after inserts, updates, deletes, late commits and several export runs,
the table's live rows are the tenant's current rows, whatever order the windows are loaded in,
however often, and after a load stopped mid-transaction (an exception, or SIGKILL of the process).
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_zuora_aqua.incremental import export as export_module
from airflow_provider_zuora_aqua.operators.aqua import AquaIncrementalExportOperator
from airflow_provider_zuora_aqua.results import windows_reader
from airflow_provider_zuora_aqua.results.windows_reader import read_window
from airflow_provider_zuora_aqua.simulator import AquaSimulator
from airflow_provider_zuora_aqua.testing.airflow_env import wait_for
from tests.support.credentials import CLIENT_ID, CLIENT_SECRET, CONN_ID, connection_json
from tests.support.downstream import ACCOUNTS, QUERY, ledger, require_postgres, table_rows, tenant_truth
from tests.support.fakes import FakeTaskInstance, context

UTC = timezone.utc
START = datetime(2024, 1, 1, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[2]


# -- the scenario: an export's windows over several runs ------------------------------------------


@dataclass
class Scenario:
    sim: AquaSimulator
    destination: Path
    windows: list[dict[str, Any]]


def _export(sim: AquaSimulator, destination: Path) -> list[dict[str, Any]]:
    operator = AquaIncrementalExportOperator(
        task_id="zuora_changes",
        queries={"Account": QUERY},
        destination=str(destination),
        start=START.isoformat(),
        lag=timedelta(minutes=5),
        max_window=timedelta(hours=1),
        deleted=True,
        poll_interval=0.1,
    )
    return operator.execute(context(FakeTaskInstance("zuora_changes")))


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    """Five export runs with inserts, updates, deletes and late commits between them."""
    destination = tmp_path_factory.mktemp("downstream") / "exports"
    patch = pytest.MonkeyPatch()
    with AquaSimulator(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, job_seconds=0.05) as sim:
        patch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", connection_json(sim.base_url))
        patch.setattr(export_module, "_utc_now", sim.tenant.clock.now)
        tenant, clock = sim.tenant, sim.tenant.clock
        clock.set(START + timedelta(hours=1))
        windows: list[dict[str, Any]] = []
        for k in range(6):  # one window of six rows: room to stop a load between two statements
            tenant.insert("Account", {"Id": f"A{k}", "Name": f"A{k} v1", "Balance": 10 * k})
            clock.advance(600)
        clock.set(START + timedelta(hours=3))
        windows += _export(sim, destination)

        clock.advance(20 * 60)
        tenant.update("Account", "A1", {"Name": "A1 v2"})
        tenant.update("Account", "A2", {"Balance": 7})
        tenant.delete("Account", "A3")
        tenant.insert("Account", {"Id": "A7", "Name": "A7 v1", "Balance": 70})
        now = clock.now()
        # Late commits: their UpdatedDate is minutes before they become visible (within the lag).
        tenant.insert(
            "Account", {"Id": "L1", "Name": "L1 v1", "Balance": 1, "UpdatedDate": now - timedelta(minutes=3)}, 120
        )
        tenant.update("Account", "A4", {"Name": "A4 late", "UpdatedDate": now - timedelta(minutes=4)}, 100)
        clock.advance(60)
        windows += _export(sim, destination)  # the late rows are not visible yet, nor under the mark
        clock.advance(10 * 60)
        windows += _export(sim, destination)

        tenant.update("Account", "A1", {"Name": "A1 v3"})
        tenant.delete("Account", "A7")
        tenant.update("Account", "L1", {"Balance": 2})
        tenant.insert("Account", {"Id": "A8", "Name": "A8 v1", "Balance": None})
        tenant.insert(  # a late insert that is deleted before anyone exported it
            "Account", {"Id": "L2", "Name": "L2", "Balance": 5, "UpdatedDate": clock.now() - timedelta(minutes=2)}, 60
        )
        clock.advance(30)
        tenant.delete("Account", "L2")
        clock.advance(90 * 60)
        windows += _export(sim, destination)
        clock.advance(10 * 60)
        windows += _export(sim, destination)
        yield Scenario(sim, destination, windows)
    patch.undo()


# -- the databases -------------------------------------------------------------------------------


@dataclass
class Database:
    name: str
    connect: Callable[[], Any]
    #: Python code that connects, for a loader in another process.
    connect_code: str


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[Any]:
    require_postgres()
    from airflow_provider_zuora_aqua.testing.distributed import PostgresServer

    with PostgresServer() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        path = tmp_path / "target.db"
        db = Database("sqlite", lambda: sqlite3.connect(path), f"import sqlite3; conn = sqlite3.connect({str(path)!r})")
    else:
        server = request.getfixturevalue("postgres_server")
        name = server.create_database(f"load_{os.getpid()}_{time.monotonic_ns()}")
        dsn = f"host=127.0.0.1 port={server.port} user=airflow dbname={name}"
        import psycopg2

        db = Database("postgres", lambda: psycopg2.connect(dsn), f"import psycopg2; conn = psycopg2.connect({dsn!r})")
    conn = db.connect()
    cursor = conn.cursor()
    for statement in ACCOUNTS.ddl():
        cursor.execute(statement)
    conn.commit()
    conn.close()
    yield db


def _load_all(conn: Any, windows: list[dict[str, Any]]) -> None:
    for result in ACCOUNTS.load_all(conn, windows):
        assert result.sha256 and result.manifest


# -- tests ---------------------------------------------------------------------------------------


def test_the_scenario_exports_what_the_loads_need(scenario: Scenario):
    records = [w["records"] for w in scenario.windows]
    assert len(scenario.windows) >= 6 and max(records) >= 6
    deleted = {"A3", "A7", "L2"}
    assert deleted.isdisjoint(tenant_truth(scenario.sim)) and {"A1", "L1", "A8"} <= set(tenant_truth(scenario.sim))
    # Every change is under the last mark: the table can equal the tenant.
    last_end = max(datetime.fromisoformat(w["window"]["end"]) for w in scenario.windows)
    assert all(row["UpdatedDate"] < last_end for row in scenario.sim.tenant.rows("Account", deleted=True))


def test_loaded_in_any_order_and_twice_the_table_is_the_tenant(scenario: Scenario, database: Database):
    conn = database.connect()
    shuffled = scenario.windows[:]
    random.Random(7).shuffle(shuffled)
    _load_all(conn, shuffled)
    once = table_rows(conn, live=False)
    assert table_rows(conn) == tenant_truth(scenario.sim)
    assert ledger(conn) == {
        (w.manifest_uri, w.sha256) for w in map(read_window, (w["manifest"] for w in scenario.windows))
    }

    again = ACCOUNTS.load_all(conn, list(reversed(scenario.windows)))  # every window announced again
    assert not any(result.loaded for result in again)
    assert table_rows(conn, live=False) == once

    # From scratch, in time order: the same table, tombstones included.
    other = database.connect()
    cursor = other.cursor()
    cursor.execute(f'DELETE FROM "{ACCOUNTS.table}"')
    cursor.execute(f'DELETE FROM "{ACCOUNTS.ledger}"')
    other.commit()
    _load_all(other, scenario.windows)
    assert table_rows(other, live=False) == once
    assert once["A3"][-1] == 1 and once["A7"][-1] == 1  # deletes kept as tombstones


def test_a_tombstone_keeps_an_older_version_loaded_later_out(scenario: Scenario, database: Database):
    """A3's delete is loaded before the window of its insert: A3 must not come back."""
    conn = database.connect()
    by_start = sorted(scenario.windows, key=lambda w: w["window"]["start"])
    _load_all(conn, list(reversed(by_start)))
    assert "A3" not in table_rows(conn) and table_rows(conn) == tenant_truth(scenario.sim)


def _biggest(scenario: Scenario) -> dict[str, Any]:
    return max(scenario.windows, key=lambda w: w["records"])


def test_a_load_that_fails_between_statements_leaves_nothing_and_its_retry_loads(
    scenario: Scenario, database: Database, monkeypatch: pytest.MonkeyPatch
):
    conn = database.connect()
    target = _biggest(scenario)
    rest = [w for w in scenario.windows if w is not target]
    _load_all(conn, rest[: len(rest) // 2])
    before, ledger_before = table_rows(conn, live=False), ledger(conn)

    real = windows_reader.iter_records

    def failing(window: Any, conn_id: Any = None) -> Iterator[dict[str, Any]]:
        for count, record in enumerate(real(window, conn_id)):
            if count == 3:  # after the first chunk's INSERT, before the second
                raise ConnectionError("the worker went away")
            yield record

    monkeypatch.setattr(windows_reader, "iter_records", failing)
    table = windows_reader.MergeTable(ACCOUNTS.table, ACCOUNTS.columns, chunk_size=2)
    with pytest.raises(ConnectionError):
        table.load(conn, target["manifest"])
    assert table_rows(conn, live=False) == before and ledger(conn) == ledger_before

    monkeypatch.setattr(windows_reader, "iter_records", real)
    assert table.load(conn, target["manifest"]).loaded
    _load_all(conn, rest)
    assert table_rows(conn) == tenant_truth(scenario.sim)


_KILLED_LOADER = """
import sys, time
sys.path.insert(0, {repo!r})
{connect}
from airflow_provider_zuora_aqua.results import windows_reader
from tests.support.downstream import ACCOUNTS

real = windows_reader.iter_records
def slow(window, conn_id=None):
    for count, record in enumerate(real(window, conn_id)):
        if count == 3:  # the first chunk is written, the transaction is open
            open({marker!r}, "w").close()
            time.sleep(120)
        yield record
windows_reader.iter_records = slow
table = windows_reader.MergeTable(ACCOUNTS.table, ACCOUNTS.columns, chunk_size=2)
table.load(conn, {manifest!r})
"""


def test_a_load_killed_mid_transaction_leaves_nothing_and_its_retry_loads(
    scenario: Scenario, database: Database, tmp_path: Path
):
    conn = database.connect()
    target = _biggest(scenario)
    rest = [w for w in scenario.windows if w is not target]
    _load_all(conn, rest[::2])
    before, ledger_before = table_rows(conn, live=False), ledger(conn)
    marker = tmp_path / "in-transaction"
    code = _KILLED_LOADER.format(
        repo=str(REPO), connect=database.connect_code, marker=str(marker), manifest=target["manifest"]
    )
    loader = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdin=subprocess.DEVNULL)
    try:
        wait_for(marker.exists, timeout=60, interval=0.05, what="the loader inside its transaction")
    finally:
        os.kill(loader.pid, signal.SIGKILL)
        loader.wait(10)
    assert loader.returncode == -signal.SIGKILL

    fresh = database.connect()  # SQLite rolls the hot journal back; Postgres aborted the dead session's transaction
    assert table_rows(fresh, live=False) == before and ledger(fresh) == ledger_before
    assert ACCOUNTS.load(fresh, target["manifest"]).loaded  # the retry
    _load_all(fresh, scenario.windows)
    assert table_rows(fresh) == tenant_truth(scenario.sim)
