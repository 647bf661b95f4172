"""The retry policy: which errors are retried."""

from __future__ import annotations

import pytest
import time_machine

from airflow_provider_zuora_aqua.client.answers import parse_retry_after
from airflow_provider_zuora_aqua.client.retry import is_retryable
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


@time_machine.travel("2015-10-21 07:26:30+00:00", tick=False)
def test_a_future_date_is_the_seconds_until_it() -> None:
    assert parse_retry_after(RETRY_AT) == 90.0


@time_machine.travel("2015-10-21 07:28:00+00:00", tick=False)
def test_the_date_now_means_no_wait() -> None:
    assert parse_retry_after(RETRY_AT) == 0.0


@time_machine.travel("2015-10-21 09:00:00+00:00", tick=False)
def test_a_past_date_means_no_wait() -> None:
    assert parse_retry_after(RETRY_AT) == 0.0


@time_machine.travel("2015-10-21 07:27:00+00:00", tick=False)
def test_a_date_without_zone_is_utc() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 -0000") == 60.0
