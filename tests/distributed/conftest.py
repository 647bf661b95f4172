"""
Fixtures of the distributed stack: one Postgres server and one migrated template database per
session, a Redis broker and a Celery stack per test module.

PostgreSQL and redis-server come from Debian (``bash .ci/services``), the Celery provider and the
Postgres drivers from the ``distributed`` extra. When one is missing the tests fail in CI
(``CI=true``) and are skipped elsewhere.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider_zuora_aqua.simulator import AquaSimulator
from airflow_provider_zuora_aqua.testing.distributed import (
    CeleryStack,
    PostgresServer,
    RedisServer,
    migrated_template,
    missing_services,
    postgres_home,
)
from tests.support.credentials import CLIENT_ID, CLIENT_SECRET, connection_json
from tests.support.e2e import assert_no_secret

DAGS_FOLDER = Path(__file__).parent / "dags"
_PYTHON_MODULES = {
    "airflow.providers.celery": "apache-airflow-providers-celery",
    "psycopg2": "psycopg2-binary",
    "asyncpg": "asyncpg",
}


def require_distributed_stack() -> None:
    """Skip (fail in CI) when this machine cannot run the distributed stack, and say why."""
    missing = missing_services()
    if missing:
        missing.append("(run `bash .ci/services`)")
    modules = [package for module, package in _PYTHON_MODULES.items() if not _importable(module)]
    if modules:
        missing += [*modules, '(install the extra: pip install -e ".[distributed]")']
    if missing and os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"the distributed stack needs {' '.join(missing)}", pytrace=False)
    if missing:
        pytest.skip(f"the distributed stack needs {' '.join(missing)}")


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    require_distributed_stack()
    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="session")
def template_database(postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    """One migrated Airflow database per session; each stack starts from a copy of it."""
    return migrated_template(postgres, tmp_path_factory.mktemp("airflow-template"), DAGS_FOLDER)


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    require_distributed_stack()
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="module")
def sim() -> Iterator[AquaSimulator]:
    """The simulator of one stack: its jobs run for an hour unless a test ends them."""
    with AquaSimulator(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, job_seconds=3600) as simulator:
        yield simulator


@pytest.fixture(scope="module")
def marks(celery_stack: CeleryStack) -> Path:
    """The folder where the DAGs' ``mark_callback_ran`` leaves its marks."""
    return Path(celery_stack.home.env["AQUA_DIST_MARKS"])


@pytest.fixture(scope="module")
def celery_stack(
    request: pytest.FixtureRequest,
    postgres: PostgresServer,
    template_database: str,
    redis: RedisServer,
    sim: AquaSimulator,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[CeleryStack]:
    """The module's stack, on a copy of the template database; its logs hold no secret at the end."""
    name = request.module.__name__.rpartition(".")[2]
    marks = tmp_path_factory.mktemp("callback-marks")
    database = postgres.create_database(name, template=template_database)
    home = postgres_home(
        postgres,
        database,
        tmp_path_factory.mktemp("celery-stack"),
        DAGS_FOLDER,
        AIRFLOW_CONN_ZUORA_AQUA_DEFAULT=connection_json(sim.base_url, max_retries=2),
        AQUA_DIST_MARKS=str(marks),
    )
    with CeleryStack(home, redis) as stack:
        yield stack
    assert_no_secret(home.all_logs(), sim)
