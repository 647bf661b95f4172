"""Sending a recorded keyed submit again: a refused key is spent, 409 and 429 are waited out, the rest is raised."""

from __future__ import annotations

import logging

import pytest

from airflow_provider_zuora_aqua.engine import resend
from airflow_provider_zuora_aqua.engine.resend import resend_recorded_submit
from airflow_provider_zuora_aqua.exceptions import (
    AquaApiError,
    AquaAuthenticationError,
    AquaConfigurationError,
    AquaError,
    AquaIdempotencyKeyReusedError,
    AquaRateLimitError,
    AquaServerError,
    AquaSubmitInProgressError,
    AquaTransportError,
)
from airflow_provider_zuora_aqua.jobs import slots
from airflow_provider_zuora_aqua.tasks.job_records import TaskJobRecord
from tests.support.stubs import BODY, ClockEvent, FakeClock, ScriptedZuora, hook_class, job

log = logging.getLogger(__name__)
IN_PROGRESS = AquaSubmitInProgressError("409", status_code=409)


@pytest.fixture
def zuora() -> ScriptedZuora:
    return ScriptedZuora()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def stopped(clock) -> ClockEvent:
    """The resend's pauses pass on the fake clock instead of in real time."""
    return ClockEvent(clock)


@pytest.fixture
def send(zuora, clock, stopped):
    def send(*, deadline=None, record=None):
        record = record or TaskJobRecord(-1, "conn", None, "the-key", BODY)
        return resend_recorded_submit(
            hook_class(zuora)("conn"), record, track_id="t", deadline=deadline, log=log, stopped=stopped, clock=clock
        )

    return send


def test_zuora_names_the_job_of_the_key(send, zuora, clock):
    zuora.submits = [job("job-1", "executing")]
    assert send() == "job-1"
    [call] = zuora.calls
    assert (call.key, call.body) == ("the-key", BODY)


@pytest.mark.parametrize(
    "record",
    [TaskJobRecord(-1, "conn", "job-1"), TaskJobRecord(-1, "conn", None, "the-key", None)],
    ids=["no submit", "no body"],
)
def test_a_record_without_a_whole_submit_sends_nothing(send, zuora, clock, record):
    assert send(record=record) is None
    assert zuora.calls == []


@pytest.mark.parametrize(
    "refusal",
    [
        AquaRateLimitError("job limit", error_code="90028"),
        AquaApiError("ZOQL error", status_code=400),
        AquaIdempotencyKeyReusedError("422", status_code=422),
        AquaConfigurationError("invalid body"),
    ],
    ids=["90028", "400", "422", "refused before sending"],
)
def test_a_refused_key_is_spent_none_and_never_sent_again(send, zuora, clock, refusal, caplog):
    zuora.submits = [refusal, job("job-1", "submitted")]
    with caplog.at_level(logging.WARNING):
        assert send(deadline=clock() + 60) is None
    assert len(zuora.calls) == 1
    assert "the-key was refused" in caplog.text


def test_409_is_sent_again_with_the_same_key_until_zuora_names_the_job(send, zuora, clock):
    zuora.submits = [IN_PROGRESS, IN_PROGRESS, job("job-1", "submitted")]
    assert send(deadline=clock() + 60) == "job-1"
    assert [call.key for call in zuora.calls] == ["the-key"] * 3
    assert clock() == pytest.approx(1000.0 + 2 * resend.IN_PROGRESS_WAIT_SECONDS)


def test_409_past_the_deadline_is_raised(send, zuora, clock):
    zuora.submits = [IN_PROGRESS] * 100
    with pytest.raises(AquaSubmitInProgressError):
        send(deadline=clock() + 3.5)
    assert 3 <= len(zuora.calls) <= 5
    assert all(call.max_seconds >= 0.1 for call in zuora.calls)  # each send bounded by what is left


def test_a_429_is_sent_again_with_the_same_key_after_the_wait_zuora_asks_for(send, zuora, clock, stopped):
    """A 429 comes before Zuora looks at the key: the first request may have made the job."""
    zuora.submits = [AquaRateLimitError("429", status_code=429, retry_after=7), job("job-1", "submitted")]
    assert send(deadline=clock() + 60) == "job-1"
    assert [call.key for call in zuora.calls] == ["the-key"] * 2
    assert stopped.waits == [7]


def test_without_a_deadline_409_and_429_are_waited_out_until_zuora_names_the_job(send, zuora, stopped):
    zuora.submits = [IN_PROGRESS, AquaRateLimitError("429", status_code=429), job("job-1", "submitted")]
    assert send() == "job-1"
    assert len(zuora.calls) == 3 and zuora.calls[0].max_seconds is None
    assert stopped.waits == [resend.IN_PROGRESS_WAIT_SECONDS, slots.FIRST_SLOT_WAIT_SECONDS]


def test_409_is_waited_out_for_a_minute_at_most_whatever_the_deadline(send, zuora, clock):
    zuora.submits = [IN_PROGRESS] * 1000
    started = clock()
    with pytest.raises(AquaSubmitInProgressError):
        send()
    assert clock() - started == pytest.approx(resend.IN_PROGRESS_MAX_SECONDS)


def test_a_stop_ends_the_wait(send, zuora, stopped):
    zuora.submits = [IN_PROGRESS, job("job-1", "submitted")]
    stopped.set()
    with pytest.raises(AquaError, match="killed"):
        send()
    assert len(zuora.calls) == 1


@pytest.mark.parametrize(
    "lost",
    [
        AquaServerError("502", status_code=502),
        AquaTransportError("reset", request_sent=True),
        # May come before Zuora looks at the key (a gateway): the first request may have made the job.
        AquaAuthenticationError("401", status_code=401),
        AquaApiError("403", status_code=403),
        AquaApiError("404", status_code=404),
        RuntimeError("bug"),
    ],
    ids=["502", "transport", "401", "403", "404", "bug"],
)
def test_other_errors_are_raised_and_the_key_kept(send, zuora, clock, lost):
    zuora.submits = [lost]
    with pytest.raises(type(lost)):
        send(deadline=clock() + 60)
    assert len(zuora.calls) == 1


def test_the_deadline_bounds_each_send(send, zuora, clock):
    zuora.submits = [job("job-1", "submitted")]
    send(deadline=clock() + 12.5)
    assert zuora.calls[0].max_seconds == pytest.approx(12.5)
