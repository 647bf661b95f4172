"""Real Airflow task runs (``airflow dags test``, the task runs in the CLI process)."""

from __future__ import annotations

import os
import signal
import time

import pytest

from airflow_provider_zuora_aqua.simulator import AquaSimulator
from airflow_provider_zuora_aqua.testing.airflow_env import AirflowHome, stop_process_group
from tests.support.e2e import assert_no_secret, polled_job_ids, wait_for_delete, wait_for_polled_job

pytestmark = pytest.mark.airflow_e2e


def run_dag(home: AirflowHome, dag_id: str):
    return home.spawn("dags", "test", dag_id, log_name="dags-test.out")


def test_sigterm_to_the_task_process_cancels_its_job(airflow_home, e2e_simulator: AquaSimulator):
    process = run_dag(airflow_home, "aqua_e2e_wait")
    try:
        job_id = wait_for_polled_job(e2e_simulator)
        assert e2e_simulator.get_job(job_id)["status"] in ("submitted", "executing")
        killed_at = time.time()
        os.kill(process.pid, signal.SIGTERM)

        delete_at = wait_for_delete(e2e_simulator, job_id, timeout=10)
        assert delete_at - killed_at < 5
        assert e2e_simulator.get_job(job_id)["status"] == "cancelled"
        process.wait(60)
    finally:
        stop_process_group(process)
    log = airflow_home.read_log("dags-test.out")
    assert f"Cancelled AQuA job {job_id} because the task was killed" in log
    # The DAG-level callback cannot read XCom under `airflow dags test`: one clear line, no traceback.
    assert "XCom cannot be read in this process" in log
    assert "SUPERVISOR_COMMS" not in log
    assert_no_secret(airflow_home.all_logs(), e2e_simulator)


def test_execution_timeout_cancels_the_job_and_fails_the_task(airflow_home, e2e_simulator: AquaSimulator):
    process = run_dag(airflow_home, "aqua_e2e_execution_timeout")
    try:
        job_id = wait_for_polled_job(e2e_simulator)
        wait_for_delete(e2e_simulator, job_id, timeout=30)
        assert e2e_simulator.get_job(job_id)["status"] == "cancelled"
        process.wait(90)
    finally:
        stop_process_group(process)
    log = airflow_home.read_log("dags-test.out")
    assert "AirflowTaskTimeout" in log
    assert "state=failed" in log  # the DagRun finished failed
    assert len(e2e_simulator.requests_for("delete_job")) == 1


def test_jobs_ending_elsewhere_fail_the_task_with_batch_messages(airflow_home, e2e_simulator: AquaSimulator):
    endings = ["error", "aborted", "cancelled", "completed"]  # task order in aqua_e2e_outcomes
    process = run_dag(airflow_home, "aqua_e2e_outcomes")
    try:
        for index, status in enumerate(endings):
            job_id = wait_for_polled_job(e2e_simulator, index)
            e2e_simulator.finish_job(job_id, status, message=f"simulated {status} on Zuora's side")
        process.wait(120)
    finally:
        stop_process_group(process)

    log = airflow_home.read_log("dags-test.out")
    for status in ("error", "aborted", "cancelled"):
        assert (
            f"ended with status '{status}'; failed batches: 'accounts' {status}: simulated {status} on Zuora's side"
            in log
        )
    assert "Zuora-Request-Id" in log
    assert "AQuA job" in log and "completed" in log
    assert len(polled_job_ids(e2e_simulator)) == 4
    # A job that ended on Zuora's side is not cancelled again by its task.
    assert all(r.status != 200 for r in e2e_simulator.requests_for("delete_job"))
    assert_no_secret(airflow_home.all_logs(), e2e_simulator)
