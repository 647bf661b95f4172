"""The DAG-level failure callback on a mapped AQuA task, on the full stack (scheduler, DAG processor, LocalExecutor).

Each map index renders its own connection id (``zuora_e2e_{{ ti.map_index }}``), and each
connection points at its own simulator, so what each simulator saw belongs to one map index.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_zuora_aqua.simulator import AquaSimulator
from airflow_provider_zuora_aqua.testing.airflow_env import AirflowHome, AirflowStack, wait_for
from tests.support.credentials import CLIENT_ID, CLIENT_SECRET, connection_json
from tests.support.e2e import assert_no_secret, wait_for_delete
from tests.support.jobs import submit_keys

pytestmark = pytest.mark.airflow_e2e

DAG_ID, TASK_ID = "aqua_e2e_mapped", "export"


@pytest.fixture(scope="module")
def sims() -> Iterator[tuple[AquaSimulator, AquaSimulator]]:
    """One simulator per map index; their jobs run for an hour unless the test ends them."""
    with (
        AquaSimulator(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, job_seconds=3600) as first,
        AquaSimulator(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, job_seconds=3600) as second,
    ):
        yield first, second


@pytest.fixture(scope="module")
def stack(migrated_home: AirflowHome, sims, tmp_path_factory) -> Iterator[AirflowStack]:
    home = migrated_home.copy_to(
        Path(tmp_path_factory.mktemp("mapped-stack")),
        AIRFLOW_CONN_ZUORA_E2E_0=connection_json(sims[0].base_url, max_retries=2),
        AIRFLOW_CONN_ZUORA_E2E_1=connection_json(sims[1].base_url, max_retries=6, retry_backoff=1),
        # A callback that fell back to a connection the task did not render would reach nothing.
        AIRFLOW_CONN_ZUORA_AQUA_DEFAULT=connection_json("http://127.0.0.1:9", max_retries=0),
    )
    with AirflowStack(home) as running:
        running.wait_for_dag(DAG_ID)
        yield running
    for sim in sims:
        assert_no_secret(home.all_logs(), sim)


def mapped_ti(stack: AirflowStack, run_id: str, map_index: int) -> dict[str, Any]:
    status, body = stack.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{TASK_ID}/{map_index}")
    return body if status == 200 else {}


def kill_try(stack: AirflowStack, run_id: str, map_index: int, try_number: int) -> None:
    """SIGKILL the task process of this try of the map index, once it runs (no on_kill, no task callback)."""
    ti = wait_for(
        lambda: (
            (ti := mapped_ti(stack, run_id, map_index)).get("state") == "running"
            and ti.get("try_number") == try_number
            and ti.get("pid")
            and ti
        ),
        timeout=120,
        interval=0.3,
        what=f"map index {map_index} running its try {try_number}",
    )
    os.kill(ti["pid"], signal.SIGKILL)


def polled_by_try(sim: AquaSimulator, try_number: int) -> bool:
    return any(r.headers.get("Zuora-Track-Id", "").endswith(f".{try_number}") for r in sim.requests_for("get_job"))


def test_the_dag_level_callback_cancels_the_job_of_each_map_index_through_its_rendered_connection(
    stack: AirflowStack, sims: tuple[AquaSimulator, AquaSimulator]
):
    """
    Map index 0 re-attached on its retry (its try recorded a job id and sent no submit); map index
    1 was killed in its submit window on its last try (submit sent, answer not back, no job id).
    """
    first_sim, second_sim = sims
    run_id = "mapped"
    second_sim.add_fault("submit", "slow", delay=10, count=1)  # try 1's job exists, its answer 10 s away
    stack.trigger(DAG_ID, run_id)

    # Map index 0: try 1 submits and waits; killed; try 2 re-attaches to the same job.
    (first_job,) = wait_for(lambda: first_sim.job_ids(), timeout=120, what="map index 0's job")
    wait_for(lambda: polled_by_try(first_sim, 1), timeout=60, what="map index 0 try 1 polling")
    kill_try(stack, run_id, 0, 1)
    # Map index 1: try 1 is killed while its submit is in flight.
    (second_job,) = wait_for(lambda: second_sim.job_ids(), timeout=120, what="map index 1's job")
    kill_try(stack, run_id, 1, 1)
    # Try 2 sends try 1's recorded submit again; its answer is held back too, and it dies waiting for it.
    second_sim.add_fault("submit", "slow", delay=60, count=1)
    tokens = len(second_sim.requests_for("token"))
    wait_for(
        lambda: (ti := mapped_ti(stack, run_id, 1)).get("try_number") == 2 and ti.get("state") == "running",
        timeout=120,
        what="map index 1 running its try 2",
    )
    wait_for(lambda: len(second_sim.requests_for("token")) > tokens, timeout=60, what="map index 1 try 2's token")
    time.sleep(2)  # the resend is on its way: the token came right before it
    kill_try(stack, run_id, 1, 2)
    # Map index 0's try 2 waits on the job it re-attached to; killed, its job still runs.
    wait_for(lambda: polled_by_try(first_sim, 2), timeout=120, what="map index 0 try 2 polling")
    kill_try(stack, run_id, 0, 2)

    # The run fails; the one DAG-level callback cancels both jobs, each through its own connection.
    wait_for_delete(second_sim, second_job, timeout=120)
    wait_for_delete(first_sim, first_job, timeout=60)
    assert second_sim.get_job(second_job)["status"] == "cancelled"
    assert first_sim.get_job(first_job)["status"] == "cancelled"
    # Exactly one job per map index: the retry re-attached, and the resends named the first job.
    assert first_sim.job_ids() == [first_job] and second_sim.job_ids() == [second_job]
    assert len(first_sim.requests_for("submit")) == 1
    keys = set(submit_keys(second_sim))
    assert len(keys) == 1 and keys != {None}
    states = [mapped_ti(stack, run_id, index).get("state") for index in (0, 1)]
    assert states == ["failed", "failed"]
