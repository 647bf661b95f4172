"""AquaJobTrigger against a scripted async hook: its serialized form, its one event, and when it cancels."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import time
from contextlib import asynccontextmanager
from types import SimpleNamespace

import pytest

from airflow_provider_zuora_aqua.exceptions import (
    AquaAuthenticationError,
    AquaConfigurationError,
    AquaJobNotFoundError,
    AquaServerError,
)
from airflow_provider_zuora_aqua.jobs.event import AquaJobEvent
from airflow_provider_zuora_aqua.triggers import aqua as triggers
from airflow_provider_zuora_aqua.triggers.aqua import AquaJobTrigger
from tests.support.stubs import ScriptedZuora, hook_class, job

CLASSPATH = "airflow_provider_zuora_aqua.triggers.aqua.AquaJobTrigger"


@pytest.fixture
def zuora(monkeypatch) -> ScriptedZuora:
    """The trigger's hooks answer from this script; no HTTP session is opened."""
    zuora = ScriptedZuora()
    monkeypatch.setattr(triggers, "ZuoraAquaHook", hook_class(zuora))

    @asynccontextmanager
    async def no_session():
        yield None

    monkeypatch.setattr(triggers, "shared_client_session", no_session)
    return zuora


def trigger(**kwargs) -> AquaJobTrigger:
    return AquaJobTrigger(**{"job_id": "job-1", "zuora_conn_id": "zuora_prod", "poll_interval": 0.01, **kwargs})


async def events(of: AquaJobTrigger) -> list[dict]:
    return [event.payload async for event in of.run()]


class TestSerialize:
    def test_round_trip_under_the_same_classpath(self):
        original = trigger(poll_interval=45, end_time=1_800_000_000.5, track_id="t-1", cancel_on_kill=False)
        classpath, kwargs = original.serialize()

        assert classpath == CLASSPATH
        module, _, name = classpath.rpartition(".")
        rebuilt = getattr(importlib.import_module(module), name)(**kwargs)
        assert type(rebuilt) is AquaJobTrigger and rebuilt.serialize() == (classpath, kwargs)
        assert kwargs == {
            "job_id": "job-1",
            "zuora_conn_id": "zuora_prod",
            "poll_interval": 45.0,
            "end_time": 1_800_000_000.5,
            "track_id": "t-1",
            "cancel_on_kill": False,
        }

    @pytest.mark.parametrize("value", [0, -1, float("nan"), True])
    def test_poll_interval_is_checked(self, value):
        with pytest.raises(AquaConfigurationError, match="poll_interval"):
            trigger(poll_interval=value)


class TestRun:
    @pytest.mark.parametrize("status", ["completed", "error", "aborted", "cancelled"])
    async def test_one_event_when_the_job_ends(self, zuora, status):
        zuora.reads["job-1"] = [job("job-1", "submitted"), job("job-1", "executing"), job("job-1", status)]

        [event] = await events(trigger())

        assert (event["status"], event["job_id"], event["job"]["status"]) == (status, "job-1", status)
        assert event["request_id"] == "req-3"
        assert [call.conn_id for call in zuora.calls] == ["zuora_prod"] * 3

    async def test_transient_read_errors_keep_it_waiting(self, zuora):
        zuora.reads["job-1"] = [AquaServerError("503", status_code=503), job("job-1", "completed")]
        [event] = await events(trigger())
        assert event["status"] == "completed" and len(zuora.calls) == 2

    async def test_timeout_when_end_time_has_passed(self, zuora):
        [event] = await events(trigger(end_time=time.time() - 1))
        assert event["status"] == "timeout" and event["job"]["status"] == "executing"
        assert len(zuora.calls_of("get")) == 1 and zuora.calls_of("cancel") == []  # the task cancels

    @pytest.mark.parametrize(
        "error",
        [
            AquaAuthenticationError("401", status_code=401, request_id="r-1"),
            AquaJobNotFoundError("404", status_code=404),
        ],
    )
    async def test_poll_failed_keeps_the_error_class(self, zuora, error):
        zuora.reads["job-1"] = [error]

        [event] = await events(trigger())

        assert event["status"] == "poll_failed" and event["error"] == type(error).__name__
        assert event["status_code"] == error.status_code and event["request_id"] == error.request_id
        raised = AquaJobEvent.from_payload(event).error_to_raise()
        assert type(raised) is type(error)

    @pytest.mark.parametrize(
        ("has_on_kill", "left_deferred", "cancelled"),
        [
            (True, True, []),  # Airflow 3.3+: on_kill decides, a cancelled run never cancels
            (False, False, []),  # older: a triggerer restart or move leaves the task deferred
            (False, True, ["job-1"]),  # older: a user stopped the task
        ],
    )
    async def test_a_cancelled_run_cancels_only_before_3_3_and_only_when_the_task_left_deferred(
        self, zuora, monkeypatch, has_on_kill, left_deferred, cancelled
    ):
        monkeypatch.setattr(triggers, "TRIGGER_HAS_ON_KILL", has_on_kill)

        async def state() -> bool:
            return left_deferred

        watched = trigger()
        monkeypatch.setattr(watched, "_task_left_deferred_state", state)
        running = asyncio.create_task(events(watched))
        while not zuora.calls_of("get"):
            await asyncio.sleep(0.005)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        assert [call.job_id for call in zuora.calls_of("cancel")] == cancelled


class TestOnKill:
    @pytest.fixture
    def stopped(self, zuora, monkeypatch):
        """A trigger whose task instance is in the state the test names."""

        def make(left_deferred, **kwargs) -> AquaJobTrigger:
            killed = trigger(**kwargs)
            killed.task_instance = SimpleNamespace(task_id="export", dag_id="dag", run_id="r", map_index=-1)
            asked = killed.asked = []

            async def state() -> bool:
                asked.append(True)
                if isinstance(left_deferred, BaseException):
                    raise left_deferred
                return left_deferred

            monkeypatch.setattr(killed, "_task_left_deferred_state", state)
            return killed

        return make

    async def test_cancels_when_the_task_left_the_deferred_state(self, zuora, stopped):
        await stopped(True).on_kill()
        [cancel] = zuora.calls
        assert (cancel.method, cancel.job_id, cancel.conn_id) == ("cancel", "job-1", "zuora_prod")
        assert cancel.max_seconds == triggers.TRIGGER_CANCEL_SECONDS

    async def test_leaves_the_job_when_the_task_is_still_deferred(self, zuora, stopped):
        killed = stopped(False)
        await killed.on_kill()
        assert killed.asked == [True] and zuora.calls == []

    async def test_cancels_when_the_state_cannot_be_read(self, zuora, stopped):
        await stopped(RuntimeError("api down")).on_kill()
        assert [call.method for call in zuora.calls] == ["cancel"]

    async def test_never_cancels_a_job_it_does_not_own(self, zuora, stopped):
        killed = stopped(True, cancel_on_kill=False)
        await killed.on_kill()
        assert zuora.calls == [] and killed.asked == []

    async def test_without_a_task_instance_it_cancels(self, zuora):
        await trigger().on_kill()
        assert [call.method for call in zuora.calls] == ["cancel"]

    async def test_a_failing_cancel_never_raises(self, zuora, stopped):
        zuora.cancels["job-1"] = RuntimeError("connection reset")
        await stopped(True).on_kill()
        assert len(zuora.calls) == 1

    async def test_a_slow_stop_cancelled_again_by_the_triggerer_still_cancels(self, zuora, stopped, monkeypatch):
        """
        Airflow 3.3's triggerer runs on_kill in the trigger's task and cancels that task again at
        each sync until the trigger ends: on a busy triggerer the state read outlasts a sync.
        """
        killed = stopped(True)
        read_state = killed._task_left_deferred_state

        async def slow_state() -> bool:
            await asyncio.sleep(0.2)
            return await read_state()

        monkeypatch.setattr(killed, "_task_left_deferred_state", slow_state)

        async def as_the_triggerer_runs_it() -> None:
            await asyncio.wait_for(killed.on_kill(), timeout=30)

        task = asyncio.create_task(as_the_triggerer_runs_it())
        await asyncio.sleep(0.05)
        task.cancel("__airflow_user_action__")  # the next sync's cancel
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert [call.method for call in zuora.calls] == ["cancel"]

    async def test_a_state_read_that_hangs_is_given_up_and_the_job_cancelled(self, zuora, stopped, monkeypatch):
        killed = stopped(True)

        async def hangs() -> bool:
            await asyncio.sleep(3600)
            return False

        monkeypatch.setattr(killed, "_task_left_deferred_state", hangs)
        monkeypatch.setattr(triggers, "TRIGGER_STATE_READ_SECONDS", 0.05)
        await asyncio.wait_for(killed.on_kill(), timeout=5)
        assert [call.method for call in zuora.calls] == ["cancel"]
