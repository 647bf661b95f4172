"""The job engine against a scripted Zuora, a stub ledger and a fake clock: no HTTP, no real waits."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from types import SimpleNamespace

import pytest

from airflow_provider_zuora_aqua.engine import job_engine
from airflow_provider_zuora_aqua.engine.job_engine import (
    ON_KILL_CANCEL_SECONDS,
    UNKNOWN_READS_BEFORE_GONE,
    Finished,
    JobEngine,
)
from airflow_provider_zuora_aqua.exceptions import (
    AquaApiError,
    AquaAuthenticationError,
    AquaError,
    AquaIdempotencyKeyReusedError,
    AquaJobNotFoundError,
    AquaJobTimeoutError,
    AquaRateLimitError,
    AquaServerError,
    AquaTransportError,
)
from airflow_provider_zuora_aqua.jobs import slots
from airflow_provider_zuora_aqua.tasks.job_records import TaskJobRecord
from tests.support.stubs import BODY, AfterLostSends, ClockEvent, FakeClock, ScriptedZuora, StubLedger, hook_class, job

log = logging.getLogger(__name__)
SLOT = "job"


@pytest.fixture(autouse=True)
def quick_slot_waits(monkeypatch):
    monkeypatch.setattr(slots, "FIRST_SLOT_WAIT_SECONDS", 0.01)


@pytest.fixture
def zuora() -> ScriptedZuora:
    return ScriptedZuora()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def ledger() -> StubLedger:
    return StubLedger()


@pytest.fixture
def make_engine(zuora, clock, ledger):
    keys = (f"key-{n}" for n in itertools.count(1))

    def make(**kwargs) -> JobEngine:
        options = {
            "track_id": "track",
            "new_key": lambda: next(keys),
            "stopped": ClockEvent(clock),
            "log": log,
            "poll_interval": 30.0,
            "clock": clock,
            **kwargs,
        }
        return JobEngine(hook_class(zuora)("conn_a"), ledger, **options)

    return make


@pytest.fixture
def engine(make_engine) -> JobEngine:
    return make_engine()


def recorded(job_id=None, key=None, conn_id="conn_a") -> TaskJobRecord:
    return TaskJobRecord(-1, conn_id, job_id, key, BODY if key else None)


class TestSubmit:
    def test_the_key_is_recorded_before_sending_and_the_job_id_after(self, engine, zuora, ledger):
        def answer(call):
            # While the submit is in flight, the record names it by its key only.
            assert ledger.writes == [("submitting", SLOT, call.key)]
            assert ledger.records[SLOT].submit_key == call.key and ledger.records[SLOT].job_id is None
            return job("job-1", "submitted")

        zuora.submits = [answer]
        assert engine.submit(SLOT, BODY)["id"] == "job-1"

        assert ledger.writes == [("submitting", SLOT, "key-1"), ("submitted", SLOT, "job-1")]
        assert [(call.key, call.body, call.conn_id) for call in zuora.calls] == [("key-1", BODY, "conn_a")]
        assert engine.in_flight[SLOT].job_id == "job-1" and engine.job_ids == {SLOT: "job-1"}

    def test_a_full_tenant_is_waited_out_each_attempt_with_a_new_key(self, engine, zuora, ledger):
        zuora.submits = [
            AquaRateLimitError("429", status_code=429),
            AquaRateLimitError("job limit", error_code="90028"),
            job("job-1", "submitted"),
        ]
        engine.submit(SLOT, BODY)

        assert [call.key for call in zuora.calls_of("submit")] == ["key-1", "key-2", "key-3"]
        assert ledger.writes == [
            ("submitting", SLOT, "key-1"),
            ("drop", SLOT),  # the refused key is spent: it leaves the record
            ("submitting", SLOT, "key-2"),
            ("drop", SLOT),
            ("submitting", SLOT, "key-3"),
            ("submitted", SLOT, "job-1"),
        ]
        assert engine.stopped.waits, "the engine waited (on the fake clock) between attempts"

    def test_a_429_after_a_lost_answer_sends_the_same_key_again(self, engine, zuora, ledger):
        """The first send may have made the job; a 429 comes before Zuora looks at the key."""
        zuora.submits = [
            AfterLostSends(AquaRateLimitError("429", status_code=429)),
            AquaRateLimitError("429", status_code=429),
            job("job-1", "submitted"),
        ]
        engine.submit(SLOT, BODY)

        assert [call.key for call in zuora.calls_of("submit")] == ["key-1", "key-1", "key-1"]
        assert ledger.writes == [("submitting", SLOT, "key-1"), ("submitted", SLOT, "job-1")]

    def test_a_90028_after_a_lost_answer_is_zuoras_kept_answer_and_spends_the_key(self, engine, zuora, ledger):
        """Zuora answers a key once and replays it: a refusal after a lost answer means the key made no job."""
        zuora.submits = [AfterLostSends(AquaRateLimitError("job limit", error_code="90028")), job("job-1", "submitted")]
        engine.submit(SLOT, BODY)

        assert [call.key for call in zuora.calls_of("submit")] == ["key-1", "key-2"]
        assert ledger.writes[:2] == [("submitting", SLOT, "key-1"), ("drop", SLOT)]

    @pytest.mark.parametrize(
        "refusal",
        [AquaApiError("ZOQL error", status_code=400), AquaIdempotencyKeyReusedError("422", status_code=422)],
    )
    def test_a_refused_submit_leaves_the_record_and_the_next_one_gets_a_new_key(self, engine, zuora, ledger, refusal):
        zuora.submits = [refusal]
        with pytest.raises(type(refusal)):
            engine.submit(SLOT, BODY)
        assert ledger.writes == [("submitting", SLOT, "key-1"), ("drop", SLOT)]
        assert SLOT not in ledger.records and not engine.in_flight

        engine.submit(SLOT, BODY)
        assert [call.key for call in zuora.calls_of("submit")] == ["key-1", "key-2"]

    @pytest.mark.parametrize(
        "lost",
        [AquaServerError("502", status_code=502), AquaTransportError("reset", request_sent=True)],
    )
    def test_a_lost_answer_keeps_the_key_recorded(self, engine, zuora, ledger, lost):
        zuora.submits = [lost]
        with pytest.raises(type(lost)):
            engine.submit(SLOT, BODY)
        assert ledger.writes == [("submitting", SLOT, "key-1")]
        assert ledger.records[SLOT].submit_key == "key-1"  # it may name a job: a retry or the callback resends it

    def test_the_tenant_wait_ends_at_the_deadline(self, engine, zuora, clock, ledger):
        zuora.submits = [AquaRateLimitError("job limit", error_code="90028")] * 50
        with pytest.raises(AquaRateLimitError):
            engine.submit(SLOT, BODY, deadline=clock() + 1.0)
        assert 1 < len(zuora.calls_of("submit")) < 50
        assert SLOT not in ledger.records

    def test_a_kill_during_the_submit_cancels_the_job_as_soon_as_it_is_named(self, engine, zuora, ledger):
        def killed_in_flight(call):
            engine.stopped.set()  # on_kill ran while the answer was on its way: it had no job id
            return job("job-1", "submitted")

        zuora.submits = [killed_in_flight]
        with pytest.raises(AquaError, match="killed"):
            engine.submit(SLOT, BODY)

        assert [(call.method, call.job_id) for call in zuora.calls] == [("submit", None), ("cancel", "job-1")]
        assert ledger.writes[-2:] == [("submitted", SLOT, "job-1"), ("drop", SLOT)]
        assert not engine.in_flight


class TestReattach:
    def test_a_running_job_is_held_again(self, engine, zuora, ledger):
        ledger.records[SLOT] = recorded(job_id="job-1")
        zuora.reads["job-1"] = [job("job-1", "executing")]

        found = engine.reattach()

        assert found[SLOT]["status"] == "executing"
        assert engine.in_flight[SLOT].job_id == "job-1"
        assert zuora.calls_of("submit") == []
        assert ("drop", SLOT) not in ledger.writes

    def test_a_completed_job_is_handed_back_without_another_read(self, engine, zuora):
        engine.ledger.records[SLOT] = recorded(job_id="job-1")
        zuora.reads["job-1"] = [job("job-1", "completed")]

        assert engine.reattach()[SLOT]["status"] == "completed"
        finished = engine.next_finished()

        assert (finished.slot, finished.job_id, finished.job["status"]) == (SLOT, "job-1", "completed")
        assert len(zuora.calls_of("get")) == 1 and engine.stopped.waits == []  # at once, no read
        assert zuora.calls_of("submit") == [] and not engine.in_flight

    @pytest.mark.parametrize(
        "answer",
        [job("job-1", "error"), job("job-1", "cancelled"), job("job-1", "aborted"), AquaJobNotFoundError("404")],
        ids=["error", "cancelled", "aborted", "404"],
    )
    def test_a_job_that_failed_or_is_gone_is_dropped(self, engine, zuora, ledger, answer):
        ledger.records[SLOT] = recorded(job_id="job-1")
        zuora.reads["job-1"] = [answer]

        assert engine.reattach() == {}
        assert ledger.writes == [("drop", SLOT)] and not engine.in_flight
        assert zuora.calls_of("cancel") == []

    def test_a_recorded_submit_is_sent_again_with_its_own_key(self, engine, zuora, ledger):
        ledger.records[SLOT] = recorded(key="key-of-the-dead-try")
        zuora.submits = [job("job-7", "submitted")]
        zuora.reads["job-7"] = [job("job-7", "executing")]

        assert engine.reattach()[SLOT]["id"] == "job-7"

        [resend] = zuora.calls_of("submit")
        assert (resend.key, resend.body) == ("key-of-the-dead-try", BODY)
        assert ledger.writes == [("submitted", SLOT, "job-7")]
        assert engine.in_flight[SLOT].job_id == "job-7"

    @pytest.mark.parametrize(
        "refusal",
        [AquaRateLimitError("job limit", error_code="90028"), AquaIdempotencyKeyReusedError("422", status_code=422)],
    )
    def test_a_refused_resend_is_dropped_quietly(self, engine, zuora, ledger, refusal):
        ledger.records[SLOT] = recorded(key="spent")
        zuora.submits = [refusal]

        assert engine.reattach() == {}
        assert ledger.writes == [("drop", SLOT)]
        assert len(zuora.calls_of("submit")) == 1  # a spent key is never sent twice

    def test_a_recorded_job_is_read_through_the_connection_it_was_submitted_with(self, engine, zuora):
        engine.ledger.records[SLOT] = recorded(job_id="job-1", conn_id="conn_b")
        engine.reattach()
        assert [call.conn_id for call in zuora.calls] == ["conn_b"]
        assert engine.hook_of(SLOT).zuora_conn_id == "conn_b"
        assert engine.hook_for("conn_b") is engine.hook_of(SLOT)  # one hook per connection

    def test_a_slot_keep_rejects_is_dropped_without_a_call(self, engine, zuora, ledger):
        ledger.records["old"] = recorded(job_id="job-1")
        assert engine.reattach(keep=lambda slot: slot != "old") == {}
        assert zuora.calls == [] and ledger.writes == [("drop", "old")]


class TestWatch:
    def test_transient_read_errors_are_waited_out(self, engine, zuora):
        engine.submit(SLOT, BODY)
        zuora.reads["job-1"] = [
            AquaServerError("503", status_code=503),
            AquaTransportError("reset", request_sent=True),
            AquaRateLimitError("429", status_code=429),
            job("job-1", "completed"),
        ]
        finished = engine.next_finished()
        assert finished.job["status"] == "completed" and len(zuora.calls_of("get")) == 4

    def test_an_error_waiting_cannot_fix_is_raised(self, engine, zuora):
        engine.submit(SLOT, BODY)
        zuora.reads["job-1"] = [AquaAuthenticationError("401", status_code=401)]
        with pytest.raises(AquaAuthenticationError):
            engine.next_finished()
        assert zuora.calls_of("cancel") == []  # cancelling is the caller's block's job (cancelling_on_error)

    def test_a_job_zuora_no_longer_knows_is_read_again_then_cancelled_and_returned_as_gone(self, engine, zuora):
        engine.submit(SLOT, BODY)
        zuora.reads["job-1"] = [AquaJobNotFoundError("404", status_code=404)]

        finished = engine.next_finished()

        assert (finished.job_id, finished.job) == ("job-1", None)
        assert len(zuora.calls_of("get")) == UNKNOWN_READS_BEFORE_GONE
        assert [call.job_id for call in zuora.calls_of("cancel")] == ["job-1"]
        assert not engine.in_flight

    def test_one_lost_read_does_not_count_as_gone(self, engine, zuora):
        engine.submit(SLOT, BODY)
        not_found = AquaJobNotFoundError("404", status_code=404)
        zuora.reads["job-1"] = [not_found] * (UNKNOWN_READS_BEFORE_GONE - 1) + [
            job("job-1", "executing"),
            *[not_found] * (UNKNOWN_READS_BEFORE_GONE - 1),
            job("job-1", "completed"),
        ]
        assert engine.next_finished().job["status"] == "completed"
        assert zuora.calls_of("cancel") == []

    def test_job_timeout_cancels_the_job_and_raises(self, make_engine, zuora, ledger):
        engine = make_engine(job_timeout=60.0, poll_interval=10.0)
        engine.submit(SLOT, BODY)

        with pytest.raises(AquaJobTimeoutError, match="job_timeout of 60 s") as raised:
            engine.next_finished()

        assert [call.job_id for call in zuora.calls_of("cancel")] == ["job-1"]
        assert raised.value.job["status"] == "cancelled"
        assert ledger.writes[-1] == ("drop", SLOT) and not engine.in_flight

    def test_a_stop_ends_the_wait(self, engine, zuora):
        engine.submit(SLOT, BODY)
        engine.stopped.set()
        with pytest.raises(AquaError, match="killed"):
            engine.next_finished()
        assert zuora.calls_of("get") == []

    def test_nothing_held_is_an_error_not_an_endless_wait(self, engine):
        with pytest.raises(AquaError, match="No AQuA job is held"):
            engine.next_finished()

    def test_wait_returns_its_own_slot_while_polling_the_others(self, engine, zuora):
        engine.submit("a", BODY)
        engine.submit("b", BODY)
        zuora.reads["job-1"] = [job("job-1", "executing")] * 3 + [job("job-1", "completed")]
        zuora.reads["job-2"] = [job("job-2", "completed")]

        finished = engine.wait("a")

        assert isinstance(finished, Finished) and (finished.slot, finished.job_id) == ("a", "job-1")
        assert {call.job_id for call in zuora.calls_of("get")} == {"job-1", "job-2"}

    def test_release_forgets_the_slot(self, engine, ledger):
        engine.submit(SLOT, BODY)
        engine.release(SLOT)
        assert not engine.in_flight and SLOT not in ledger.records and ledger.writes[-1] == ("drop", SLOT)


class TestCancellingOnError:
    @pytest.mark.parametrize("error", [ValueError("boom"), KeyboardInterrupt()])
    def test_any_error_cancels_the_held_jobs_and_is_raised_again(self, engine, zuora, ledger, error):
        engine.submit("a", BODY)
        engine.submit("b", BODY)
        with pytest.raises(type(error)):
            with engine.cancelling_on_error():
                raise error
        assert sorted(call.job_id for call in zuora.calls_of("cancel")) == ["job-1", "job-2"]
        assert not engine.in_flight and ledger.records == {}  # seen to end: the records go

    def test_a_job_that_could_not_be_cancelled_stays_recorded(self, engine, zuora, ledger):
        engine.submit(SLOT, BODY)
        zuora.cancels["job-1"] = AquaTransportError("unreachable", request_sent=False)
        with pytest.raises(ValueError):
            with engine.cancelling_on_error():
                raise ValueError("boom")
        assert ledger.records[SLOT].job_id == "job-1"  # the next try or the failure callback finds it

    def test_no_error_cancels_nothing(self, engine, zuora):
        engine.submit(SLOT, BODY)
        with engine.cancelling_on_error():
            pass
        assert zuora.calls_of("cancel") == [] and SLOT in engine.in_flight

    def test_cancel_all_is_bounded(self, engine, zuora, clock):
        engine.submit("a", BODY)
        engine.submit("b", BODY)

        def slow_cancel(call):
            clock.advance(5.0)
            return job(str(call.job_id), "cancelled")

        zuora.cancels["job-1"] = zuora.cancels["job-2"] = slow_cancel
        cancelled = engine.cancel_all("test", max_seconds=4.0)
        assert len(cancelled) == 1 and len(zuora.calls_of("cancel")) == 1
        assert zuora.calls_of("cancel")[0].max_seconds == pytest.approx(4.0)


class QuickJoinThread(threading.Thread):
    """The on_kill thread, whose join is cut short (the bound it asked for is kept for the test)."""

    joins: list[float | None] = []

    def join(self, timeout=None):
        type(self).joins.append(timeout)
        super().join(0.05 if timeout is None else min(timeout, 0.05))


class TestCancelOnKill:
    def test_the_cancel_uses_a_new_session_and_never_writes_the_record(self, engine, zuora, ledger):
        engine.submit(SLOT, BODY)
        task_session = engine.hook.session
        writes = list(ledger.writes)

        engine.cancel_on_kill()

        [cancel] = zuora.calls_of("cancel")
        assert cancel.job_id == "job-1" and cancel.session != task_session
        assert cancel.thread == "aqua-on-kill-cancel"
        assert 0 < cancel.max_seconds <= ON_KILL_CANCEL_SECONDS
        assert ledger.writes == writes

    def test_the_task_thread_then_drops_what_on_kill_saw_end_without_cancelling_again(self, engine, zuora, ledger):
        engine.submit(SLOT, BODY)
        engine.cancel_on_kill()
        with pytest.raises(AquaError):
            with engine.cancelling_on_error():
                raise AquaError("Stopped waiting for AQuA jobs: the task was killed")
        assert len(zuora.calls_of("cancel")) == 1
        assert ledger.records == {}

    def test_a_failing_cancel_never_raises(self, engine, zuora, caplog):
        engine.submit(SLOT, BODY)
        zuora.cancels["job-1"] = RuntimeError("socket closed")
        engine.cancel_on_kill()
        assert "Could not cancel AQuA job job-1" in caplog.text

    def test_a_hanging_cancel_is_given_up_on(self, engine, zuora, monkeypatch, caplog):
        monkeypatch.setattr(job_engine, "threading", SimpleNamespace(Thread=QuickJoinThread))
        QuickJoinThread.joins = []
        release = threading.Event()
        zuora.cancels["job-1"] = lambda call: release.wait(5) and job("job-1", "cancelled")
        engine.submit(SLOT, BODY)
        try:
            started = time.monotonic()
            engine.cancel_on_kill()
            assert time.monotonic() - started < 1.0
        finally:
            release.set()
        assert QuickJoinThread.joins == [ON_KILL_CANCEL_SECONDS + 0.5]  # the handler's wait is bounded
        assert "did not finish in time" in caplog.text

    def test_cancels_stop_when_the_time_is_spent(self, engine, zuora, clock):
        engine.submit("a", BODY)
        engine.submit("b", BODY)

        def slow_cancel(call):
            clock.advance(ON_KILL_CANCEL_SECONDS)
            return job(str(call.job_id), "cancelled")

        zuora.cancels["job-1"] = zuora.cancels["job-2"] = slow_cancel
        engine.cancel_on_kill()
        assert len(zuora.calls_of("cancel")) == 1

    def test_no_job_held_sends_nothing(self, engine, zuora):
        engine.cancel_on_kill()
        assert zuora.calls == [] and zuora.sessions == 1
