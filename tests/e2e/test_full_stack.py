"""The path users take: scheduler, API server, DAG processor, triggerer (LocalExecutor, SQLite), REST API."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from airflow_provider_zuora_aqua.simulator import AquaSimulator
from airflow_provider_zuora_aqua.testing.airflow_env import AirflowHome, AirflowStack, wait_for
from tests.support.credentials import connection_json
from tests.support.e2e import assert_no_secret, polled_job_ids, wait_for_delete, wait_for_polled_job
from tests.support.jobs import submit_keys

pytestmark = pytest.mark.airflow_e2e


@pytest.fixture(scope="module")
def downloads(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def stack(
    migrated_home: AirflowHome, stack_simulator: AquaSimulator, downloads: Path, tmp_path_factory
) -> Iterator[AirflowStack]:
    home = migrated_home.copy_to(
        Path(tmp_path_factory.mktemp("stack")),
        AQUA_E2E_DOWNLOADS=str(downloads),
        AIRFLOW_CONN_ZUORA_AQUA_DEFAULT=connection_json(stack_simulator.base_url, max_retries=2),
        AIRFLOW_CONN_ZUORA_AQUA_PATIENT=connection_json(stack_simulator.base_url, max_retries=6, retry_backoff=1),
    )
    with AirflowStack(home, triggerer=True) as running:
        for dag_id in (
            "aqua_e2e_wait",
            "aqua_e2e_retry",
            "aqua_e2e_zombie",
            "aqua_e2e_deferred",
            "aqua_e2e_deferred_timeout",
            "aqua_e2e_sensor",
            "aqua_e2e_exactly_once",
            "aqua_e2e_two_tasks",
            "aqua_e2e_download",
        ):
            running.wait_for_dag(dag_id)
        yield running
    assert_no_secret(home.all_logs(), stack_simulator)


def test_marking_the_task_failed_through_the_rest_api_cancels_its_job(stack: AirflowStack, sim: AquaSimulator):
    stack.trigger("aqua_e2e_wait", "mark-failed")
    job_id = wait_for_polled_job(sim, run_id="mark-failed")

    stack.set_task_state("aqua_e2e_wait", "mark-failed", "export", "failed")

    wait_for_delete(sim, job_id, timeout=30)
    assert sim.get_job(job_id)["status"] == "cancelled"


def test_sigkill_of_the_task_process_then_the_failure_callback_cancels_the_job(stack: AirflowStack, sim: AquaSimulator):
    stack.trigger("aqua_e2e_wait", "sigkill")
    job_id = wait_for_polled_job(sim, run_id="sigkill")
    ti = stack.wait_for_task_state("aqua_e2e_wait", "sigkill", "export", {"running"})
    assert ti["pid"], ti

    os.kill(ti["pid"], signal.SIGKILL)

    # on_kill cannot run; the DAG-level on_failure_callback runs in the DAG processor.
    wait_for_delete(sim, job_id, timeout=90)
    assert sim.get_job(job_id)["status"] == "cancelled"
    stack.wait_for_task_state("aqua_e2e_wait", "sigkill", "export", {"failed"})


def test_lost_worker_the_task_failure_callback_installed_by_default_cancels_the_job(
    stack: AirflowStack, sim: AquaSimulator
):
    """Task process and its supervisor both die (a lost worker): no on_kill, no DAG callback."""
    stack.trigger("aqua_e2e_zombie", "zombie")
    job_id = wait_for_polled_job(sim, run_id="zombie")
    ti = stack.wait_for_task_state("aqua_e2e_zombie", "zombie", "export", {"running"})
    supervisor = psutil.Process(ti["pid"]).ppid()

    os.kill(ti["pid"], signal.SIGKILL)
    os.kill(supervisor, signal.SIGKILL)

    # The scheduler fails the task after the heartbeat timeout (10 s here); the DAG processor
    # then runs the task's on_failure_callback, which AquaSubmitJobOperator installed.
    wait_for_delete(sim, job_id, timeout=120)
    assert sim.get_job(job_id)["status"] == "cancelled"


def test_a_retry_reattaches_to_the_running_job_instead_of_submitting_again(stack: AirflowStack, sim: AquaSimulator):
    stack.trigger("aqua_e2e_retry", "retry")
    job_id = wait_for_polled_job(sim, run_id="retry")
    ti = stack.wait_for_task_state("aqua_e2e_retry", "retry", "export", {"running"})

    os.kill(ti["pid"], signal.SIGKILL)

    # The second try polls the same job: its Track-Id names try 2.
    wait_for(
        lambda: any(r.headers.get("Zuora-Track-Id", "").endswith(".2") for r in sim.requests_for("get_job")),
        timeout=90,
        what="the second try polling the job",
    )
    assert sim.get_job(job_id)["status"] == "executing"
    sim.finish_job(job_id, "completed")
    ti = stack.wait_for_task_state("aqua_e2e_retry", "retry", "export", {"success", "failed"})

    assert ti["state"] == "success"
    assert ti["try_number"] == 2
    assert len(sim.requests_for("submit")) == 1
    assert polled_job_ids(sim, run_id="retry") == [job_id]
    assert sim.requests_for("delete_job") == []


def test_marking_a_deferred_task_failed_cancels_its_job(stack: AirflowStack, sim: AquaSimulator):
    stack.trigger("aqua_e2e_deferred", "deferred-mark-failed")
    job_id = wait_for_polled_job(sim, run_id="deferred-mark-failed")
    stack.wait_for_task_state("aqua_e2e_deferred", "deferred-mark-failed", "export", {"deferred"})

    stack.set_task_state("aqua_e2e_deferred", "deferred-mark-failed", "export", "failed")

    # The triggerer calls the trigger's on_kill (Airflow 3.3+).
    wait_for_delete(sim, job_id, timeout=30)
    assert sim.get_job(job_id)["status"] == "cancelled"


def test_deferred_timeout_cancels_the_job_and_fails_the_task(stack: AirflowStack, sim: AquaSimulator):
    stack.trigger("aqua_e2e_deferred_timeout", "deferred-timeout")
    job_id = wait_for_polled_job(sim, run_id="deferred-timeout")

    wait_for_delete(sim, job_id, timeout=60)

    assert sim.get_job(job_id)["status"] == "cancelled"
    ti = stack.wait_for_task_state("aqua_e2e_deferred_timeout", "deferred-timeout", "export", {"failed", "success"})
    assert ti["state"] == "failed"


def test_triggerer_restart_keeps_the_job_and_success_returns_the_job(stack: AirflowStack, sim: AquaSimulator):
    dag_id, run_id = "aqua_e2e_deferred", "deferred-restart"
    stack.trigger(dag_id, run_id)
    job_id = wait_for_polled_job(sim, run_id=run_id)
    stack.wait_for_task_state(dag_id, run_id, "export", {"deferred"})

    stack.restart_triggerer()
    polls_before = len(sim.requests_for("get_job"))
    wait_for(lambda: len(sim.requests_for("get_job")) > polls_before, timeout=90, what="the new triggerer polling")
    assert sim.get_job(job_id)["status"] == "executing"
    assert sim.requests_for("delete_job") == []

    sim.finish_job(job_id, "completed")
    ti = stack.wait_for_task_state(dag_id, run_id, "export", {"success", "failed"})
    assert ti["state"] == "success"
    status, xcom = stack.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/export/xcomEntries/return_value")
    assert status == 200, xcom
    assert xcom["value"]["id"] == job_id and xcom["value"]["status"] == "completed"
    assert sim.requests_for("file") == []  # waiting downloads nothing
    assert len(sim.requests_for("submit")) == 1


def test_sensor_in_deferrable_and_poke_modes(stack: AirflowStack, sim: AquaSimulator):
    dag_id, run_id = "aqua_e2e_sensor", "sensor"
    stack.trigger(dag_id, run_id)
    stack.wait_for_task_state(dag_id, run_id, "wait_deferred", {"deferred"})
    stack.wait_for_task_state(dag_id, run_id, "wait_poke", {"running", "up_for_reschedule"})
    [job_id] = sim.job_ids()[-1:]

    sim.finish_job(job_id, "completed")

    for task_id in ("wait_deferred", "wait_poke"):
        ti = stack.wait_for_task_state(dag_id, run_id, task_id, {"success", "failed"})
        assert ti["state"] == "success", task_id
        status, xcom = stack.api(
            "GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value"
        )
        assert status == 200 and xcom["value"]["id"] == job_id, xcom
    assert sim.requests_for("delete_job") == []  # a sensor never cancels


def test_a_task_killed_while_its_submit_is_in_flight_leaves_exactly_one_job(stack: AirflowStack, sim: AquaSimulator):
    """The retry sends the killed try's submit again with its Idempotency-Key and re-attaches."""
    before = set(sim.job_ids())
    sim.add_fault("submit", "slow", delay=8, count=1)  # the job exists, its answer is 8 s away
    stack.trigger("aqua_e2e_exactly_once", "exactly-once")
    created = wait_for(lambda: set(sim.job_ids()) - before, timeout=120, what="the first try's job")
    ti = stack.wait_for_task_state("aqua_e2e_exactly_once", "exactly-once", "export", {"running"})

    os.kill(ti["pid"], signal.SIGKILL)

    wait_for(
        lambda: any(r.headers.get("Zuora-Track-Id", "").endswith(".2") for r in sim.requests_for("get_job")),
        timeout=120,
        what="the second try polling a job",
    )
    (job_id,) = created
    assert polled_job_ids(sim, run_id="exactly-once") == [job_id]
    sim.finish_job(job_id, "completed")
    ti = stack.wait_for_task_state("aqua_e2e_exactly_once", "exactly-once", "export", {"success", "failed"})

    assert ti["state"] == "success" and ti["try_number"] == 2
    assert set(sim.job_ids()) - before == {job_id}
    keys = set(submit_keys(sim))
    assert len(keys) == 1 and keys != {None}  # both tries sent the first try's key
    assert sim.requests_for("delete_job") == []


def test_the_dag_level_callback_cancels_the_jobs_of_every_killed_aqua_task(stack: AirflowStack, sim: AquaSimulator):
    stack.trigger("aqua_e2e_two_tasks", "two-tasks")
    wait_for_polled_job(sim, index=1, run_id="two-tasks")
    job_ids = polled_job_ids(sim, run_id="two-tasks")
    pids = [
        stack.wait_for_task_state("aqua_e2e_two_tasks", "two-tasks", task_id, {"running"})["pid"]
        for task_id in ("first", "second")
    ]

    for pid in pids:
        os.kill(pid, signal.SIGKILL)

    # No task-level callback runs after a SIGKILL of the task process alone: the one DAG-level
    # callback of the failed run cancels both jobs.
    for job_id in job_ids:
        wait_for_delete(sim, job_id, timeout=120)
        assert sim.get_job(job_id)["status"] == "cancelled"


def test_submit_downloads_the_files_and_a_retry_after_a_failed_download_never_submits_again(
    stack: AirflowStack, sim: AquaSimulator, downloads: Path
):
    before = set(sim.job_ids())
    sim.add_fault("file", 403, count=1)  # the first try's download is refused
    stack.trigger("aqua_e2e_download", "download")
    job_id = wait_for_polled_job(sim, run_id="download")
    sim.finish_job(job_id, "completed")

    ti = stack.wait_for_task_state("aqua_e2e_download", "download", "export", {"success", "failed"})

    assert ti["state"] == "success" and ti["try_number"] == 2
    assert set(sim.job_ids()) - before == {job_id}
    status, xcom = stack.api(
        "GET", "/dags/aqua_e2e_download/dagRuns/download/taskInstances/export/xcomEntries/return_value"
    )
    assert status == 200, xcom
    manifest = xcom["value"] if isinstance(xcom["value"], dict) else json.loads(xcom["value"])
    folder = downloads / "download"
    assert manifest["job_id"] == job_id
    assert json.loads((folder / "_manifest.json").read_text()) == manifest
    (entry,) = manifest["files"]
    assert (folder / "accounts.csv").stat().st_size == entry["bytes"]
    assert entry["records"] == sim.get_job(job_id)["batches"][0]["recordCount"]


def test_a_task_without_retries_killed_while_its_submit_is_in_flight_has_its_job_cancelled(
    stack: AirflowStack, sim: AquaSimulator
):
    """No job id was ever recorded: the DAG-level callback sends the recorded keyed submit again to name the job."""
    before = set(sim.job_ids())
    sim.add_fault("submit", "slow", delay=6, count=1)  # the job exists, its answer is 6 s away
    stack.trigger("aqua_e2e_wait", "submit-window")
    (job_id,) = wait_for(lambda: set(sim.job_ids()) - before, timeout=120, what="the job")
    ti = stack.wait_for_task_state("aqua_e2e_wait", "submit-window", "export", {"running"})

    os.kill(ti["pid"], signal.SIGKILL)

    wait_for_delete(sim, job_id, timeout=120)
    assert sim.get_job(job_id)["status"] == "cancelled"
    assert set(sim.job_ids()) - before == {job_id}
