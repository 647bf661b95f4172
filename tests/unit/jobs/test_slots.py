"""Waiting for a free job slot: attempts sent again after a refusal, bounded by a deadline and by on_kill."""

from __future__ import annotations

import logging
import threading

import pytest

from airflow_provider_zuora_aqua.exceptions import AquaError, AquaRateLimitError, AquaServerError
from airflow_provider_zuora_aqua.jobs import slots
from airflow_provider_zuora_aqua.jobs.slots import submit_until_accepted

log = logging.getLogger(__name__)


class Attempts:
    """A submit refused for the job limit ``refusals`` times, then accepted."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.calls = 0

    def __call__(self) -> dict:
        self.calls += 1
        if self.calls <= self.refusals:
            raise AquaRateLimitError("the concurrent job limit was reached", error_code="90028")
        return {"id": "job-1"}


@pytest.fixture(autouse=True)
def quick_waits(monkeypatch):
    monkeypatch.setattr(slots, "FIRST_SLOT_WAIT_SECONDS", 0.01)


def test_refused_attempts_are_sent_again_until_one_is_accepted():
    attempts = Attempts(refusals=3)
    assert submit_until_accepted(attempts, deadline=None, stopped=threading.Event(), log=log) == {"id": "job-1"}
    assert attempts.calls == 4


def test_the_last_refusal_is_raised_at_the_deadline():
    now = [0.0]
    stopped = threading.Event()
    attempts = Attempts(refusals=100)

    def clock() -> float:
        now[0] += 1.0
        return now[0]

    with pytest.raises(AquaRateLimitError, match="limit"):
        submit_until_accepted(attempts, deadline=3.0, stopped=stopped, log=log, clock=clock)
    assert 1 < attempts.calls < 100


def test_a_stop_ends_the_wait_at_once():
    stopped = threading.Event()
    stopped.set()
    attempts = Attempts(refusals=1)
    with pytest.raises(AquaError, match="killed"):
        submit_until_accepted(attempts, deadline=None, stopped=stopped, log=log)
    assert attempts.calls == 1


def test_other_errors_are_not_waited_out():
    def failing() -> dict:
        raise AquaServerError("500", status_code=500)

    with pytest.raises(AquaServerError):
        submit_until_accepted(failing, deadline=None, stopped=threading.Event(), log=log)


@pytest.mark.parametrize(
    ("backoff", "retry_after", "remaining", "expected"),
    [
        (5.0, None, None, 5.0),
        (5.0, 20.0, None, 20.0),  # Retry-After is honoured
        (5.0, 1.0, None, 1.0),  # a rate limit's short Retry-After too: the submit goes out sooner
        (5.0, 100_000.0, None, slots.MAX_SLOT_WAIT_SECONDS),  # up to the documented ceiling
        (5.0, float("inf"), None, 5.0),  # not a finite number of seconds: as if absent
        (5.0, float("nan"), None, 5.0),
        (5.0, 30.0, 2.0, 2.0),  # never past the caller's deadline
        (5.0, None, -1.0, 0.0),
    ],
)
def test_the_wait_for_a_slot_is_bounded_whatever_retry_after_says(backoff, retry_after, remaining, expected):
    assert slots.slot_wait(backoff, retry_after, remaining) == expected
