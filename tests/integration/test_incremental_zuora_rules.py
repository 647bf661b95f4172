"""The incremental export against a tenant as Zuora documents it: its own clock, dropped queries, two writers."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from airflow_provider_zuora_aqua.exceptions import AquaDestinationBusyError, AquaJobFailedError
from airflow_provider_zuora_aqua.operators.aqua import AquaIncrementalExportOperator
from airflow_provider_zuora_aqua.simulator import AquaSimulator
from tests.support.credentials import CLIENT_ID, CLIENT_SECRET, CONN_ID, connection_json
from tests.support.fakes import FakeTaskInstance, context

UTC = timezone.utc
QUERIES = {"Account": "select Id, Name, UpdatedDate from Account"}
LAG = timedelta(minutes=10)


def export(destination: Path, start: datetime, **kwargs) -> AquaIncrementalExportOperator:
    arguments = {
        "task_id": "zuora_changes",
        "queries": QUERIES,
        "destination": str(destination),
        "start": start.isoformat(),
        "lag": LAG,
        "max_window": timedelta(days=1),
        "poll_interval": 0.2,
        **kwargs,
    }
    return AquaIncrementalExportOperator(**arguments)


def exported_ids(destination: Path) -> list[str]:
    ids = []
    for manifest_file in sorted(destination.rglob("_manifest.json")):
        for entry in json.loads(manifest_file.read_text())["files"]:
            lines = Path(entry["uri"].removeprefix("file://")).read_text().splitlines()[1:]
            ids += [line.split(",")[0] for line in lines]
    return sorted(ids)


def new_task_process() -> None:
    """What a task try starts with: no token and no Zuora clock seen (each try is a new process)."""
    from airflow_provider_zuora_aqua.client import server_clock
    from airflow_provider_zuora_aqua.client.auth import TOKEN_CACHE

    TOKEN_CACHE.clear()
    server_clock.forget()


@pytest.fixture
def skewed(monkeypatch):
    """A tenant whose clock runs 15 minutes behind this worker's (the real clock)."""
    with AquaSimulator(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, job_seconds=0.2, clock_skew=-900) as sim:
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", connection_json(sim.base_url))
        yield sim


def test_windows_end_by_zuoras_clock_when_it_is_behind_the_workers(skewed, tmp_path, capsys):
    """
    A row Zuora stamps after run 1 with an UpdatedDate before the worker's "now - lag" but after
    Zuora's: had run 1 closed its window by the worker's clock, no later window would cover it.
    """
    zuora_now = skewed.tenant.clock.now()
    start = (zuora_now - timedelta(hours=3)).replace(microsecond=0)
    skewed.tenant.insert("Account", {"Id": "before", "Name": "x", "UpdatedDate": zuora_now - timedelta(hours=1)})

    first = export(tmp_path, start).execute(context(FakeTaskInstance("zuora_changes")))

    mark = datetime.fromisoformat(first[-1]["window"]["end"])
    worker_end = datetime.now(UTC) - LAG
    assert mark <= skewed.tenant.clock.now() - LAG + timedelta(seconds=1) < worker_end  # Zuora's clock decided
    log = capsys.readouterr().out
    assert "Zuora's clock says" in log and "windows end by the earlier" in log
    # Stamped 5 minutes ago by Zuora's clock: after the mark, before the worker's now - lag (where a
    # mark by the worker's clock would have been, leaving this row behind it for good).
    late = skewed.tenant.clock.now() - timedelta(minutes=5)
    assert mark <= late < worker_end
    skewed.tenant.insert("Account", {"Id": "late", "Name": "y", "UpdatedDate": late})
    skewed.tenant.clock.skew(-900 + 6 * 60)  # six minutes on, at Zuora: the row is now older than the lag
    new_task_process()  # the next run's try: no token yet, no Date seen

    export(tmp_path, start).execute(context(FakeTaskInstance("zuora_changes", try_number=2)))

    assert exported_ids(tmp_path) == ["before", "late"]


def test_without_a_usable_date_the_workers_clock_is_used_and_said(tmp_path, monkeypatch, capsys):
    from airflow_provider_zuora_aqua.client import server_clock

    with AquaSimulator(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, job_seconds=0.2) as sim:
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", connection_json(sim.base_url))
        monkeypatch.setattr(server_clock, "parse_date", lambda value: None)  # a Date no one can read
        start = (datetime.now(UTC) - timedelta(hours=2)).replace(microsecond=0)
        windows = export(tmp_path, start).execute(context(FakeTaskInstance("zuora_changes")))

    assert "No answer from Zuora carried a usable Date header" in capsys.readouterr().out
    assert datetime.fromisoformat(windows[-1]["window"]["end"]) <= datetime.now(UTC) - LAG


def test_a_query_zuora_drops_for_permission_fails_its_window_and_the_mark_stays(tmp_path, monkeypatch):
    """Zuora ignores a query on an object the API user may not read (90018) and completes the job without it."""
    with AquaSimulator(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, job_seconds=0.2) as sim:
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", connection_json(sim.base_url))
        now = sim.tenant.clock.now()
        sim.tenant.insert("Account", {"Id": "A1", "Name": "x", "UpdatedDate": now - timedelta(hours=1)})
        sim.tenant.deny("Account")
        start = (now - timedelta(hours=2)).replace(microsecond=0)

        with pytest.raises(AquaJobFailedError) as failed:
            export(tmp_path, start).execute(context(FakeTaskInstance("zuora_changes")))

        message = str(failed.value)
        assert "without the batch of 'Account'" in message and "90018" in message
        assert list(tmp_path.rglob("_manifest.json")) == []  # nothing published, the mark did not move
        assert [job["status"] for job in sim.jobs()] == ["completed"]  # Zuora called it a success
        sim.tenant.allow()
        export(tmp_path, start).execute(context(FakeTaskInstance("zuora_changes", try_number=2)))
        assert exported_ids(tmp_path) == ["A1"]


@pytest.fixture
def tenant(monkeypatch):
    with AquaSimulator(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, job_seconds=1) as sim:
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", connection_json(sim.base_url))
        now = sim.tenant.clock.now()
        for index in range(9):
            sim.tenant.insert(
                "Account", {"Id": f"A{index}", "Name": "x", "UpdatedDate": now - timedelta(hours=index + 1)}
            )
        yield sim


def test_two_dags_writing_one_destination_at_once_never_double_a_record(tenant, tmp_path):
    start = (tenant.tenant.clock.now() - timedelta(days=2)).replace(microsecond=0)
    errors: list[BaseException] = []

    def run(dag_id: str) -> None:
        try:
            export(tmp_path, start).execute(context(FakeTaskInstance("zuora_changes", dag_id=dag_id)))
        except BaseException as exc:  # noqa: BLE001  (asserted below)
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(dag_id,)) for dag_id in ("dag_a", "dag_b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert errors == []
    assert exported_ids(tmp_path) == [f"A{index}" for index in range(9)]  # each once: the second waited
    export(tmp_path, start).execute(context(FakeTaskInstance("zuora_changes", dag_id="dag_c")))  # later runs go on
    assert not (tmp_path / "Account" / "_lease.json").exists()


def test_a_second_writer_told_not_to_wait_fails_naming_the_holder(tenant, tmp_path):
    from airflow_provider_zuora_aqua.incremental.lease import DestinationLease, LeaseHolder
    from airflow_provider_zuora_aqua.results.destination import resolve_destination

    holder = LeaseHolder.of_task_instance(FakeTaskInstance("zuora_changes", dag_id="dag_a"))
    start = (tenant.tenant.clock.now() - timedelta(days=2)).replace(microsecond=0)
    with DestinationLease.acquire(resolve_destination(str(tmp_path), None).child("Account"), holder):
        with pytest.raises(AquaDestinationBusyError) as busy:
            export(tmp_path, start, destination_wait=0).execute(
                context(FakeTaskInstance("zuora_changes", dag_id="dag_b"))
            )
    assert "dag_a" in str(busy.value) and busy.value.holder["dag_id"] == "dag_a"
    assert tenant.requests_for("submit") == []  # refused before anything was sent
