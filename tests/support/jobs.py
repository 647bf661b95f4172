"""Helpers shared by the tests that drive jobs through the simulator."""

from __future__ import annotations

import asyncio

import pytest

from airflow_provider_zuora_aqua.exceptions import AquaConfigurationError
from airflow_provider_zuora_aqua.operators.aqua import AquaSubmitJobOperator
from airflow_provider_zuora_aqua.simulator import AquaSimulator
from airflow_provider_zuora_aqua.triggers.aqua import AquaJobTrigger
from tests.support.fakes import QUERIES

#: A one-query submit body.
BODY = {"format": "csv", "version": "1.0", "queries": [{"name": "a", "query": "select Id from Account"}]}
#: Job ids as a missing upstream XCom renders them.
MISSING = [None, "None", "", "  ", " None "]


def submit_keys(sim: AquaSimulator) -> list[str | None]:
    """The ``Idempotency-Key`` of every submit the simulator received."""
    return [request.headers.get("Idempotency-Key") for request in sim.requests_for("submit")]


def export(**kwargs: object) -> AquaSubmitJobOperator:
    """A submit operator that returns once the job is submitted."""
    return AquaSubmitJobOperator(task_id="export", queries=QUERIES, wait_for_completion=False, **kwargs)


async def collect(trigger: AquaJobTrigger, timeout: float = 20) -> list[dict]:
    """Every event payload of the trigger's run, bounded in time."""

    async def run() -> list[dict]:
        return [event.payload async for event in trigger.run()]

    return await asyncio.wait_for(run(), timeout)


def finish_later(sim, job_id: str, status: str, delay: float = 0.3, message: str = "") -> None:
    """End the simulator's job ``delay`` seconds from now, on the running event loop."""
    asyncio.get_running_loop().call_later(delay, sim.finish_job, job_id, status, message)


def assert_refused_before_any_request(run, simulator) -> None:
    """``run()`` refuses a missing job id with our error before the simulator sees any request."""
    with pytest.raises(AquaConfigurationError, match="upstream XCom is missing") as raised:
        run()
    assert "job_id" in str(raised.value)
    assert simulator.requests == []  # not even a token
