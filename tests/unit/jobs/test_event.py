"""The trigger event: typed, checked when read back, and failures keep their error class."""

from __future__ import annotations

import pytest

from airflow_provider_zuora_aqua.exceptions import AquaError, AquaJobNotFoundError, AquaTransportError
from airflow_provider_zuora_aqua.jobs.event import POLL_FAILED, AquaJobEvent


def test_a_poll_failure_is_raised_again_with_its_own_class_and_codes():
    original = AquaJobNotFoundError(
        "AQuA job 'j1' does not exist", status_code=404, error_code="90002", request_id="r1"
    )
    payload = AquaJobEvent.poll_failed("j1", original).to_payload()

    error = AquaJobEvent.from_payload(payload).error_to_raise()

    assert payload["status"] == POLL_FAILED
    assert type(error) is AquaJobNotFoundError
    assert str(error) == str(original)


def test_an_error_class_that_cannot_be_rebuilt_becomes_a_plain_aqua_error():
    event = AquaJobEvent.poll_failed("j1", AquaTransportError("dropped", request_sent=True))
    forged = {**event.to_payload(), "error": "SystemExit"}

    assert type(event.error_to_raise()) is AquaError
    assert type(AquaJobEvent.from_payload(forged).error_to_raise()) is AquaError


@pytest.mark.parametrize(
    "payload",
    [None, "completed", {"status": "completed"}, {"status": 5, "job_id": "j", "job": None, "message": ""}],
)
def test_an_odd_event_is_an_aqua_error_naming_the_problem(payload):
    with pytest.raises(AquaError, match="event"):
        AquaJobEvent.from_payload(payload)
