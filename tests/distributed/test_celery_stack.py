"""
The path teams take when they outgrow one machine: CeleryExecutor, Postgres, Redis, two Celery
workers and two triggerers. Each scenario stops a part of the stack as production loses it and
asserts what Zuora (the simulator) saw: which jobs were created, polled, cancelled.

Detection timeouts are lowered (``CELERY_STACK_ENV``): a worker's task instances fail 10 s after
their last heartbeat, a triggerer's triggers move 5 s after its last heartbeat.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider_zuora_aqua.client.request import make_track_id
from airflow_provider_zuora_aqua.simulator import AquaSimulator
from airflow_provider_zuora_aqua.testing.airflow_env import wait_for
from airflow_provider_zuora_aqua.testing.distributed import CELERY_STACK_ENV, CeleryStack
from tests.support.e2e import polled_job_ids, wait_for_delete, wait_for_polled_job

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(600)]

DAG_IDS = ("aqua_dist_wait", "aqua_dist_retry", "aqua_dist_deferred", "aqua_dist_cb_retry")
HEARTBEAT_TIMEOUT = int(CELERY_STACK_ENV["AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT"])
ENDED = {"success", "failed"}


@pytest.fixture(scope="module")
def dags_ready(celery_stack: CeleryStack) -> CeleryStack:
    for dag_id in DAG_IDS:
        celery_stack.wait_for_dag(dag_id)
    return celery_stack


@pytest.fixture
def stack(dags_ready: CeleryStack, sim: AquaSimulator) -> Iterator[CeleryStack]:
    """
    The module's stack with every worker and triggerer running (a scenario before may have killed
    one), and its simulator with an empty request log and no faults.
    """
    sim.clear_requests()
    sim.clear_faults()
    for name in dags_ready.triggerer_names:
        if name not in dags_ready.processes:
            dags_ready.start_triggerer_named(name)
    for name in dags_ready.worker_names:
        if name not in dags_ready.processes:
            dags_ready.start_worker(name)
    for name in dags_ready.worker_names:
        dags_ready.wait_for_worker(name)
    yield dags_ready


def polls_of(sim: AquaSimulator, dag_id: str, task_id: str, run_id: str, try_number: int, after: float = 0.0) -> list:
    """The job polls (GETs) one task try sent, named by its ``Zuora-Track-Id``."""
    track_id = make_track_id("airflow", dag_id, task_id, run_id, try_number)
    return [
        request
        for request in sim.requests_for("get_job")
        if request.headers.get("Zuora-Track-Id") == track_id and request.time > after
    ]


def job_of(sim: AquaSimulator, dag_id: str, task_id: str, run_id: str, try_number: int = 1) -> str:
    """Wait until the try polls its job; return the job id."""
    request = wait_for(
        lambda: polls_of(sim, dag_id, task_id, run_id, try_number),
        timeout=120,
        what=f"{dag_id}.{task_id} try {try_number} polling its job",
    )[0]
    return request.path.rstrip("/").rsplit("/", 1)[-1]


def deletes(sim: AquaSimulator, before: set[str]) -> list[str]:
    """The DELETEs of jobs created since ``before`` (a scenario's own: earlier runs may still end meanwhile)."""
    return [
        request.path
        for request in sim.requests_for("delete_job")
        if request.path.rstrip("/").rsplit("/", 1)[-1] not in before
    ]


def lose_the_worker_of(stack: CeleryStack, sim: AquaSimulator, dag_id: str, run_id: str) -> tuple[str, str, float]:
    """Trigger the run; once its ``export`` task polls its job, kill its worker: ``(job id, worker, kill time)``."""
    stack.trigger(dag_id, run_id)
    job_id = job_of(sim, dag_id, "export", run_id)
    lost = stack.worker_of(stack.wait_for_task_state(dag_id, run_id, "export", {"running"}))
    assert lost is not None
    return job_id, lost, stack.kill(lost)


DEFERRED, DEFERRED_TASKS = "aqua_dist_deferred", ("first", "second")


def deferred_run(stack: CeleryStack, sim: AquaSimulator, run_id: str) -> tuple[dict[str, str], str, str]:
    """Trigger the deferred DAG; once both tasks are deferred: (job per task, triggerer of ``first``, the other)."""
    stack.trigger(DEFERRED, run_id)
    jobs = {task_id: job_of(sim, DEFERRED, task_id, run_id) for task_id in DEFERRED_TASKS}
    for task_id in DEFERRED_TASKS:
        stack.wait_for_task_state(DEFERRED, run_id, task_id, {"deferred"})
    holder = stack.wait_for_triggerer_of(DEFERRED, run_id, "first")
    (other,) = set(stack.triggerer_names) - {holder}
    return jobs, holder, other


def say(capsys: pytest.CaptureFixture[str], line: str) -> None:
    """A figure worth reading in the CI log, whether the test passes or not."""
    with capsys.disabled():
        print(f"\n[distributed] {line}")


def test_a_lost_worker_with_a_retry_left_retries_on_the_other_worker_and_reattaches(
    stack: CeleryStack, sim: AquaSimulator, capsys: pytest.CaptureFixture[str]
):
    dag_id, run_id = "aqua_dist_retry", "worker-lost-retry"
    before = set(sim.job_ids())

    job_id, lost, killed_at = lose_the_worker_of(stack, sim, dag_id, run_id)

    # The scheduler fails the try after the heartbeat timeout; the retry runs on the other worker.
    retry_polls = wait_for(
        lambda: polls_of(sim, dag_id, "export", run_id, 2), timeout=180, what="the second try polling"
    )
    ti = stack.task_instance(dag_id, run_id, "export")
    assert ti["try_number"] == 2 and stack.worker_of(ti) not in (None, lost), ti
    say(capsys, f"worker killed -> retry polls the job after {retry_polls[0].time - killed_at:.1f} s")
    assert sim.get_job(job_id)["status"] == "executing"
    sim.finish_job(job_id, "completed")
    ti = stack.wait_for_task_state(dag_id, run_id, "export", ENDED)

    assert ti["state"] == "success" and ti["try_number"] == 2
    assert set(sim.job_ids()) - before == {job_id}  # one job: the retry re-attached
    assert polled_job_ids(sim, run_id=run_id) == [job_id]
    assert deletes(sim, before) == []


def test_a_lost_worker_without_retries_has_its_job_cancelled_by_the_failure_callback(
    stack: CeleryStack, sim: AquaSimulator, capsys: pytest.CaptureFixture[str]
):
    dag_id, run_id = "aqua_dist_wait", "worker-lost"
    before = set(sim.job_ids())

    job_id, _, killed_at = lose_the_worker_of(stack, sim, dag_id, run_id)

    # No on_kill can run: after the heartbeat timeout the DAG processor runs the failure callback.
    deleted_at = wait_for_delete(sim, job_id, timeout=240)
    say(
        capsys,
        f"worker killed -> DELETE at the simulator after {deleted_at - killed_at:.1f} s "
        f"([scheduler] task_instance_heartbeat_timeout = {HEARTBEAT_TIMEOUT} s)",
    )
    assert sim.get_job(job_id)["status"] == "cancelled"
    ti = stack.wait_for_task_state(dag_id, run_id, "export", ENDED)
    assert ti["state"] == "failed"
    assert set(sim.job_ids()) - before == {job_id}


def test_a_lost_triggerer_hands_its_triggers_over_and_a_task_marked_failed_on_the_survivor_is_cancelled(
    stack: CeleryStack, sim: AquaSimulator
):
    dag_id, run_id, tasks = DEFERRED, "triggerer-lost", DEFERRED_TASKS
    before = set(sim.job_ids())
    jobs, lost, survivor = deferred_run(stack, sim, run_id)

    killed_at = stack.kill(lost)

    for task_id in tasks:
        assert stack.wait_for_triggerer_of(dag_id, run_id, task_id, not_on=lost) == survivor
        wait_for(
            lambda task_id=task_id: polls_of(sim, dag_id, task_id, run_id, 1, after=killed_at + 1),
            timeout=120,
            what=f"the surviving triggerer polling the job of {task_id}",
        )
    assert deletes(sim, before) == []
    assert {sim.get_job(job_id)["status"] for job_id in jobs.values()} == {"executing"}
    for job_id in jobs.values():
        sim.finish_job(job_id, "completed")
    for task_id in tasks:
        assert stack.wait_for_task_state(dag_id, run_id, task_id, ENDED)["state"] == "success", task_id
    assert set(sim.job_ids()) - before == set(jobs.values())
    assert deletes(sim, before) == []

    # The survivor alone runs the triggers now: one of its deferred tasks is marked failed.
    run_id = "triggerer-survivor"
    stack.trigger(dag_id, run_id)
    jobs = {task_id: job_of(sim, dag_id, task_id, run_id) for task_id in tasks}
    stack.wait_for_task_state(dag_id, run_id, "first", {"deferred"})
    assert stack.wait_for_triggerer_of(dag_id, run_id, "first") == survivor

    stack.set_task_state(dag_id, run_id, "first", "failed")

    wait_for_delete(sim, jobs["first"], timeout=60)
    assert sim.get_job(jobs["first"])["status"] == "cancelled"
    sim.finish_job(jobs["second"], "completed")
    assert stack.wait_for_task_state(dag_id, run_id, "second", ENDED)["state"] == "success"
    assert deletes(sim, before) == [f"/v1/batch-query/jobs/{jobs['first']}"]
    assert sim.get_job(jobs["second"])["status"] == "completed"


def test_a_trigger_moved_between_live_triggerers_keeps_its_job(stack: CeleryStack, sim: AquaSimulator):
    """apache/airflow#41231: the triggerer that loses a trigger cleans it up; that must not cancel the job."""
    dag_id, run_id, tasks = DEFERRED, "trigger-moved", DEFERRED_TASKS
    before = set(sim.job_ids())
    jobs, holder, other = deferred_run(stack, sim, run_id)

    # A stalled triggerer (a long pause, a lost network) misses its heartbeats: the other adopts
    # its triggers. Awake again, it still runs them until it sees they are no longer its own.
    stack.freeze(holder)
    try:
        assert stack.wait_for_triggerer_of(dag_id, run_id, "first", not_on=holder) == other
    finally:
        stack.thaw(holder)
    thawed_at = time.time()
    # The holder drops its copy at its next heartbeats: wait until it had time to (a DELETE, or 10 s of polls).
    wait_for(
        lambda: deletes(sim, before) or polls_of(sim, dag_id, "first", run_id, 1, after=thawed_at + 10),
        timeout=120,
        what="a DELETE, or the job still polled 10 s after the holder woke up",
    )

    assert deletes(sim, before) == []
    assert sim.get_job(jobs["first"])["status"] == "executing"
    for job_id in jobs.values():
        sim.finish_job(job_id, "completed")
    for task_id in tasks:
        assert stack.wait_for_task_state(dag_id, run_id, task_id, ENDED)["state"] == "success", task_id
    assert set(sim.job_ids()) - before == set(jobs.values())
    assert deletes(sim, before) == []


def test_a_failure_callback_run_while_a_retry_is_to_come_leaves_the_job_and_the_last_try_leaves_none(
    stack: CeleryStack, sim: AquaSimulator, marks: Path
):
    """
    apache/airflow#65400. What the provider promises:

    * while a retry is still to come (the failed try's ``try_number`` <= ``max_tries``), a failure
      callback leaves the try's job running: the next try re-attaches to it;
    * once the last try has ended, no job of any try of the task instance is still running.
    """
    dag_id, run_id = "aqua_dist_cb_retry", "cb-retry"
    before = set(sim.job_ids())

    job_id, lost, _ = lose_the_worker_of(stack, sim, dag_id, run_id)

    # The failure callback runs (as the retry callback) before the retry starts...
    wait_for(lambda: (marks / f"{run_id}.1").exists(), timeout=180, what="the callback of try 1")
    assert stack.task_instance(dag_id, run_id, "export")["try_number"] == 1
    wait_for(lambda: polls_of(sim, dag_id, "export", run_id, 2), timeout=180, what="the second try polling")
    # ...and leaves the job the retry re-attaches to.
    assert (deletes(sim, before), polled_job_ids(sim, run_id=run_id)) == ([], [job_id])
    assert sim.get_job(job_id)["status"] == "executing"

    # The last try's worker is lost too: its job must not outlive it.
    stack.start_worker(lost)
    stack.wait_for_worker(lost)
    last = stack.worker_of(stack.wait_for_task_state(dag_id, run_id, "export", {"running"}))
    assert last is not None
    stack.kill(last)

    wait_for_delete(sim, job_id, timeout=240)
    assert sim.get_job(job_id)["status"] == "cancelled"
    ti = stack.wait_for_task_state(dag_id, run_id, "export", ENDED)
    assert ti["state"] == "failed" and ti["try_number"] == 2
    assert set(sim.job_ids()) - before == {job_id}


def test_a_redelivered_broker_message_runs_no_second_try_and_leaves_one_job(stack: CeleryStack, sim: AquaSimulator):
    """apache/airflow#58441: Redis redelivers a message held past its visibility timeout to a worker."""
    dag_id, run_id = "aqua_dist_wait", "redelivery"
    before = set(sim.job_ids())
    stack.trigger(dag_id, run_id)
    job_id = wait_for_polled_job(sim, run_id=run_id)
    ti = stack.wait_for_task_state(dag_id, run_id, "export", {"running"})
    received = stack_logs_count(stack, "received")

    assert stack.redeliver_unacked(ti["id"]) == 1

    # A worker takes the message again and hands it to Airflow, which must refuse a second run.
    wait_for(lambda: stack.queued_messages() == 0, timeout=60, what="a worker taking the redelivered message")
    wait_for(lambda: stack_logs_count(stack, "received") > received, timeout=60, what="the redelivery received")
    polls = len(sim.requests_for("get_job"))
    wait_for(lambda: len(sim.requests_for("get_job")) > polls + 3, timeout=60, what="the try still polling")
    ti = stack.task_instance(dag_id, run_id, "export")
    assert ti["state"] == "running" and ti["try_number"] == 1, ti

    sim.finish_job(job_id, "completed")
    ti = stack.wait_for_task_state(dag_id, run_id, "export", ENDED)

    assert ti["state"] == "success" and ti["try_number"] == 1
    assert set(sim.job_ids()) - before == {job_id}
    track_ids = {request.headers.get("Zuora-Track-Id", "") for request in sim.requests_for("submit")}
    assert {track_id for track_id in track_ids if f".{run_id}." in track_id} == {
        make_track_id("airflow", dag_id, "export", run_id, 1)
    }
    assert deletes(sim, before) == []


def stack_logs_count(stack: CeleryStack, word: str) -> int:
    """How many Celery ``Task ...[id] <word>`` lines the workers' logs hold (every start of each)."""
    total = 0
    for path in stack.home.root.glob("worker-*.out"):
        total += sum(1 for line in path.read_text(errors="replace").splitlines() if f"] {word}" in line)
    return total
