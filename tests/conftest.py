"""Fixtures shared by the test suites: a simulator on loopback and a connection pointing at it."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from airflow_provider_zuora_aqua.client.auth import TOKEN_CACHE
from airflow_provider_zuora_aqua.hooks import aqua as hooks
from airflow_provider_zuora_aqua.simulator import AquaSimulator

CLIENT_ID = "e2e-client-id-7f3a"
CLIENT_SECRET = "e2e-client-secret-0c1d9b8a"
CONN_ID = "zuora_aqua_default"


def connection_json(base_url: str, **extra: object) -> str:
    """An ``AIRFLOW_CONN_*`` value for the simulator, with quick retries for tests."""
    extras = {"retry_backoff": 0.05, "max_retries": 3, "timeout": 10, **extra}
    return json.dumps(
        {
            "conn_type": "zuora_aqua",
            "host": base_url,
            "login": CLIENT_ID,
            "password": CLIENT_SECRET,
            "extra": extras,
        }
    )


@pytest.fixture(autouse=True)
def _fresh_process_caches() -> Iterator[None]:
    """Every test starts as a new process would: no token, no looked-up connection."""
    TOKEN_CACHE.clear()
    hooks._ASYNC_SETTINGS.clear()
    yield
    TOKEN_CACHE.clear()
    hooks._ASYNC_SETTINGS.clear()


@pytest.fixture
def simulator() -> Iterator[AquaSimulator]:
    with AquaSimulator(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, job_seconds=60) as sim:
        yield sim


@pytest.fixture
def aqua_conn(simulator: AquaSimulator, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point the default connection at the simulator; returns the connection id."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", connection_json(simulator.base_url))
    return CONN_ID
