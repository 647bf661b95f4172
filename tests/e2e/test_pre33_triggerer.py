"""
Before Airflow 3.3, on a real triggerer of that version: a user's stop cancels, a restart does not.

Airflow < 3.3 has no ``BaseTrigger.on_kill``: a triggerer cancels a trigger's asyncio task when a
user stops the deferred task, and also when another triggerer took the trigger over (a stopped
triggerer kills its trigger runner outright). ``AquaJobTrigger`` then asks Airflow for the task's
state and cancels the AQuA job only when the task is no longer deferred. On 3.3+ a user's stop
goes through ``on_kill``, covered by ``test_full_stack``.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider_zuora_aqua.simulator import AquaSimulator
from airflow_provider_zuora_aqua.testing.airflow_env import AirflowHome, AirflowStack, stop_process_group, wait_for
from airflow_provider_zuora_aqua.triggers.aqua import TRIGGER_HAS_ON_KILL
from tests.support.credentials import connection_json
from tests.support.e2e import assert_no_secret, wait_for_delete, wait_for_polled_job

pytestmark = [
    pytest.mark.airflow_e2e,
    pytest.mark.skipif(TRIGGER_HAS_ON_KILL, reason="Airflow 3.3+ stops triggers with on_kill: see test_full_stack"),
]

DAG_ID = "aqua_e2e_deferred"


@pytest.fixture(scope="module")
def stack(migrated_home: AirflowHome, stack_simulator: AquaSimulator, tmp_path_factory) -> Iterator[AirflowStack]:
    home = migrated_home.copy_to(
        Path(tmp_path_factory.mktemp("pre33-stack")),
        AIRFLOW_CONN_ZUORA_AQUA_DEFAULT=connection_json(stack_simulator.base_url, max_retries=2),
        # A frozen triggerer loses its triggers to a live one within seconds (default: 30 s).
        AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC="1",
        AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD="8",
    )
    with AirflowStack(home, triggerer=True) as running:
        running.wait_for_dag(DAG_ID)
        yield running
    assert_no_secret(home.all_logs(), stack_simulator)


def test_marking_a_deferred_task_failed_cancels_its_job_from_the_trigger(stack: AirflowStack, sim: AquaSimulator):
    run_id = "pre33-mark-failed"
    stack.trigger(DAG_ID, run_id)
    job_id = wait_for_polled_job(sim, run_id=run_id)
    stack.wait_for_task_state(DAG_ID, run_id, "export", {"deferred"})

    stack.set_task_state(DAG_ID, run_id, "export", "failed")

    wait_for_delete(sim, job_id, timeout=60)
    assert sim.get_job(job_id)["status"] == "cancelled"
    # The trigger cancelled it (not a failure callback): the DELETE was made from the trigger, whose
    # log file has the hook's line. (The trigger's own closing line may be lost: the triggerer tears
    # the cancelled trigger's log down as the DELETE returns.)
    wait_for(
        lambda: any(
            f"Cancelling AQuA job {job_id}" in log.read_text(errors="replace")
            for log in stack.home.root.rglob(f"run_id={run_id}/**/*.log.trigger.*.log")
        ),
        timeout=30,
        what="the trigger's cancel in the trigger's log",
    )


def test_triggerer_restart_keeps_the_job_and_the_task_succeeds(stack: AirflowStack, sim: AquaSimulator):
    run_id = "pre33-restart"
    stack.trigger(DAG_ID, run_id)
    job_id = wait_for_polled_job(sim, run_id=run_id)
    stack.wait_for_task_state(DAG_ID, run_id, "export", {"deferred"})

    stack.restart_triggerer()
    wait_for_new_polls(sim)
    assert sim.get_job(job_id)["status"] == "executing"
    assert sim.requests_for("delete_job") == []

    finish_and_expect_success(stack, sim, run_id, job_id)


def test_a_trigger_taken_over_by_another_triggerer_keeps_the_job(stack: AirflowStack, sim: AquaSimulator):
    """
    The old triggerer, frozen past the health threshold, finds its trigger assigned elsewhere and
    cancels it while the task is still deferred: the trigger asks for the task's state and keeps the job.
    """
    run_id = "pre33-takeover"
    stack.trigger(DAG_ID, run_id)
    job_id = wait_for_polled_job(sim, run_id=run_id)
    stack.wait_for_task_state(DAG_ID, run_id, "export", {"deferred"})

    old = stack.processes.pop("triggerer")
    os.killpg(old.pid, signal.SIGSTOP)
    try:
        stack.processes["triggerer"] = stack.home.spawn("triggerer", "--skip-serve-logs", log_name="triggerer-2.out")
        wait_for_new_polls(sim)  # the frozen triggerer cannot poll: the new one took the trigger over
        os.killpg(old.pid, signal.SIGCONT)
        kept = f"Trigger stopped, its task still deferred: AQuA job {job_id} keeps running"
        wait_for(
            lambda: kept in stack.home.all_logs(),
            timeout=60,
            what="the old triggerer's trigger to stop without cancelling",
        )
    finally:
        stop_process_group(old)
    assert sim.get_job(job_id)["status"] == "executing"
    assert sim.requests_for("delete_job") == []

    finish_and_expect_success(stack, sim, run_id, job_id)


def wait_for_new_polls(sim: AquaSimulator) -> None:
    polls_before = len(sim.requests_for("get_job"))
    wait_for(lambda: len(sim.requests_for("get_job")) > polls_before, timeout=120, what="the new triggerer polling")


def finish_and_expect_success(stack: AirflowStack, sim: AquaSimulator, run_id: str, job_id: str) -> None:
    sim.finish_job(job_id, "completed")
    ti = stack.wait_for_task_state(DAG_ID, run_id, "export", {"success", "failed"})
    assert ti["state"] == "success"
    assert sim.requests_for("delete_job") == []
    assert len(sim.requests_for("submit")) == 1
