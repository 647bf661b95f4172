"""Fixtures shared by the test suites: a simulator on loopback and a connection pointing at it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_zuora_aqua.client import server_clock
from airflow_provider_zuora_aqua.client.auth import TOKEN_CACHE
from airflow_provider_zuora_aqua.hooks import aqua as hooks
from airflow_provider_zuora_aqua.simulator import AquaSimulator
from tests.support.credentials import CLIENT_ID, CLIENT_SECRET, CONN_ID, connection_json

#: The folders whose tests run real Airflow processes (or a browser): one pytest-xdist worker runs them
#: one after another, as their planned stops are timed and two Airflow stacks at once would starve
#: two cores; the other workers share the rest.
REAL_AIRFLOW_FOLDERS = ("tests/browser/", "tests/distributed/", "tests/docs/", "tests/e2e/")


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    # xdist's own --dist=loadgroup reads a mark through a node id that pytest 9.2 no longer lets it set.
    from xdist.scheduler import LoadScopeScheduling

    class RealAirflowOnOneWorker(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "real Airflow" if nodeid.startswith(REAL_AIRFLOW_FOLDERS) else nodeid

    return RealAirflowOnOneWorker(config, log)


@pytest.fixture(autouse=True)
def _fresh_process_caches() -> Iterator[None]:
    """Every test starts as a new process would: no token, no looked-up connection, no Zuora clock seen."""
    TOKEN_CACHE.clear()
    hooks._ASYNC_SETTINGS.clear()
    server_clock.forget()
    yield
    TOKEN_CACHE.clear()
    hooks._ASYNC_SETTINGS.clear()
    server_clock.forget()


@pytest.fixture
def simulator() -> Iterator[AquaSimulator]:
    with AquaSimulator(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, job_seconds=60) as sim:
        yield sim


@pytest.fixture
def aqua_conn(simulator: AquaSimulator, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point the default connection at the simulator; returns the connection id."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", connection_json(simulator.base_url))
    return CONN_ID


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """One moto S3 server for the session: Airflow keeps a filesystem per connection id, endpoint included."""
    from tests.support.s3 import moto_server

    with moto_server() as endpoint:
        yield endpoint
