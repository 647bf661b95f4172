"""AquaJobSensor against the simulator."""

from __future__ import annotations

import pytest
from airflow.providers.common.compat.sdk import AirflowSensorTimeout, TaskDeferred

from airflow_provider_zuora_aqua.exceptions import (
    AquaJobFailedError,
)
from airflow_provider_zuora_aqua.hooks.aqua import ZuoraAquaHook
from airflow_provider_zuora_aqua.sensors.aqua import AquaJobSensor
from tests.support.fakes import FakeTaskInstance, context, submit
from tests.support.jobs import MISSING, assert_refused_before_any_request, collect, finish_later


class TestSensor:
    def test_poke_mode_succeeds_with_the_job(self, simulator, aqua_conn):
        job_id = submit(ZuoraAquaHook(aqua_conn))
        sensor = AquaJobSensor(task_id="wait", job_id=job_id, poke_interval=0.1, timeout=10)
        assert sensor.poke(context(FakeTaskInstance("wait"))).is_done is False
        simulator.finish_job(job_id, "completed")
        result = sensor.poke(context(FakeTaskInstance("wait")))
        assert result.is_done and result.xcom_value == simulator.get_job(job_id)

    @pytest.mark.parametrize("status", ["error", "aborted", "cancelled"])
    def test_poke_mode_fails_on_failed_job(self, simulator, aqua_conn, status):
        job_id = submit(ZuoraAquaHook(aqua_conn))
        simulator.finish_job(job_id, status, "went wrong")
        with pytest.raises(AquaJobFailedError, match="went wrong"):
            AquaJobSensor(task_id="wait", job_id=job_id).poke(context(FakeTaskInstance("wait")))

    async def test_deferrable_mode(self, simulator, aqua_conn):
        job_id = submit(ZuoraAquaHook(aqua_conn))
        sensor = AquaJobSensor(task_id="wait", job_id=job_id, deferrable=True, poke_interval=0.1, timeout=30)
        with pytest.raises(TaskDeferred) as deferred:
            sensor.execute(context(FakeTaskInstance("wait")))
        trigger = deferred.value.trigger
        assert trigger.cancel_on_kill is False  # the sensor does not own the job
        finish_later(simulator, job_id, "completed")
        [event] = await collect(trigger)
        assert sensor.execute_complete(context(), event) == simulator.get_job(job_id)

    def test_deferrable_mode_done_at_first_check_does_not_defer(self, simulator, aqua_conn):
        job_id = submit(ZuoraAquaHook(aqua_conn))
        simulator.finish_job(job_id, "completed")
        sensor = AquaJobSensor(task_id="wait", job_id=job_id, deferrable=True)
        assert sensor.execute(context(FakeTaskInstance("wait")))["status"] == "completed"

    def test_deferred_timeout_and_failure(self, simulator, aqua_conn):
        sensor = AquaJobSensor(task_id="wait", job_id="a" * 32, deferrable=True, timeout=3)
        with pytest.raises(AirflowSensorTimeout):
            sensor.execute_complete(
                context(), {"status": "timeout", "job_id": "a" * 32, "job": None, "message": "", "request_id": None}
            )
        job_id = submit(ZuoraAquaHook(aqua_conn))
        simulator.finish_job(job_id, "aborted", "stopped")
        with pytest.raises(AquaJobFailedError, match="aborted"):
            sensor.execute_complete(
                context(),
                {
                    "status": "aborted",
                    "job_id": job_id,
                    "job": simulator.get_job(job_id),
                    "message": "",
                    "request_id": None,
                },
            )


@pytest.mark.parametrize("deferrable", [False, True], ids=["poke", "deferrable"])
@pytest.mark.parametrize("job_id", MISSING)
def test_sensor_refuses_a_missing_job_id(simulator, aqua_conn, job_id, deferrable):
    sensor = AquaJobSensor(task_id="wait", job_id=job_id, deferrable=deferrable, poke_interval=1, timeout=5)
    # Poke mode calls poke() from Airflow's sensor loop; deferrable mode checks once in execute() first.
    run = sensor.execute if deferrable else sensor.poke
    assert_refused_before_any_request(lambda: run(context(FakeTaskInstance("wait"))), simulator)
