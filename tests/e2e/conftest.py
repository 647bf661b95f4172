"""Fixtures for runs of real Airflow processes against the simulator."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider_zuora_aqua.simulator import AquaSimulator
from airflow_provider_zuora_aqua.testing.airflow_env import AirflowHome
from tests.support.credentials import CLIENT_ID, CLIENT_SECRET, connection_json
from tests.support.e2e import assert_no_secret  # noqa: F401  (tests/e2e/test_readme.py imports it from here)

DAGS_FOLDER = Path(__file__).parent / "dags"


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
