"""A job id templated from a missing XCom renders as ``'None'`` (or ``None``, or empty): it is refused
before any request, with a message that points at the upstream XCom."""

from __future__ import annotations

import pytest

from airflow_provider_zuora_aqua.exceptions import AquaConfigurationError, AquaJobNotFoundError
from airflow_provider_zuora_aqua.operators.aqua import AquaCancelJobOperator
from airflow_provider_zuora_aqua.sensors.aqua import AquaJobSensor
from tests.fakes import FakeTaskInstance, context

MISSING = [None, "None", "", "  ", " None "]


def _assert_refused_before_any_request(run, simulator) -> None:
    with pytest.raises(AquaConfigurationError, match="upstream XCom is missing") as raised:
        run()
    assert "job_id" in str(raised.value)
    assert simulator.requests == []  # not even a token


@pytest.mark.parametrize("job_id", MISSING)
def test_cancel_operator_refuses_a_missing_job_id(simulator, aqua_conn, job_id):
    operator = AquaCancelJobOperator(task_id="cancel", job_id=job_id)
    _assert_refused_before_any_request(lambda: operator.execute(context()), simulator)


@pytest.mark.parametrize("deferrable", [False, True], ids=["poke", "deferrable"])
@pytest.mark.parametrize("job_id", MISSING)
def test_sensor_refuses_a_missing_job_id(simulator, aqua_conn, job_id, deferrable):
    sensor = AquaJobSensor(task_id="wait", job_id=job_id, deferrable=deferrable, poke_interval=1, timeout=5)
    # Poke mode calls poke() from Airflow's sensor loop; deferrable mode checks once in execute() first.
    run = sensor.execute if deferrable else sensor.poke
    _assert_refused_before_any_request(lambda: run(context(FakeTaskInstance("wait"))), simulator)


def test_a_real_job_id_still_goes_through(simulator, aqua_conn):
    # The check is about the rendered placeholder only: a plain id is sent as before.
    with pytest.raises(AquaJobNotFoundError):
        AquaCancelJobOperator(task_id="cancel", job_id="0" * 32).execute(context())
    assert len(simulator.requests_for("delete_job")) == 1
