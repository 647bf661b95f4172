"""The path users take: scheduler, API server, DAG processor (LocalExecutor, SQLite), REST API."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider_zuora_aqua.simulator import AquaSimulator
from tests.conftest import CLIENT_ID, CLIENT_SECRET, connection_json
from tests.e2e.airflow_env import AirflowHome, AirflowStack, wait_for
from tests.e2e.conftest import assert_no_secret, polled_job_ids, wait_for_delete, wait_for_polled_job

pytestmark = pytest.mark.airflow_e2e


@pytest.fixture(scope="module")
def stack_simulator() -> Iterator[AquaSimulator]:
    with AquaSimulator(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, job_seconds=3600) as sim:
        yield sim


@pytest.fixture(scope="module")
def stack(migrated_home: AirflowHome, stack_simulator: AquaSimulator, tmp_path_factory) -> Iterator[AirflowStack]:
    home = migrated_home.copy_to(
        Path(tmp_path_factory.mktemp("stack")),
        AIRFLOW_CONN_ZUORA_AQUA_DEFAULT=connection_json(stack_simulator.base_url, max_retries=2),
    )
    with AirflowStack(home) as running:
        for dag_id in ("aqua_e2e_wait", "aqua_e2e_retry"):
            running.wait_for_dag(dag_id)
        yield running
    assert_no_secret(home.all_logs(), stack_simulator)


@pytest.fixture
def sim(stack_simulator: AquaSimulator) -> AquaSimulator:
    stack_simulator.clear_requests()
    return stack_simulator


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
