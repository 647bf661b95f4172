"""AquaJobSensor against a scripted hook: each poke, its arguments, and its deferral."""

from __future__ import annotations

import math
import time

import pytest
from airflow.providers.common.compat.sdk import TaskDeferred

from airflow_provider_zuora_aqua.compat import AirflowSensorTimeout
from airflow_provider_zuora_aqua.exceptions import (
    AquaAuthenticationError,
    AquaConfigurationError,
    AquaJobFailedError,
)
from airflow_provider_zuora_aqua.jobs.event import AquaJobEvent
from airflow_provider_zuora_aqua.sensors import aqua as sensors
from airflow_provider_zuora_aqua.sensors.aqua import AquaJobSensor
from airflow_provider_zuora_aqua.triggers.aqua import AquaJobTrigger
from tests.support.fakes import FakeTaskInstance, context
from tests.support.stubs import ScriptedZuora, hook_class, job


@pytest.fixture
def zuora(monkeypatch) -> ScriptedZuora:
    zuora = ScriptedZuora()
    monkeypatch.setattr(sensors, "ZuoraAquaHook", hook_class(zuora))
    return zuora


def sensor(**kwargs) -> AquaJobSensor:
    return AquaJobSensor(**{"task_id": "wait", "job_id": "job-1", "poke_interval": 30, **kwargs})


class TestPoke:
    @pytest.mark.parametrize("status", ["submitted", "pending", "executing"])
    def test_a_running_job_is_not_done(self, zuora, status):
        zuora.reads["job-1"] = [job("job-1", status)]
        assert sensor().poke(context(FakeTaskInstance("wait"))).is_done is False
        assert [(call.method, call.job_id) for call in zuora.calls] == [("get", "job-1")]

    def test_a_completed_job_is_done_with_its_json(self, zuora):
        zuora.reads["job-1"] = [job("job-1", "completed")]
        poked = sensor(zuora_conn_id="zuora_prod").poke(context())
        assert poked.is_done is True and poked.xcom_value["id"] == "job-1"
        assert zuora.calls[0].conn_id == "zuora_prod"

    @pytest.mark.parametrize("status", ["error", "aborted", "cancelled"])
    def test_a_failed_job_fails_the_sensor(self, zuora, status):
        zuora.reads["job-1"] = [job("job-1", status, batches=[{"name": "a", "status": status, "message": "why"}])]
        with pytest.raises(AquaJobFailedError, match="why"):
            sensor().poke(context())

    def test_a_completed_job_with_a_failed_batch_fails_the_sensor(self, zuora):
        zuora.reads["job-1"] = [job("job-1", "completed", batches=[{"name": "a", "status": "error"}])]
        with pytest.raises(AquaJobFailedError, match="failed batches"):
            sensor().poke(context())

    def test_it_never_cancels_the_job(self, zuora):
        zuora.reads["job-1"] = [job("job-1", "executing")]
        watcher = sensor()
        watcher.poke(context())
        watcher.on_kill()
        assert zuora.calls_of("cancel") == []


class TestPokeInterval:
    def test_zero_is_refused_with_its_name(self):
        with pytest.raises(AquaConfigurationError, match="poke_interval"):
            sensor(poke_interval=0)

    @pytest.mark.parametrize("value", [-1, math.nan])
    def test_negative_or_nan_is_refused_with_its_name(self, value):
        with pytest.raises(ValueError, match="poke_interval"):
            sensor(poke_interval=value)

    def test_a_bool_is_refused_like_the_operators_poll_interval(self):
        with pytest.raises(AquaConfigurationError, match="poke_interval"):
            sensor(poke_interval=True)

    def test_a_positive_interval_is_kept(self):
        assert sensor(poke_interval=0.5).poke_interval == 0.5


class TestDeferrable:
    def test_a_job_done_at_the_first_check_does_not_defer(self, zuora):
        zuora.reads["job-1"] = [job("job-1", "completed")]
        assert sensor(deferrable=True).execute(context())["id"] == "job-1"

    def test_a_running_job_defers_to_a_trigger_that_never_cancels(self, zuora):
        with pytest.raises(TaskDeferred) as deferred:
            sensor(deferrable=True, timeout=600, poke_interval=45, zuora_conn_id="zuora_prod").execute(context())
        trigger = deferred.value.trigger
        assert isinstance(trigger, AquaJobTrigger) and trigger.cancel_on_kill is False
        assert (trigger.job_id, trigger.zuora_conn_id, trigger.poll_interval) == ("job-1", "zuora_prod", 45.0)
        assert trigger.end_time == pytest.approx(time.time() + 600, abs=5)

    def test_timeout_event(self):
        payload = AquaJobEvent(status="timeout", job_id="job-1", job=None, message="late").to_payload()
        with pytest.raises(AirflowSensorTimeout):
            sensor(timeout=60).execute_complete(context(), payload)

    def test_poll_failed_event_raises_its_error_class(self):
        payload = AquaJobEvent(
            status="poll_failed", job_id="job-1", job=None, message="no", error="AquaAuthenticationError"
        ).to_payload()
        with pytest.raises(AquaAuthenticationError):
            sensor().execute_complete(context(), payload)

    def test_completed_event_returns_the_job(self):
        payload = AquaJobEvent(
            status="completed", job_id="job-1", job=job("job-1", "completed"), message=""
        ).to_payload()
        assert sensor().execute_complete(context(), payload)["status"] == "completed"
