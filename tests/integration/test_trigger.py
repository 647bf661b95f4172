"""AquaJobTrigger against the simulator."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from unittest import mock

import pytest
from airflow import __version__ as airflow_version
from packaging.version import Version

from airflow_provider_zuora_aqua.hooks.aqua import ZuoraAquaHook
from airflow_provider_zuora_aqua.triggers import aqua as triggers
from airflow_provider_zuora_aqua.triggers.aqua import AquaJobTrigger
from tests.support.credentials import CLIENT_SECRET, CONN_ID
from tests.support.fakes import submit
from tests.support.jobs import collect, finish_later

AIRFLOW_VERSION = Version(airflow_version)


RUNNING = ("submitted", "executing")


class TestTrigger:
    async def test_serialize_round_trip_carries_no_secret(self, simulator, aqua_conn):
        trigger = AquaJobTrigger(
            job_id="a" * 32,
            zuora_conn_id=aqua_conn,
            poll_interval=5,
            end_time=123.0,
            track_id="t-1",
            cancel_on_kill=False,
        )
        classpath, kwargs = trigger.serialize()

        assert classpath == "airflow_provider_zuora_aqua.triggers.aqua.AquaJobTrigger"
        assert AquaJobTrigger(**kwargs).serialize() == (classpath, kwargs)
        assert kwargs == {
            "job_id": "a" * 32,
            "zuora_conn_id": aqua_conn,
            "poll_interval": 5,
            "end_time": 123.0,
            "track_id": "t-1",
            "cancel_on_kill": False,
        }
        ZuoraAquaHook(aqua_conn).get_access_token()
        assert CLIENT_SECRET not in repr(kwargs)
        assert all(token not in repr(kwargs) for token in simulator.issued_tokens)

    @pytest.mark.parametrize("status", ["completed", "error", "aborted", "cancelled"])
    async def test_exactly_one_event_with_the_job_json(self, simulator, aqua_conn, status):
        job_id = submit(ZuoraAquaHook(aqua_conn))
        finish_later(simulator, job_id, status, message=f"{status} there")

        events = await collect(AquaJobTrigger(job_id=job_id, zuora_conn_id=aqua_conn, poll_interval=0.1))

        assert len(events) == 1
        [event] = events
        assert event["status"] == status and event["job_id"] == job_id
        assert event["job"] == simulator.get_job(job_id)
        assert event["request_id"]
        assert simulator.requests_for("file") == []  # waiting downloads nothing

    async def test_timeout_event_when_end_time_passes(self, simulator, aqua_conn):
        job_id = submit(ZuoraAquaHook(aqua_conn))
        [event] = await collect(
            AquaJobTrigger(job_id=job_id, zuora_conn_id=aqua_conn, poll_interval=0.1, end_time=time.time() + 0.5)
        )
        assert event["status"] == "timeout"
        assert event["job"]["status"] in RUNNING
        assert simulator.get_job(job_id)["status"] in RUNNING  # the operator decides, not the trigger

    async def test_poll_failed_event_when_waiting_cannot_help(self, simulator, aqua_conn):
        [event] = await collect(AquaJobTrigger(job_id="0" * 32, zuora_conn_id=aqua_conn, poll_interval=0.1))
        assert event["status"] == "poll_failed"
        assert "does not exist" in event["message"] and event["job"] is None
        assert len(simulator.requests_for("get_job")) == 1  # not found is not retried

    async def test_an_outage_keeps_the_trigger_waiting_until_end_time(self, simulator, aqua_conn):
        job_id = submit(ZuoraAquaHook(aqua_conn))
        simulator.add_fault("get_job", "503", rate=1.0)
        [event] = await collect(
            AquaJobTrigger(job_id=job_id, zuora_conn_id=aqua_conn, poll_interval=0.1, end_time=time.time() + 2)
        )
        assert event["status"] == "timeout"
        assert len(simulator.requests_for("get_job")) > 4  # kept polling past one call's retries

    async def test_polls_back_off_and_share_one_token(self, simulator, aqua_conn):
        job_ids = [submit(ZuoraAquaHook(aqua_conn)) for _ in range(20)]
        for job_id in job_ids:
            finish_later(simulator, job_id, "completed", delay=1.0)
        simulator.clear_requests()
        from airflow_provider_zuora_aqua.client.auth import TOKEN_CACHE

        TOKEN_CACHE.clear()
        lookup = mock.AsyncMock(wraps=ZuoraAquaHook.aget_connection)
        with mock.patch.object(ZuoraAquaHook, "aget_connection", lookup):
            results = await asyncio.gather(
                *(
                    collect(AquaJobTrigger(job_id=job_id, zuora_conn_id=aqua_conn, poll_interval=0.2))
                    for job_id in job_ids
                )
            )
        assert [events[0]["status"] for events in results] == ["completed"] * 20
        assert len(simulator.requests_for("token")) == 1
        assert lookup.await_count == 1  # one connection lookup shared by the 20 triggers

    async def test_401_refreshes_the_token_once(self, simulator, aqua_conn):
        job_id = submit(ZuoraAquaHook(aqua_conn))
        simulator.expire_tokens()
        finish_later(simulator, job_id, "completed", delay=0.1)
        [event] = await collect(AquaJobTrigger(job_id=job_id, zuora_conn_id=aqua_conn, poll_interval=0.2))
        assert event["status"] == "completed"
        assert simulator.tokens_issued == 2

    async def test_on_kill_cancels_the_job(self, simulator, aqua_conn):
        job_id = submit(ZuoraAquaHook(aqua_conn))
        await AquaJobTrigger(job_id=job_id, zuora_conn_id=aqua_conn).on_kill()
        assert simulator.get_job(job_id)["status"] == "cancelled"

    @pytest.mark.parametrize(("state", "cancelled"), [("deferred", False), ("failed", True), ("success", True)])
    async def test_on_kill_cancels_only_when_the_task_left_the_deferred_state(
        self, simulator, aqua_conn, monkeypatch, state, cancelled
    ):
        """A triggerer also kills a trigger another one took over (apache/airflow#41231): its task is still deferred."""
        from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

        job_id = submit(ZuoraAquaHook(aqua_conn))
        monkeypatch.setattr(
            RuntimeTaskInstance, "get_task_states", staticmethod(lambda **kwargs: {"run": {"export": state}})
        )
        trigger = AquaJobTrigger(job_id=job_id, zuora_conn_id=aqua_conn)
        trigger.task_instance = SimpleNamespace(dag_id="dag", task_id="export", run_id="run", map_index=-1)

        await trigger.on_kill()

        assert (simulator.get_job(job_id)["status"] == "cancelled") is cancelled

    async def test_on_kill_cancels_when_the_task_state_cannot_be_read(self, simulator, aqua_conn, monkeypatch):
        from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

        def unreadable(**kwargs):
            raise RuntimeError("no supervisor")

        job_id = submit(ZuoraAquaHook(aqua_conn))
        monkeypatch.setattr(RuntimeTaskInstance, "get_task_states", staticmethod(unreadable))
        trigger = AquaJobTrigger(job_id=job_id, zuora_conn_id=aqua_conn)
        trigger.task_instance = SimpleNamespace(dag_id="dag", task_id="export", run_id="run", map_index=-1)

        await trigger.on_kill()

        assert simulator.get_job(job_id)["status"] == "cancelled"

    async def test_on_kill_leaves_the_job_when_not_owned(self, simulator, aqua_conn):
        job_id = submit(ZuoraAquaHook(aqua_conn))
        await AquaJobTrigger(job_id=job_id, zuora_conn_id=aqua_conn, cancel_on_kill=False).on_kill()
        assert simulator.get_job(job_id)["status"] in RUNNING
        assert simulator.requests_for("delete_job") == []

    @pytest.mark.skipif(not triggers.TRIGGER_HAS_ON_KILL, reason="Airflow < 3.3 asks for the task's state: see below")
    async def test_cancelled_trigger_never_cancels_the_job_on_airflow_3_3(self, simulator, aqua_conn):
        """A triggerer restart cancels the trigger task: the job must keep running."""
        job_id = submit(ZuoraAquaHook(aqua_conn))
        task = asyncio.ensure_future(collect(AquaJobTrigger(job_id=job_id, zuora_conn_id=aqua_conn, poll_interval=0.1)))
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert triggers.TRIGGER_HAS_ON_KILL
        assert simulator.get_job(job_id)["status"] in RUNNING
        assert simulator.requests_for("delete_job") == []

    @pytest.mark.parametrize(("task_state", "cancelled"), [("deferred", False), ("failed", True)])
    async def test_before_3_3_cancel_only_when_the_task_left_deferred(
        self, simulator, aqua_conn, task_state, cancelled
    ):
        job_id = submit(ZuoraAquaHook(aqua_conn))
        trigger = AquaJobTrigger(job_id=job_id, zuora_conn_id=aqua_conn, poll_interval=0.1)
        trigger.task_instance = SimpleNamespace(dag_id="d", task_id="t", run_id="r", map_index=-1)
        states = {"r": {"t": task_state}}
        with (
            mock.patch.object(triggers, "TRIGGER_HAS_ON_KILL", False),
            mock.patch(
                "airflow.sdk.execution_time.task_runner.RuntimeTaskInstance.get_task_states", return_value=states
            ),
        ):
            task = asyncio.ensure_future(collect(trigger))
            await asyncio.sleep(0.3)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert (simulator.get_job(job_id)["status"] == "cancelled") is cancelled


@pytest.mark.skipif(AIRFLOW_VERSION < Version("3.1"), reason="Airflow 3.0: no async lookup, see test_airflow_versions")
def test_connection_lookup_is_async_in_the_trigger(simulator, aqua_conn):
    """The trigger looks the connection up with aget_connection, never the blocking call."""
    job_id = submit(ZuoraAquaHook(aqua_conn))
    simulator.finish_job(job_id, "completed")
    with mock.patch.object(ZuoraAquaHook, "get_connection", side_effect=AssertionError("blocking lookup")):
        [event] = asyncio.run(collect(AquaJobTrigger(job_id=job_id, zuora_conn_id=CONN_ID, poll_interval=0.1)))
    assert event["status"] == "completed"


async def test_an_unexpected_error_ends_the_wait_with_an_event_instead_of_crashing(monkeypatch):
    trigger = AquaJobTrigger(job_id="j1", poll_interval=0.01)

    async def broken(self, job_id, *, track_id=None):
        raise RuntimeError("server text that must not reach the log")

    monkeypatch.setattr(ZuoraAquaHook, "aget_job", broken)
    events = [event async for event in trigger.run()]

    (event,) = events
    assert event.payload["status"] == "poll_failed"
    assert event.payload["message"] == "Unexpected RuntimeError while reading AQuA job j1"
