"""The fault soak of ``benchmarks/soak.py`` on the distributed stack (CeleryExecutor), CI-sized."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from airflow_provider_zuora_aqua.testing.distributed import PostgresServer
from benchmarks.dags.aqua_soak_dags import SOAK_TASKS
from benchmarks.soak import (
    CELERY_STOP_KINDS,
    STOP_KINDS,
    TRIGGERER_LOST,
    WORKER_LOST,
    plan_stops,
    run_soak,
    shortfalls,
)

#: 16 jobs (2 runs of 8 tasks) whose plan has every stop kind, a lost worker with and without a retry.
CI_JOBS, CI_SEED, CI_STOP_RATE = 16, 165, 0.4
RETRIES = {task.task_id: task.retries for task in SOAK_TASKS}
RUN_IDS = ["soak-000", "soak-001"]


@pytest.mark.distributed
@pytest.mark.timeout(1200)
def test_ci_sized_distributed_soak_leaves_no_duplicate_no_orphan_and_no_lost_result(
    postgres: PostgresServer, template_database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    plan = plan_stops(RUN_IDS, SOAK_TASKS, CI_STOP_RATE, random.Random(CI_SEED), distributed=True)
    assert set(plan.values()) == set(CELERY_STOP_KINDS)
    assert {RETRIES[task_id] > 0 for (_, task_id), kind in plan.items() if kind == WORKER_LOST} == {True, False}

    report = run_soak(
        jobs=CI_JOBS,
        seed=CI_SEED,
        stop_rate=CI_STOP_RATE,
        fault_rate=0.2,
        max_minutes=15,
        work_dir=tmp_path,
        failure_logs=tmp_path / "failure-logs",
        executor="celery",
        postgres=postgres,
        template_database=template_database,
    )

    with capsys.disabled():
        print(f"\n{report.table()}")
    assert report.executor == "CeleryExecutor"
    assert report.runs_ended == report.runs_triggered == 2
    assert {WORKER_LOST, TRIGGERER_LOST} <= set(report.stops_applied)
    assert shortfalls(report, plan, RETRIES) == []


def test_the_distributed_plan_adds_lost_workers_and_triggerers_and_leaves_the_local_plan_alone():
    local = plan_stops([f"r{i}" for i in range(50)], SOAK_TASKS, 1.0, random.Random(0))
    distributed = plan_stops([f"r{i}" for i in range(50)], SOAK_TASKS, 1.0, random.Random(0), distributed=True)
    deferrable = {task.task_id: task.deferrable for task in SOAK_TASKS}

    assert set(local.values()) == set(STOP_KINDS)
    assert set(distributed.values()) == set(CELERY_STOP_KINDS)
    for (_, task_id), kind in distributed.items():
        assert kind != (WORKER_LOST if deferrable[task_id] else TRIGGERER_LOST)
