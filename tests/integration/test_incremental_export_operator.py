"""AquaIncrementalExportOperator against the simulator as a tenant with data: windows, the mark, splits, stops."""

from __future__ import annotations

import csv
import io
import json
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_zuora_aqua.exceptions import AquaConfigurationError, AquaError, AquaJobFailedError
from airflow_provider_zuora_aqua.incremental import export as export_module
from airflow_provider_zuora_aqua.operators.aqua import AquaIncrementalExportOperator
from airflow_provider_zuora_aqua.simulator import AquaSimulator
from airflow_provider_zuora_aqua.tasks.job_records import AQUA_JOBS_XCOM_KEY
from tests.support.credentials import CLIENT_ID, CLIENT_SECRET, CONN_ID, connection_json
from tests.support.fakes import FakeStateStore, FakeTaskInstance, context

UTC = timezone.utc
START = datetime(2024, 1, 1, tzinfo=UTC)
QUERIES = {"Account": "select Id, Name, UpdatedDate from Account"}


@pytest.fixture
def tenant_sim(monkeypatch: pytest.MonkeyPatch):
    """A simulator whose jobs finish at once; the operator's "now" is the tenant's clock."""
    with AquaSimulator(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, job_seconds=0.1) as sim:
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", connection_json(sim.base_url))
        monkeypatch.setattr(export_module, "_utc_now", sim.tenant.clock.now)
        sim.tenant.clock.set(START + timedelta(days=3))
        yield sim


def export(destination: Path, **kwargs: Any) -> AquaIncrementalExportOperator:
    arguments = {
        "task_id": "zuora_changes",
        "queries": QUERIES,
        "destination": str(destination),
        "start": "2024-01-01T00:00:00Z",
        "lag": timedelta(minutes=5),
        "max_window": timedelta(days=1),
        "poll_interval": 0.2,
        **kwargs,
    }
    return AquaIncrementalExportOperator(**arguments)


def write(sim: AquaSimulator, at: datetime, row_id: str, name: str) -> None:
    """Insert or update a row with its UpdatedDate at ``at`` (the tenant clock is moved there and back)."""
    now = sim.tenant.clock.now()
    sim.tenant.clock.set(at)
    if any(row["Id"] == row_id for row in sim.tenant.rows("Account")) if sim.tenant.has_table("Account") else False:
        sim.tenant.update("Account", row_id, {"Name": name})
    else:
        sim.tenant.insert("Account", {"Id": row_id, "Name": name})
    sim.tenant.clock.set(now)


def manifests(destination: Path) -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in sorted(destination.rglob("_manifest.json"))]


def exported_versions(destination: Path) -> list[tuple[str, str]]:
    """(Id, Name) of every record of every file every manifest lists."""
    versions = []
    for manifest in manifests(destination):
        for file in manifest["files"]:
            path = Path(file["uri"].removeprefix("file://"))
            versions += [(row["Id"], row["Name"]) for row in csv.DictReader(io.StringIO(path.read_text()))]
    return versions


def assert_windows_tile(destination: Path, start: datetime, mark: datetime) -> None:
    windows = sorted((m["window"]["start"], m["window"]["end"]) for m in manifests(destination))
    assert windows[0][0] == start.isoformat() and windows[-1][1] == mark.isoformat()
    assert all(left[1] == right[0] for left, right in zip(windows, windows[1:])), windows


def test_first_run_catches_up_in_windows_that_tile_from_start_to_now_minus_lag(tenant_sim, tmp_path):
    write(tenant_sim, START + timedelta(hours=5), "A1", "Acme")
    write(tenant_sim, START + timedelta(days=1, hours=2), "A2", "Globex")
    write(tenant_sim, START + timedelta(days=2, hours=23, minutes=57), "A3", "Initech")  # inside the lag

    windows = export(tmp_path, max_active_jobs=2).execute(context(FakeTaskInstance("zuora_changes")))

    mark = START + timedelta(days=3) - timedelta(minutes=5)
    assert [w["window"]["end"] for w in windows][-1] == mark.isoformat()
    assert_windows_tile(tmp_path, START, mark)
    assert sorted(exported_versions(tmp_path)) == [("A1", "Acme"), ("A2", "Globex")]  # A3 waits for the next run
    assert sum(w["records"] for w in windows) == 2
    assert all(m["query"] == "Account" and m["window"]["cursor"] == "UpdatedDate" for m in manifests(tmp_path))


def test_runs_after_updates_export_each_record_version_exactly_once(tenant_sim, tmp_path):
    write(tenant_sim, START + timedelta(hours=1), "A1", "v1")
    export(tmp_path).execute(context(FakeTaskInstance("zuora_changes")))
    write(tenant_sim, START + timedelta(days=2, hours=23, minutes=56), "A2", "late-in-lag")
    tenant_sim.tenant.clock.advance(3600)
    write(tenant_sim, tenant_sim.tenant.clock.now() - timedelta(minutes=30), "A1", "v2")

    second = export(tmp_path).execute(context(FakeTaskInstance("zuora_changes", try_number=1)))
    third = export(tmp_path).execute(context(FakeTaskInstance("zuora_changes")))

    assert third == []  # nothing new: no window, no job
    assert sorted(exported_versions(tmp_path)) == [("A1", "v1"), ("A1", "v2"), ("A2", "late-in-lag")]
    assert second and second[0]["window"]["start"] == (START + timedelta(days=3) - timedelta(minutes=5)).isoformat()


def test_a_users_or_keeps_the_window_binding(tenant_sim, tmp_path):
    """Rows that match the user's ``or`` on either side but lie outside every window are not exported."""
    write(tenant_sim, START + timedelta(hours=1), "A1", "Acme")
    write(tenant_sim, START + timedelta(days=1, hours=1), "G1", "Globex")
    write(tenant_sim, START + timedelta(hours=2), "I1", "Initech")  # in a window, not matching
    write(tenant_sim, START - timedelta(days=10), "A0", "Acme")  # before start
    write(tenant_sim, START - timedelta(seconds=1), "G0", "Globex")  # the second before start
    mark = START + timedelta(days=3) - timedelta(minutes=5)
    write(tenant_sim, mark, "A9", "Acme")  # at the mark: the next run's
    write(tenant_sim, mark + timedelta(minutes=2), "G9", "Globex")  # inside the lag
    queries = {"Account": "select Id, Name, UpdatedDate from Account where Name = 'Acme' or Name = 'Globex'"}

    windows = export(tmp_path, queries=queries).execute(context(FakeTaskInstance("zuora_changes")))

    assert sorted(exported_versions(tmp_path)) == [("A1", "Acme"), ("G1", "Globex")]
    assert windows[-1]["window"]["end"] == mark.isoformat()
    for manifest in manifests(tmp_path):
        start, end = (datetime.fromisoformat(manifest["window"][key]) for key in ("start", "end"))
        for file in manifest["files"]:
            rows = csv.DictReader(io.StringIO(Path(file["uri"].removeprefix("file://")).read_text()))
            updated = [datetime.strptime(row["UpdatedDate"], "%Y-%m-%dT%H:%M:%S%z") for row in rows]
            assert all(start <= when < end for when in updated), (manifest["window"], updated)
    # Zuora was asked for the user's condition in parentheses, then the window.
    queries_sent = [job["batches"][0]["query"] for job in tenant_sim.jobs()]
    assert all("where (Name = 'Acme' or Name = 'Globex') and UpdatedDate >= '" in query for query in queries_sent)


def test_the_windows_a_run_returns_are_oldest_first_even_when_a_split_window_finishes_last(monkeypatch, tmp_path):
    with AquaSimulator(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, job_seconds=0.1, max_file_bytes=120) as sim:
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", connection_json(sim.base_url))
        monkeypatch.setattr(export_module, "_utc_now", sim.tenant.clock.now)
        sim.tenant.clock.set(START + timedelta(days=2, minutes=5))
        for hour in range(6):  # day 1 is over the cap and split; day 2 fits at once
            write(sim, START + timedelta(hours=hour * 4), f"A{hour}", f"Customer number {hour}")
        write(sim, START + timedelta(days=1, hours=1), "B1", "small")

        windows = export(tmp_path).execute(context(FakeTaskInstance("zuora_changes")))

    starts = [window["window"]["start"] for window in windows]
    assert len(starts) > 2 and starts == sorted(starts)


def test_a_window_over_the_file_size_cap_is_split_until_its_files_fit(monkeypatch, tmp_path):
    with AquaSimulator(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, job_seconds=0.1, max_file_bytes=120) as sim:
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", connection_json(sim.base_url))
        monkeypatch.setattr(export_module, "_utc_now", sim.tenant.clock.now)
        sim.tenant.clock.set(START + timedelta(days=1, minutes=5))
        for hour in range(6):
            write(sim, START + timedelta(hours=hour * 4), f"A{hour}", f"Customer number {hour}")

        export(tmp_path).execute(context(FakeTaskInstance("zuora_changes")))

        assert sorted(exported_versions(tmp_path)) == sorted((f"A{h}", f"Customer number {h}") for h in range(6))
        assert len(manifests(tmp_path)) > 1  # the day was halved until each file fit
        assert_windows_tile(tmp_path, START, START + timedelta(days=1))
        assert any(request.status == 403 for request in sim.requests_for("file"))


def test_a_query_that_runs_past_the_time_limit_is_split(monkeypatch, tmp_path):
    with AquaSimulator(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, job_seconds=0.1, max_query_rows=2) as sim:
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", connection_json(sim.base_url))
        monkeypatch.setattr(export_module, "_utc_now", sim.tenant.clock.now)
        sim.tenant.clock.set(START + timedelta(days=1, minutes=5))
        for hour in range(5):
            write(sim, START + timedelta(hours=hour * 4), f"A{hour}", "x")

        export(tmp_path).execute(context(FakeTaskInstance("zuora_changes")))

        assert sorted(exported_versions(tmp_path)) == sorted((f"A{h}", "x") for h in range(5))
        assert any(job["status"] == "aborted" for job in sim.jobs())


def test_a_published_window_is_not_exported_again_and_a_half_written_one_is_replaced(tenant_sim, tmp_path):
    write(tenant_sim, START + timedelta(hours=1), "A1", "one")
    write(tenant_sim, START + timedelta(days=1, hours=1), "A2", "two")
    # A killed run published day 2 but not day 1, whose folder it left half-written.
    first = export(tmp_path, start="2024-01-02T00:00:00Z", max_window=timedelta(days=1))
    first.execute(context(FakeTaskInstance("zuora_changes")))
    day2 = sorted(tmp_path.rglob("_manifest.json"))[0].parent
    jobs_before = len(tenant_sim.job_ids())
    day1 = day2.with_name("20240101T000000Z_20240102T000000Z")
    day1.mkdir()
    (day1 / "Account.part3.csv").write_text("Id,Name\nstale,stale\n")

    export(tmp_path).execute(context(FakeTaskInstance("zuora_changes")))

    assert sorted(exported_versions(tmp_path)) == [("A1", "one"), ("A2", "two")]
    assert not (day1 / "Account.part3.csv").exists()
    day2_exports = [job for job in tenant_sim.jobs()[jobs_before:] if "20240102T000000" in str(job.get("name"))]
    assert day2_exports == []


def test_a_retry_reattaches_to_the_job_an_earlier_try_left_running(tenant_sim, tmp_path):
    write(tenant_sim, START + timedelta(hours=1), "A1", "one")
    store = FakeStateStore()
    first = export(tmp_path, start="2024-01-02T12:00:00Z", max_window=timedelta(days=2))
    ti = FakeTaskInstance("zuora_changes")
    first.execute(context(ti, task_state_store=store))  # nothing in [Jan 2 12:00, now - lag)
    # Record a submit as a try that died right after sending it would have.
    from airflow_provider_zuora_aqua.tasks.job_records import TaskJobSet

    jobs = TaskJobSet.open(ti, store)
    window_slug = "20240101T000000Z_20240102T000000Z"
    body = {
        "format": "csv",
        "version": "1.0",
        "queries": [
            {
                "name": "Account",
                "query": "select Id, Name, UpdatedDate from Account where UpdatedDate >= '2024-01-01T00:00:00+00:00' "
                "and UpdatedDate < '2024-01-02T00:00:00+00:00'",
                "type": "zoqlexport",
            }
        ],
    }
    jobs.submitting(f"Account/{window_slug}", "died-after-sending", body, CONN_ID)
    from airflow_provider_zuora_aqua.hooks.aqua import ZuoraAquaHook

    created = ZuoraAquaHook(CONN_ID).submit_job(body, idempotency_key="died-after-sending")
    submits = len(tenant_sim.requests_for("submit"))

    windows = export(tmp_path).execute(context(FakeTaskInstance("zuora_changes", try_number=2), task_state_store=store))

    reattached = next(window for window in windows if window["window"]["start"] == START.isoformat())
    assert reattached["job_id"] == created["id"]  # the resend named the first request's job
    # The resend, and the submit of the gap [Jan 2 00:00, Jan 2 12:00): no second job for Jan 1.
    assert len(tenant_sim.requests_for("submit")) == submits + 2
    assert [job["id"] for job in tenant_sim.jobs() if "query" in str(job) and "2024-01-01T00" in str(job)] == [
        created["id"]
    ]
    assert exported_versions(tmp_path) == [("A1", "one")]
    assert store.get(AQUA_JOBS_XCOM_KEY) == []  # every job's end handled


def test_a_failed_window_fails_the_task_and_cancels_the_others(tenant_sim, tmp_path, monkeypatch):
    write(tenant_sim, START + timedelta(hours=1), "A1", "one")
    original = export_module.job_failure_reason

    def first_window_fails(job, **kwargs):
        return "boom" if "20240101" in str(job.get("name")) else original(job, **kwargs)

    monkeypatch.setattr(export_module, "job_failure_reason", first_window_fails)
    operator = export(tmp_path, max_active_jobs=3)
    with pytest.raises(AquaJobFailedError, match="boom"):
        operator.execute(context(FakeTaskInstance("zuora_changes")))
    statuses = {job["status"] for job in tenant_sim.jobs()}
    assert statuses <= {"completed", "cancelled"}
    assert "submitted" not in statuses and "executing" not in statuses


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"start": "2024-01-01T00:00:00"}, "no time zone"),
        ({"queries": {"Account": "select Id from Account where UpdatedDate > '2020-01-01'"}}, "filters on"),
        ({"queries": {"../etc": "select Id from Account"}}, "names its folder"),
        ({"queries": {}}, "non-empty"),
        ({"cursor": "Updated Date"}, "cursor"),
        ({"lag": -5}, "lag"),
        ({"max_window": 0}, "max_window"),
        ({"max_active_jobs": 51}, "max_active_jobs"),
        ({"format": "parquet"}, "format"),
        ({"deleted": "yes"}, "deleted"),
    ],
)
def test_bad_arguments_are_refused_when_the_dag_is_built(tmp_path, arguments, message):
    with pytest.raises(AquaConfigurationError, match=message):
        export(tmp_path, **arguments)


def test_templated_arguments_are_checked_once_rendered(tenant_sim, tmp_path):
    operator = export(tmp_path, start="{{ params.start }}")
    operator.start = "2024-01-01T00:00:00"  # as rendered
    with pytest.raises(AquaConfigurationError, match="no time zone"):
        operator.execute(context(FakeTaskInstance("zuora_changes")))
    assert tenant_sim.requests == []


def test_two_runs_at_once_on_one_destination_do_not_publish_overlapping_windows(monkeypatch, tmp_path):
    with AquaSimulator(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, job_seconds=1) as sim:
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", connection_json(sim.base_url))
        monkeypatch.setattr(export_module, "_utc_now", sim.tenant.clock.now)
        sim.tenant.clock.set(START + timedelta(days=1))
        write(sim, START + timedelta(hours=23, minutes=50), "A1", "one")
        # The same export in two runs a minute apart, as a scheduler starts them: their "now - lag" differ.
        runs = [export(tmp_path, lag=timedelta(minutes=lag), poll_interval=0.2) for lag in (5, 4)]
        errors: list[BaseException] = []

        def run(operator: AquaIncrementalExportOperator) -> None:
            try:
                operator.execute(context(FakeTaskInstance("zuora_changes")))
            except BaseException as exc:  # noqa: BLE001  (reported below)
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(operator,)) for operator in runs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)

        assert errors == []
        assert exported_versions(tmp_path).count(("A1", "one")) == 1
        export(tmp_path).execute(context(FakeTaskInstance("zuora_changes")))  # the next run can go on


def test_one_task_instance_of_an_export_runs_at_a_time_unless_told_otherwise(tmp_path):
    assert export(tmp_path).max_active_tis_per_dag == 1
    assert export(tmp_path, max_active_tis_per_dag=2).max_active_tis_per_dag == 2


def test_a_window_whose_recorded_submit_zuora_refused_is_submitted_with_a_fresh_key(monkeypatch, tmp_path):
    """
    A try died waiting for a slot with a refused submit in its record (Zuora keeps a refused
    key's answer, 90028, for 24 hours): the retry exports the window with a new key, once.
    """
    from airflow_provider_zuora_aqua.hooks.aqua import ZuoraAquaHook
    from airflow_provider_zuora_aqua.tasks.job_records import TaskJobSet

    with AquaSimulator(
        client_id=CLIENT_ID, client_secret=CLIENT_SECRET, job_seconds=0.1, concurrent_job_limit=1
    ) as sim:
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", connection_json(sim.base_url, max_retries=0))
        monkeypatch.setattr(export_module, "_utc_now", sim.tenant.clock.now)
        sim.tenant.clock.set(START + timedelta(days=1, minutes=5))
        write(sim, START + timedelta(hours=1), "A1", "one")
        hook = ZuoraAquaHook(CONN_ID)
        holder = hook.submit_job(
            {"format": "csv", "version": "1.0", "queries": [{"name": "a", "query": "select Id from Account"}]}
        )
        slot, key = "Account/20240101T000000Z_20240102T000000Z", "refused-for-the-limit"
        body = {"format": "csv", "version": "1.0", "queries": [{"name": "Account", "query": "select Id from Account"}]}
        with pytest.raises(AquaError, match="limit"):
            hook.submit_job(body, idempotency_key=key)
        store = FakeStateStore()
        TaskJobSet.open(FakeTaskInstance("zuora_changes"), store).submitting(slot, key, body, CONN_ID)
        sim.finish_job(holder["id"], "completed")

        windows = export(tmp_path, max_window=timedelta(days=1)).execute(
            context(FakeTaskInstance("zuora_changes", try_number=2), task_state_store=store)
        )

        assert [window["records"] for window in windows] == [1]
        keys = [request.headers.get("Idempotency-Key") for request in sim.requests_for("submit")]
        assert keys.count(key) == 2 and len(sim.job_ids()) == 2  # the holder, and the window's one job
        assert exported_versions(tmp_path) == [("A1", "one")]


def test_a_changed_query_on_a_destination_is_refused_before_anything_is_sent(tenant_sim, tmp_path):
    """DAG A exported a filtered query; DAG B (same name, no filter, same destination) must not export on silently."""
    write(tenant_sim, START + timedelta(hours=1), "A1", "Acme")
    write(tenant_sim, START + timedelta(hours=2), "A2", "Other")
    filtered = {"Account": "select Id, Name, UpdatedDate from Account where Name = 'Acme'"}
    export(tmp_path, queries=filtered).execute(context(FakeTaskInstance("zuora_changes")))
    submits = len(tenant_sim.requests_for("submit"))

    with pytest.raises(AquaConfigurationError) as refused:
        export(tmp_path).execute(context(FakeTaskInstance("other_dag_export")))

    message = str(refused.value)
    assert "where Name = 'Acme'" in message and "select Id, Name, UpdatedDate from Account'" in message
    assert "another destination" in message and "another name" in message
    assert len(tenant_sim.requests_for("submit")) == submits  # nothing sent
    # Under another name the unfiltered query is its own series, exported from start: A2 is not lost.
    export(tmp_path, queries={"AllAccounts": QUERIES["Account"]}).execute(context(FakeTaskInstance("x")))
    assert sorted(row_id for row_id, _ in exported_versions(tmp_path)) == ["A1", "A1", "A2"]


def test_two_dags_with_the_same_query_on_one_destination_are_one_series(tenant_sim, tmp_path):
    write(tenant_sim, START + timedelta(hours=1), "A1", "one")
    spaced = {"Account": "select Id,  Name,\n UpdatedDate   from Account"}
    export(tmp_path).execute(context(FakeTaskInstance("dag_a_export")))
    tenant_sim.tenant.clock.advance(3600)
    write(tenant_sim, START + timedelta(days=3, minutes=10), "A2", "two")

    export(tmp_path, queries=spaced).execute(context(FakeTaskInstance("dag_b_export")))

    assert exported_versions(tmp_path) == [("A1", "one"), ("A2", "two")]
    assert all(manifest["series"]["query"] == QUERIES["Account"] for manifest in manifests(tmp_path))
