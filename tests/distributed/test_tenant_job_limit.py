"""
The tenant's job limit on the distributed stack: 60 mapped, deferrable exports against a tenant
that runs 50 AQuA jobs at a time. The simulator refuses a submit past the limit as Zuora does
(HTTP 200, error 90028); a refused submit creates no job, so the limit itself is the simulator's.
What is the provider's: the refused tasks wait for a slot instead of failing, each on its first
try, each ends with exactly one job, and every task completes once jobs end at Zuora.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_zuora_aqua.simulator import AquaSimulator
from airflow_provider_zuora_aqua.testing.airflow_env import wait_for
from airflow_provider_zuora_aqua.testing.distributed import CeleryStack
from tests.support.credentials import CLIENT_ID, CLIENT_SECRET
from tests.support.jobs import submit_keys

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(900)]

DAG_ID, RUN_ID = "aqua_dist_limit", "tenant-limit"
LIMIT, TASKS = 50, 60
REFUSALS = 8  # more than the 4 worker slots: some task is refused twice
RUNNING = {"submitted", "executing"}


@pytest.fixture(scope="module")
def sim() -> Iterator[AquaSimulator]:
    """A tenant that runs 50 stateless jobs at a time; jobs run until the test ends them."""
    with AquaSimulator(
        client_id=CLIENT_ID, client_secret=CLIENT_SECRET, job_seconds=3600, concurrent_job_limit=LIMIT
    ) as simulator:
        yield simulator


def running_jobs(sim: AquaSimulator) -> list[str]:
    return [job["id"] for job in sim.jobs() if job["status"] in RUNNING]


def refused_submits(sim: AquaSimulator) -> int:
    """Submits answered without a job: each attempt has a key of its own, each job one accepted key."""
    return len(set(submit_keys(sim))) - len(sim.job_ids())


def mapped_instances(stack: CeleryStack) -> list[dict[str, Any]]:
    status, body = stack.api("GET", f"/dags/{DAG_ID}/dagRuns/{RUN_ID}/taskInstances/export/listMapped?limit=100")
    return body.get("task_instances", []) if status == 200 else []


def test_sixty_mapped_exports_against_a_limit_of_fifty_wait_for_slots_and_all_complete_on_their_first_try(
    celery_stack: CeleryStack, sim: AquaSimulator, capsys: pytest.CaptureFixture[str]
):
    celery_stack.wait_for_dag(DAG_ID)
    celery_stack.trigger(DAG_ID, RUN_ID)
    started = time.time()

    # The tenant fills up and stays full: 50 jobs run, and the tasks past the limit are refused,
    # again and again (each waits 5 s, then 10 s, ... between attempts), without failing.
    wait_for(lambda: len(running_jobs(sim)) == LIMIT, timeout=420, interval=1, what=f"{LIMIT} running jobs")
    full_after = time.time() - started
    wait_for(lambda: refused_submits(sim) >= REFUSALS, timeout=180, interval=1, what=f"{REFUSALS} refused submits")
    refused_while_full = refused_submits(sim)
    assert len(sim.job_ids()) == LIMIT
    assert {ti["state"] for ti in mapped_instances(celery_stack)} <= {"queued", "running", "deferred", "scheduled"}

    # Zuora ends jobs as they come; the waiting tasks take the freed slots.
    def every_task_ended() -> bool:
        for job_id in running_jobs(sim):
            sim.finish_job(job_id, "completed")
        instances = mapped_instances(celery_stack)
        return len(instances) == TASKS and all(ti["state"] in {"success", "failed"} for ti in instances)

    wait_for(every_task_ended, timeout=600, interval=2, what=f"all {TASKS} mapped exports ending")
    with capsys.disabled():
        print(
            f"\n[distributed] {TASKS} exports, tenant limit {LIMIT}: full after {full_after:.0f} s, "
            f"{refused_submits(sim)} submits refused and waited out ({refused_while_full} before the first "
            f"job ended), all ended after {time.time() - started:.0f} s"
        )

    instances = mapped_instances(celery_stack)
    assert sorted(ti["map_index"] for ti in instances) == list(range(TASKS))
    assert {(ti["state"], ti["try_number"]) for ti in instances} == {("success", 1)}  # never failed, never a new try
    jobs = sim.jobs()
    assert sorted(job["name"] for job in jobs) == sorted(f"dist-limit-{index}" for index in range(TASKS))
    assert {job["status"] for job in jobs} == {"completed"}  # one job per task, each completed
    assert sim.requests_for("delete_job") == []
