"""Simulators for the simulator's own tests: a factory, and a default one with a client."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_zuora_aqua.simulator import AquaSimulator
from tests.support.sim_client import CLIENT_ID, CLIENT_SECRET, Client, SimFactory


@pytest.fixture
def make_sim() -> Iterator[SimFactory]:
    """Start simulators with the test credentials (1 s jobs unless told); stop them after."""
    started: list[AquaSimulator] = []

    def factory(**settings: Any) -> AquaSimulator:
        settings = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "job_seconds": 1.0, **settings}
        sim = AquaSimulator(**settings).start()
        started.append(sim)
        return sim

    yield factory
    for sim in started:
        sim.stop()


@pytest.fixture
def sim(make_sim: SimFactory) -> AquaSimulator:
    """A simulator whose jobs take 1 s."""
    return make_sim()


@pytest.fixture
def client(sim: AquaSimulator) -> Client:
    """A client holding a token from ``sim``."""
    return Client(sim.base_url)
