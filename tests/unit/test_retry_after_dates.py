"""``Retry-After`` as an HTTP date: seconds from now, on a frozen wall clock (time-machine)."""

from __future__ import annotations

import time_machine

from airflow_provider_zuora_aqua.client.wire import parse_retry_after

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
