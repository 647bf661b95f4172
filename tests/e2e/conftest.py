"""Fixtures for runs of real Airflow processes against the simulator."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider_zuora_aqua.simulator import AquaSimulator
from airflow_provider_zuora_aqua.testing.airflow_env import AirflowHome, wait_for
from tests.conftest import CLIENT_ID, CLIENT_SECRET, connection_json

DAGS_FOLDER = Path(__file__).parent / "dags"
JOB_PATH = re.compile(r"^/v1/batch-query/jobs/([0-9a-f]+)$")


@pytest.fixture(scope="session")
def migrated_home(tmp_path_factory: pytest.TempPathFactory) -> AirflowHome:
    """One migrated Airflow database per test session; scenarios start from copies of it."""
    home = AirflowHome(tmp_path_factory.mktemp("airflow-template"), DAGS_FOLDER)
    home.migrate()
    return home


@pytest.fixture
def e2e_simulator() -> Iterator[AquaSimulator]:
    # Jobs run for an hour unless a test finishes them: every ending is the test's decision.
    with AquaSimulator(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, job_seconds=3600) as sim:
        yield sim


@pytest.fixture(scope="module")
def stack_simulator() -> Iterator[AquaSimulator]:
    """The simulator of one full-stack module: its jobs run for an hour unless a test ends them."""
    with AquaSimulator(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, job_seconds=3600) as sim:
        yield sim


@pytest.fixture
def sim(stack_simulator: AquaSimulator) -> AquaSimulator:
    """The module's simulator with an empty request log."""
    stack_simulator.clear_requests()
    return stack_simulator


@pytest.fixture
def airflow_home(migrated_home: AirflowHome, e2e_simulator: AquaSimulator, tmp_path: Path) -> AirflowHome:
    return migrated_home.copy_to(
        tmp_path / "airflow",
        AIRFLOW_CONN_ZUORA_AQUA_DEFAULT=connection_json(e2e_simulator.base_url, max_retries=2),
    )


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
