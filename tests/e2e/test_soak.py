"""The fault soak of ``benchmarks/soak.py``, CI-sized, plus its accounting on hand-made evidence."""

from __future__ import annotations

import csv
import hashlib
import json
import random
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_zuora_aqua.testing.airflow_env import AirflowHome
from airflow_provider_zuora_aqua.triggers.aqua import TRIGGER_HAS_ON_KILL
from benchmarks.dags.aqua_soak_dags import SOAK_TASKS
from benchmarks.soak import (
    EXECUTION_TIMEOUT,
    MARK_FAILED,
    SIGKILL,
    SIGTERM,
    STOP_KINDS,
    TRIGGERER_LOST,
    WORKER_LOST,
    Report,
    StopState,
    TryId,
    account,
    check_download,
    fault_rules,
    keep_failure_logs,
    plan_stops,
    run_soak,
    shortfalls,
    try_from_job_name,
    try_from_track_id,
    unplanned_failed_tries,
)

#: 16 jobs (2 runs of 8 tasks) whose plan stops the first try with every kind, SIGKILL with and without retries.
CI_JOBS, CI_SEED, CI_STOP_RATE = 16, 39, 0.4
RETRIES = {task.task_id: task.retries for task in SOAK_TASKS}


@pytest.mark.airflow_e2e
@pytest.mark.timeout(900)
@pytest.mark.skipif(not TRIGGER_HAS_ON_KILL, reason="the soak needs Airflow 3.3+: task state store, trigger on_kill")
def test_ci_sized_soak_leaves_no_duplicate_no_orphan_and_no_lost_result(migrated_home: AirflowHome, tmp_path: Path):
    run_ids = ["soak-000", "soak-001"]
    plan = plan_stops(run_ids, SOAK_TASKS, CI_STOP_RATE, random.Random(CI_SEED))
    assert set(plan.values()) == set(STOP_KINDS)
    assert {RETRIES[task_id] > 0 for (_, task_id), kind in plan.items() if kind == SIGKILL} == {True, False}

    report = run_soak(
        jobs=CI_JOBS,
        seed=CI_SEED,
        stop_rate=CI_STOP_RATE,
        fault_rate=0.2,
        max_minutes=12,
        work_dir=tmp_path,
        template_home=migrated_home,
        failure_logs=tmp_path / "failure-logs",
    )

    print(report.table())
    assert report.runs_ended == report.runs_triggered == 2
    # No duplicate, orphan or lost result; the faults and stops really happened, every stopped
    # try's job is cancelled but where a retry re-attaches, and no try failed unplanned.
    assert shortfalls(report, plan, RETRIES) == []


def test_fault_rules_hit_about_the_fault_rate():
    rules = fault_rules(0.2)
    every_route = [rule for rule in rules if rule["route"] == "*"]
    missed = 1.0
    for rule in every_route:
        missed *= 1 - rule["rate"]
    assert 1 - missed == pytest.approx(0.2, abs=1e-4)
    assert {rule["kind"] for rule in rules} >= {"429", "500", "503", "drop", "slow", "lost_answer"}
    assert next(rule for rule in rules if rule["kind"] == "429")["retry_after"] > 0
    with pytest.raises(ValueError, match="fault_rate"):
        fault_rules(1.0)


def test_plan_stops_picks_kinds_the_task_can_take():
    plan = plan_stops([f"r{i}" for i in range(50)], SOAK_TASKS, 1.0, random.Random(0))
    deferrable = {task.task_id: task.deferrable for task in SOAK_TASKS}
    assert len(plan) == 50 * len(SOAK_TASKS)
    for (_, task_id), kind in plan.items():
        allowed = (MARK_FAILED, EXECUTION_TIMEOUT) if deferrable[task_id] else (SIGTERM, SIGKILL, EXECUTION_TIMEOUT)
        assert kind in allowed
    assert plan_stops(["r0"], SOAK_TASKS, 0.0, random.Random(0)) == {}


def test_tries_are_read_from_track_ids_and_job_names():
    assert try_from_track_id("airflow.aqua_soak.sync_csv.soak-003.2") == TryId("soak-003", "sync_csv", 2)
    assert try_from_track_id("airflow.other_dag.sync_csv.soak-003.2") is None
    assert try_from_track_id(None) is None
    assert try_from_job_name("soak-003.sync_csv.2") == TryId("soak-003", "sync_csv", 2)
    assert try_from_job_name("bench") is None


# -- the accounting, on evidence made by hand ------------------------------------------------
def _csv_file(path: Path, rows: int) -> dict[str, Any]:
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["Id", "Name"])
        for row in range(rows):
            writer.writerow([row, f'line one\nline "two", {row}'])  # a record is not a line
    data = path.read_bytes()
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(), "records": rows}


def _job(job_id: str, name: str, status: str, records: int = 3) -> dict[str, Any]:
    batch = {"batchId": f"b-{job_id}", "name": "accounts", "status": status, "recordCount": records}
    if status == "completed":
        batch["fileId"] = f"f-{job_id}"
    return {"id": job_id, "name": name, "status": status, "format": "CSV", "batches": [batch]}


def _download(downloads: Path, run_id: str, task_id: str, job: dict[str, Any], rows: int) -> dict[str, Any]:
    folder = downloads / run_id / task_id
    folder.mkdir(parents=True)
    path = folder / "accounts.csv"
    entry = {"batch": "accounts", "file_id": job["batches"][0]["fileId"], "uri": path.as_uri(), "format": "csv"}
    manifest = {"job_id": job["id"], "destination": folder.as_uri(), "files": [{**entry, **_csv_file(path, rows)}]}
    (folder / "_manifest.json").write_text(json.dumps(manifest))
    return manifest


def _submit(run_id: str, task_id: str, try_number: int) -> dict[str, Any]:
    return {"route": "submit", "headers": {"Zuora-Track-Id": f"airflow.aqua_soak.{task_id}.{run_id}.{try_number}"}}


def _api(path: str, xcoms: dict[str, Any], tries: dict[str, list[dict[str, Any]]]) -> tuple[int, dict[str, Any]]:
    """The REST answers ``account`` reads: a task instance's tries, or its return value."""
    parts = path.split("/")
    if parts[-1] == "tries":
        return 200, {"task_instances": tries[parts[-2]]}
    return 200, {"value": xcoms[parts[-3]]}


def test_a_try_that_failed_unplanned_is_found_although_a_retry_made_it_good():
    tis = {("r0", "sync_retry"): {"state": "success", "try_number": 2}, ("r0", "sync_csv"): {"state": "success"}}
    tries = {"sync_retry": [{"try_number": 1, "state": "up_for_retry"}, {"try_number": 2, "state": "success"}]}
    driver = SimpleNamespace(tis=tis, stops={}, stack=SimpleNamespace(api=lambda method, path: _api(path, {}, tries)))

    assert unplanned_failed_tries(driver) == [("r0", "sync_retry", 1)]
    driver.stops = {("r0", "sync_retry"): StopState(SIGKILL, applied=True)}  # planned: not counted
    assert unplanned_failed_tries(driver) == []


def test_tries_lost_with_their_worker_are_planned_and_a_harmless_stop_is_not():
    """``worker_lost`` takes every try running on the worker; after ``triggerer_lost`` the try must still succeed."""
    killed_at = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
    tis = {
        ("r0", "sync_retry"): {"state": "success", "try_number": 2},  # the planned worker_lost
        ("r0", "sync_csv"): {"state": "failed", "try_number": 1},  # on the same worker: lost with it
        ("r0", "sync_plain"): {"state": "failed", "try_number": 1},  # on the other worker: unplanned
        ("r0", "defer_plain"): {"state": "failed", "try_number": 1},  # triggerer_lost must not fail it
    }

    def one_try(number: int, state: str, hostname: str, start: str) -> dict[str, Any]:
        return {"try_number": number, "state": state, "hostname": hostname, "start_date": start}

    tries = {
        "sync_retry": [
            one_try(1, "up_for_retry", "worker-1", "2026-01-01T11:59:50Z"),
            one_try(2, "success", "worker-2", "2026-01-01T12:00:20Z"),
        ],
        "sync_csv": [one_try(1, "failed", "worker-1", "2026-01-01T11:59:58Z")],
        "sync_plain": [one_try(1, "failed", "worker-2", "2026-01-01T11:59:58Z")],
        "defer_plain": [one_try(1, "failed", "worker-2", "2026-01-01T11:59:40Z")],
    }
    driver = SimpleNamespace(
        tis=tis,
        stops={
            ("r0", "sync_retry"): StopState(WORKER_LOST, applied=True),
            ("r0", "defer_plain"): StopState(TRIGGERER_LOST, applied=True),
        },
        lost_workers=[("worker-1", killed_at)],
        stack=SimpleNamespace(api=lambda method, path: _api(path, {}, tries)),
    )

    assert unplanned_failed_tries(driver) == [("r0", "defer_plain", 1), ("r0", "sync_plain", 1)]


def test_the_report_names_its_executor():
    report = Report(jobs_requested=8, seed=0, fault_rate=0.2, stop_rate=0.2)
    assert report.to_json()["executor"] == "LocalExecutor"
    assert "CeleryExecutor" in Report(8, 0, 0.2, 0.2, executor="CeleryExecutor").table()


def test_the_logs_of_unplanned_failures_are_kept_beside_their_trigger_logs(tmp_path: Path):
    home = SimpleNamespace(root=tmp_path / "home")
    task_logs = home.root / "logs" / "dag_id=aqua_soak" / "run_id=r0" / "task_id=defer_zip"
    task_logs.mkdir(parents=True)
    for name in ("attempt=1.log", "attempt=1.log.trigger.7.log", "attempt=2.log"):
        (task_logs / name).write_text(name)

    kept = keep_failure_logs(home, [("r0", "defer_zip", 1)], tmp_path / "kept")

    assert kept == tmp_path / "kept"
    assert sorted(path.name for path in (kept / "r0" / "defer_zip").iterdir()) == [
        "attempt=1.log",
        "attempt=1.log.trigger.7.log",
    ]
    assert keep_failure_logs(home, [], tmp_path / "none") is None and not (tmp_path / "none").exists()


def test_account_counts_duplicates_orphans_and_lost_results(tmp_path: Path):
    jobs = {
        "j1": _job("j1", "r0.sync_csv.1", "completed"),  # delivered in full
        "j2": _job("j2", "r0.defer_zip.1", "completed"),  # its manifest claims one record too many
        "j3": _job("j3", "r0.sync_retry.1", "executing"),  # two jobs for one try, one still running
        "j4": _job("j4", "r0.sync_retry.1", "cancelled"),
        "j5": _job("j5", "r0.defer_plain.1", "executing"),  # its task is deferred: not an orphan yet
        "j6": _job("j6", "r0.sync_plain.7", "cancelled"),  # a try no submit named
    }
    xcoms = {"sync_csv": _download(tmp_path, "r0", "sync_csv", jobs["j1"], 3)}
    xcoms["defer_zip"] = _download(tmp_path, "r0", "defer_zip", jobs["j2"], 3)
    xcoms["defer_zip"]["files"][0]["records"] = 4
    (tmp_path / "r0" / "defer_zip" / "_manifest.json").write_text(json.dumps(xcoms["defer_zip"]))
    tis = {
        ("r0", "sync_csv"): {"state": "success", "try_number": 1},
        ("r0", "defer_zip"): {"state": "success", "try_number": 1},
        ("r0", "sync_retry"): {"state": "failed", "try_number": 2},
        ("r0", "defer_plain"): {"state": "deferred", "try_number": 1},
        ("r0", "sync_plain"): {"state": "failed", "try_number": 1},
    }
    # sync_retry: its first try was SIGKILLed as planned, its second failed unplanned.
    tries = {
        "sync_retry": [{"try_number": 1, "state": "up_for_retry"}, {"try_number": 2, "state": "failed"}],
        "sync_plain": [{"try_number": 1, "state": "failed"}],
    }
    requests = [_submit("r0", task_id, 1) for task_id in ("sync_csv", "defer_zip", "sync_retry", "defer_plain")]
    requests.append({"route": "get_job", "headers": {}, "fault": "503"})
    driver = SimpleNamespace(
        requests=requests,
        jobs=jobs,
        tis=tis,
        stops={("r0", "sync_retry"): StopState(SIGKILL, applied=True)},
        finished={"j1", "j2"},
        tasks={task.task_id: task for task in SOAK_TASKS},
        stack=SimpleNamespace(api=lambda method, path: _api(path, xcoms, tries)),
    )
    report = Report(jobs_requested=8, seed=0, fault_rate=0.2, stop_rate=0.2)

    account(report, driver, tmp_path)

    assert report.duplicate_submits == 2  # j4 beside j3, and j6 that no submit owns
    assert report.orphaned_jobs == 1 and "j3" in report.orphans[0]
    assert report.results_checked == 2
    assert report.results_lost == 1 and "defer_zip" in report.lost[0] and "records" in report.lost[0]
    assert report.unplanned_failures == ["r0.sync_plain try 1", "r0.sync_retry try 2"]
    assert report.faults == {"503": 1} and report.requests == 5 and report.task_tries == 4
    report.judge()
    assert not report.passed and len(report.failures) == 3


def test_check_download_refuses_a_missing_file_and_a_manifest_that_is_not_the_xcom(tmp_path: Path):
    job = _job("j1", "r0.sync_csv.1", "completed")
    manifest = _download(tmp_path, "r0", "sync_csv", job, 3)
    folder = tmp_path / "r0" / "sync_csv"

    assert check_download(folder, manifest, {"j1": job}) is None
    assert check_download(folder, json.dumps(manifest), {"j1": job}) is None  # XCom may hold it as JSON text
    assert "XCom" in check_download(folder, {**manifest, "files": []}, {"j1": job})
    assert "executing" in check_download(folder, manifest, {"j1": {**job, "status": "executing"}})
    (folder / "accounts.csv").unlink()
    assert "missing" in check_download(folder, manifest, {"j1": job})
    assert "manifest" in check_download(tmp_path / "nowhere", manifest, {"j1": job})
