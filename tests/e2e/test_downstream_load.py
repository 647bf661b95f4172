"""
The downstream example on the full stack (scheduler, DAG processor, API server, LocalExecutor):
``example_dags/example_zuora_aqua_load_sql.py`` as shipped, against the simulator as a tenant,
loading into SQLite through the ``zuora_warehouse`` connection.

1. Airflow makes one asset event per published window (the export's outlet is an asset alias)
   and runs the load DAG on them; the load reads the other windows of the export run through
   ``inlet_events`` (Airflow hands a consumer run only the events registered up to the one that
   queued it).
2. The first load is SIGKILLed inside its transaction (the test holds a read lock on the SQLite
   file, so the load's COMMIT waits, with its journal on disk): nothing of it stays, and its retry
   loads the window.
3. After a second export with updates, deletes, a late commit and new rows, the table's live rows
   are the tenant's current rows.

The export's windows end at Zuora's now minus its default 2-hour lag, so every write here is a late
commit stamped 2 hours minus 20 seconds before it becomes visible (``late_by``, see the simulator):
each is exported by the first run 20 seconds after it, and a commit 8 seconds later still is in
time.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shutil
import signal
import sqlite3
from collections.abc import Iterator
from datetime import timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_zuora_aqua.simulator import AquaSimulator
from airflow_provider_zuora_aqua.testing.airflow_env import AirflowHome, AirflowStack, wait_for
from tests.support.credentials import CLIENT_ID, CLIENT_SECRET, connection_json
from tests.support.downstream import tenant_truth
from tests.support.e2e import assert_no_secret

pytestmark = [pytest.mark.airflow_e2e, pytest.mark.timeout(240)]

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "example_dags" / "example_zuora_aqua_load_sql.py"
EXPORT_DAG, EXPORT_TASK = "zuora_account_changes", "export_accounts"
LOAD_DAG, LOAD_TASK = "example_zuora_aqua_load_sql", "load_windows"
UTC = timezone.utc
#: The export's mark is this far behind the tenant's now.
MARK_BEHIND = timedelta(seconds=20)
#: How long before it is visible each write is stamped: the 2-hour lag, less MARK_BEHIND.
STAMPED_BEFORE = timedelta(hours=2) - MARK_BEHIND
LATE_BY = STAMPED_BEFORE.total_seconds()
LATE = 8.0

# Until AquaIncrementalExportOperator calls record_window_events itself, the Airflow processes
# get it through this shim: the export's call of record_outlet_extras with its windows becomes a
# call of record_window_events (the operator change the downstream guide describes).
_SHIM = """
import importlib.abc, importlib.util, sys

_NAME = "airflow_provider_zuora_aqua.operators.aqua"


def _patch(module):
    if hasattr(module, "record_window_events"):
        return  # the operator announces its windows itself
    from airflow_provider_zuora_aqua.results import lineage

    def record_outlet_extras(context, outlets, extra):
        if isinstance(extra, dict) and isinstance(extra.get("windows"), list):
            lineage.record_window_events(context, outlets, extra["windows"])
        else:
            lineage.record_outlet_extras(context, outlets, extra)

    module.record_outlet_extras = record_outlet_extras


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != _NAME:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        exec_module = spec.loader.exec_module

        def patched(module):
            exec_module(module)
            _patch(module)

        spec.loader.exec_module = patched
        return spec


sys.meta_path.insert(0, _Finder())
"""


def _example_table() -> Any:
    """The example's MergeTable (its module imported as a plain module: DAG objects only)."""
    spec = importlib.util.spec_from_file_location("example_zuora_aqua_load_sql", EXAMPLE)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.ACCOUNTS


ACCOUNTS = _example_table()


def require_sqlite_provider() -> None:
    if importlib.util.find_spec("airflow.providers.sqlite") is None:
        reason = "the load example needs apache-airflow-providers-sqlite (the test extra)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)


@pytest.fixture(scope="module")
def sim() -> Iterator[AquaSimulator]:
    with AquaSimulator(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, job_seconds=0.5) as simulator:
        simulator.tenant.create_table("Account")
        yield simulator


@pytest.fixture
def stack(migrated_home: AirflowHome, sim: AquaSimulator, tmp_path: Path) -> Iterator[AirflowStack]:
    require_sqlite_provider()
    dags, shim = tmp_path / "dags", tmp_path / "shim"
    dags.mkdir()
    shim.mkdir()
    shutil.copy(EXAMPLE, dags / EXAMPLE.name)  # the example as shipped
    (shim / "sitecustomize.py").write_text(_SHIM)
    target = tmp_path / "warehouse.db"
    python_path = os.pathsep.join([str(shim), str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    home = migrated_home.copy_to(
        tmp_path / "airflow",
        AIRFLOW_CONN_ZUORA_AQUA_DEFAULT=connection_json(sim.base_url),
        AIRFLOW_CONN_ZUORA_WAREHOUSE=json.dumps({"conn_type": "sqlite", "host": str(target)}),
        ZUORA_EXPORT_FOLDER=str(tmp_path / "exports"),
        PYTHONPATH=python_path,
    )
    home = dataclasses.replace(home, dags_folder=dags)
    with AirflowStack(home) as running:
        running.target = target  # type: ignore[attr-defined]
        running.exports = tmp_path / "exports" / "load-sql"  # type: ignore[attr-defined]
        yield running
    assert_no_secret(home.all_logs(), sim)


def running_loads(stack: AirflowStack) -> list[dict[str, Any]]:
    status, body = stack.api("GET", f"/dags/{LOAD_DAG}/dagRuns/~/taskInstances?state=running")
    return [ti for ti in body.get("task_instances", []) if ti["task_id"] == LOAD_TASK] if status == 200 else []


def load_runs(stack: AirflowStack) -> list[dict[str, Any]]:
    status, body = stack.api("GET", f"/dags/{LOAD_DAG}/dagRuns?order_by=run_after")
    return body["dag_runs"] if status == 200 else []


def published(stack: AirflowStack) -> set[str]:
    return {path.as_uri() for path in stack.exports.rglob("_manifest.json")}  # type: ignore[attr-defined]


def loaded(target: Path) -> set[str]:
    with sqlite3.connect(target) as conn:
        return {row[0] for row in conn.execute(f'SELECT manifest FROM "{ACCOUNTS.ledger}"')}


def export(stack: AirflowStack, run_id: str) -> list[dict[str, Any]]:
    """Run the export once and wait until no export run is left (unpausing it may start a scheduled one too);
    return every window published so far, as the export returns them."""
    stack.trigger(EXPORT_DAG, run_id)
    ti = stack.wait_for_task_state(EXPORT_DAG, run_id, EXPORT_TASK, {"success", "failed"}, timeout=120)
    assert ti["state"] == "success", ti
    wait_for(
        lambda: all(
            run["state"] in ("success", "failed")
            for run in stack.api("GET", f"/dags/{EXPORT_DAG}/dagRuns")[1]["dag_runs"]
        ),
        timeout=120,
        what="every export run to end",
    )
    windows = []
    for path in sorted(stack.exports.rglob("_manifest.json")):  # type: ignore[attr-defined]
        manifest = json.loads(path.read_text())
        records = sum(entry["records"] for entry in manifest["files"])
        windows.append(
            {
                "query": manifest["query"],
                "window": manifest["window"],
                "manifest": path.as_uri(),
                "records": records,
                "job_id": manifest["job_id"],
            }
        )
    return windows


def window_events(stack: AirflowStack) -> list[dict[str, Any]]:
    status, body = stack.api("GET", "/assets/events?limit=100&order_by=timestamp")
    assert status == 200, body
    return [event for event in body["asset_events"] if "manifest" in event["extra"]]


def test_each_window_is_announced_and_loaded_once_through_a_killed_load(stack: AirflowStack, sim: AquaSimulator):
    tenant = sim.tenant
    now = tenant.clock.now() - STAMPED_BEFORE
    # Rows changed over the last weeks (the example starts on 2026-11-01): several windows.
    for k in range(12):
        at = now - timedelta(minutes=1, days=3 * k, hours=k)  # under the mark
        tenant.insert(
            "Account", {"Id": f"A{k:02}", "Name": f"A{k} v1", "Status": "Active", "Balance": k, "UpdatedDate": at}
        )
    tenant.update("Account", "A05", {"Name": "A5 v2", "UpdatedDate": now - timedelta(days=1)})

    # The load will stop at its COMMIT: a read transaction on the target holds it off.
    target: Path = stack.target  # type: ignore[attr-defined]
    setup = sqlite3.connect(target)
    for statement in ACCOUNTS.ddl():
        setup.execute(statement)
    setup.commit()
    reader = sqlite3.connect(target, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute(f'SELECT count(*) FROM "{ACCOUNTS.table}"').fetchall()

    stack.wait_for_dag(LOAD_DAG)
    stack.wait_for_dag(EXPORT_DAG)
    first = export(stack, "export-1")
    assert len(first) >= 2 and sum(w["records"] for w in first) == 12

    journal = target.with_name(target.name + "-journal")
    ti = wait_for(lambda: running_loads(stack), timeout=90, interval=0.2, what="the load running")[0]
    wait_for(journal.exists, timeout=30, interval=0.02, what="the load inside its transaction")
    os.kill(ti["pid"], signal.SIGKILL)
    reader.rollback()
    reader.close()
    assert loaded(target) == set()  # the killed transaction left nothing (its hot journal rolled back)
    with sqlite3.connect(target) as conn:
        assert conn.execute(f'SELECT count(*) FROM "{ACCOUNTS.table}"').fetchone() == (0,)

    killed_run = ti["dag_run_id"]
    done = stack.wait_for_task_state(LOAD_DAG, killed_run, LOAD_TASK, {"success", "failed"}, timeout=90)
    assert done["state"] == "success" and done["try_number"] >= 2, done
    assert loaded(target) == published(stack) == {w["manifest"] for w in first}

    # Airflow made one event per window, each extra naming its window.
    events = window_events(stack)
    assert sorted(e["extra"]["manifest"] for e in events) == sorted(w["manifest"] for w in first)
    by_manifest = {w["manifest"]: w for w in first}
    for event in events:
        window = by_manifest[event["extra"]["manifest"]]
        assert event["extra"] == {key: window[key] for key in ("query", "window", "manifest", "records", "job_id")}
        assert event["uri"] == Path(window["manifest"].removeprefix("file://")).parents[1].as_uri()
    status, upstream = stack.api("GET", f"/dags/{LOAD_DAG}/dagRuns/{killed_run}/upstreamAssetEvents")
    triggering = {e["extra"]["manifest"] for e in upstream["asset_events"]}
    assert triggering and triggering <= set(by_manifest)  # the rest came through inlet_events

    # Changes after the first export: updates, deletes, new rows, a late commit.
    tenant.update("Account", "A01", {"Name": "A1 v2", "Balance": 100}, late_by=LATE_BY)
    tenant.update("Account", "A05", {"Status": "Cancelled"}, late_by=LATE_BY)
    tenant.delete("Account", "A02", late_by=LATE_BY)
    tenant.delete("Account", "A07", late_by=LATE_BY)
    tenant.insert(
        "Account",
        {"Id": "N01", "Name": "new", "Status": "Draft", "Balance": None},
        late_by=LATE_BY,
    )
    late_at = tenant.clock.now() - STAMPED_BEFORE - timedelta(seconds=5)
    tenant.insert(
        "Account", {"Id": "L01", "Name": "late", "Status": "Active", "Balance": 3, "UpdatedDate": late_at}, LATE
    )
    tenant.update("Account", "A03", {"Name": "A3 late", "UpdatedDate": late_at}, LATE)
    written = tenant.clock.now()
    wait_for(lambda: tenant.clock.now() - written > MARK_BEHIND + timedelta(seconds=2), timeout=60, what="the mark")

    second = export(stack, "export-2")
    assert len(second) > len(first) and sum(w["records"] for w in second) > 12
    wait_for(lambda: loaded(target) == published(stack), timeout=90, interval=0.5, what="every window loaded")
    wait_for(lambda: not running_loads(stack), timeout=60, what="the loads to end")

    with sqlite3.connect(target) as conn:
        conn.row_factory = sqlite3.Row
        live = {row["Id"]: dict(row) for row in conn.execute(ACCOUNTS.live_rows_sql())}
        tombstones = {row[0] for row in conn.execute(f'SELECT "Id" FROM "{ACCOUNTS.table}" WHERE "IsDeleted" = 1')}
    truth = tenant_truth(sim)
    assert {i: (r["Name"], r["Balance"], r["UpdatedDate"]) for i, r in live.items()} == truth
    assert {row["Id"]: row["Status"] for row in tenant.rows("Account")} == {i: r["Status"] for i, r in live.items()}
    assert tombstones == {"A02", "A07"}
    assert {"L01", "N01"} <= set(live) and live["A03"]["Name"] == "A3 late"
    # Every load run the events queued ends, each in success (one may still be queued under load).
    ended = wait_for(
        lambda: (runs := load_runs(stack)) and all(run["state"] in ("success", "failed") for run in runs) and runs,
        timeout=120,
        interval=0.5,
        what="every load run to end",
    )
    assert all(run["state"] == "success" for run in ended)
