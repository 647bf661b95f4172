"""The retry policy: which errors are retried, and how long it waits (Retry-After within bounds)."""

from __future__ import annotations

import pytest
import tenacity
import time_machine

from airflow_provider_zuora_aqua.client.answers import parse_retry_after
from airflow_provider_zuora_aqua.client.defaults import MAX_RETRY_WAIT_SECONDS
from airflow_provider_zuora_aqua.client.retry import is_retryable, retry_policy
from airflow_provider_zuora_aqua.client.settings import AquaConnectionSettings
from airflow_provider_zuora_aqua.exceptions import (
    AquaApiError,
    AquaAuthenticationError,
    AquaRateLimitError,
    AquaServerError,
    AquaSubmitInProgressError,
    AquaTransportError,
)


class TestRetryable:
    @pytest.mark.parametrize(
        ("error", "idempotent", "expected"),
        [
            (AquaTransportError("x", request_sent=True), True, True),
            (AquaTransportError("x", request_sent=True), False, False),
            (AquaTransportError("x", request_sent=False), False, True),
            (AquaRateLimitError("x", status_code=429), False, True),
            (AquaServerError("x", status_code=500), True, True),
            (AquaServerError("x", status_code=500), False, False),
            (AquaServerError("x", status_code=503), False, True),
            (AquaApiError("x", status_code=400), True, False),
            (AquaAuthenticationError("x", status_code=401), True, False),
        ],
    )
    def test_policy(self, error, idempotent, expected):
        assert is_retryable(error, idempotent=idempotent) is expected

    def test_a_keyed_submit_is_resent_but_not_after_a_rate_limit_refusal(self):
        """Zuora replays a refused key's answer: only a new key (jobs.slots) can succeed."""
        assert is_retryable(AquaRateLimitError("x", status_code=429), keyed_submit=True) is False
        assert is_retryable(AquaRateLimitError("x", status_code=200, error_code="90028"), keyed_submit=True) is False
        assert is_retryable(AquaSubmitInProgressError("x", status_code=409), keyed_submit=True) is True
        assert is_retryable(AquaServerError("x", status_code=500), keyed_submit=True) is True
        assert is_retryable(AquaTransportError("x", request_sent=True), keyed_submit=True) is True


RETRY_AT = "Wed, 21 Oct 2015 07:28:00 GMT"


@time_machine.travel("2015-10-21 07:27:40+00:00", tick=False)
def test_a_future_date_is_the_seconds_until_it() -> None:
    assert parse_retry_after(RETRY_AT) == 20.0


@time_machine.travel("2015-10-21 05:28:00+00:00", tick=False)
def test_a_date_hours_ahead_is_capped() -> None:
    assert parse_retry_after(RETRY_AT) == MAX_RETRY_WAIT_SECONDS


@time_machine.travel("2015-10-19 07:28:00+00:00", tick=False)
def test_a_date_days_ahead_is_not_believed() -> None:
    assert parse_retry_after(RETRY_AT) is None


@time_machine.travel("2015-10-21 07:28:00+00:00", tick=False)
def test_the_date_now_means_no_wait() -> None:
    assert parse_retry_after(RETRY_AT) == 0.0


@time_machine.travel("2015-10-21 09:00:00+00:00", tick=False)
def test_a_past_date_means_no_wait() -> None:
    assert parse_retry_after(RETRY_AT) == 0.0


@time_machine.travel("2015-10-21 07:27:50+00:00", tick=False)
def test_a_date_without_zone_is_utc() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 -0000") == 10.0


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("5", 5.0), ("0", 0.0), ("0.5", 0.5), (" 7 ", 7.0), ("29.9", 29.9), ("3600", 30.0), ("86400", 30.0)],
)
def test_delta_seconds_are_capped_at_the_longest_wait(value, seconds) -> None:
    assert parse_retry_after(value) == seconds


@pytest.mark.parametrize(
    "value", [None, "", "86401", "100000", "inf", "-inf", "nan", "-5", "+5", "1e3", "1e400", "0x10", "5 s", "soon"]
)
def test_what_no_server_means_is_no_retry_after(value) -> None:
    assert parse_retry_after(value) is None


def settings(**extra: float) -> AquaConnectionSettings:
    return AquaConnectionSettings(
        conn_id="c", base_url="https://rest.zuora.com", client_id="i", client_secret="s", **extra
    )


def wait_after(exc: BaseException, policy: dict, *, attempt: int = 1, elapsed: float = 0.0) -> float:
    """The policy's wait after ``exc`` on attempt ``attempt``, ``elapsed`` seconds into the call."""
    state = tenacity.RetryCallState(tenacity.Retrying(), fn=None, args=(), kwargs={})
    state.attempt_number = attempt
    state.start_time -= elapsed
    state.set_exception((type(exc), exc, None))
    return policy["wait"](state)


class TestWait:
    def test_retry_after_is_waited(self):
        assert wait_after(AquaRateLimitError("x", retry_after=12.5), retry_policy(settings())) == 12.5

    def test_the_backoff_is_capped_at_the_longest_wait(self):
        assert wait_after(AquaServerError("x"), retry_policy(settings()), attempt=30) <= MAX_RETRY_WAIT_SECONDS

    def test_no_wait_runs_past_the_budget(self):
        limited = AquaRateLimitError("x", retry_after=MAX_RETRY_WAIT_SECONDS)
        assert wait_after(limited, retry_policy(settings(retry_max_seconds=120)), elapsed=110) <= 10
        assert wait_after(limited, retry_policy(settings(), max_seconds=4)) <= 4
        assert wait_after(AquaServerError("x"), retry_policy(settings(retry_backoff=50)), elapsed=119) <= 1
