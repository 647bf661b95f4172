"""What the real-Airflow tests read off the simulator: polled jobs, DELETEs, leaked secrets."""

from __future__ import annotations

import re

from airflow_provider_zuora_aqua.simulator import AquaSimulator
from airflow_provider_zuora_aqua.testing.airflow_env import wait_for
from tests.support.credentials import CLIENT_SECRET

JOB_PATH = re.compile(r"^/v1/batch-query/jobs/([0-9a-f]+)$")


def polled_job_ids(sim: AquaSimulator, run_id: str = "") -> list[str]:
    """
    Job ids in the order tasks started polling them (from the GET paths the simulator saw).

    :param run_id: only count polls whose Zuora-Track-Id names this dag run.
    """
    seen: list[str] = []
    for request in sim.requests_for("get_job"):
        if run_id and f".{run_id}." not in request.headers.get("Zuora-Track-Id", ""):
            continue
        match = JOB_PATH.match(request.path)
        if match and match.group(1) not in seen:
            seen.append(match.group(1))
    return seen


def wait_for_polled_job(sim: AquaSimulator, index: int = 0, timeout: float = 120, run_id: str = "") -> str:
    """Wait until a task polls its job (so it is inside its wait loop) and return the job id."""
    return wait_for(
        lambda: len(ids := polled_job_ids(sim, run_id)) > index and ids[index],
        timeout=timeout,
        what="a task polling its AQuA job",
    )


def wait_for_delete(sim: AquaSimulator, job_id: str, timeout: float = 60) -> float:
    """Wait for the DELETE of ``job_id``; return its arrival time."""
    requests = wait_for(
        lambda: [r for r in sim.requests_for("delete_job") if r.path.endswith(job_id)],
        timeout=timeout,
        what=f"DELETE of job {job_id}",
    )
    return requests[0].time


def assert_no_secret(text: str, sim: AquaSimulator) -> None:
    assert CLIENT_SECRET not in text
    for token in sim.issued_tokens:
        assert token not in text
