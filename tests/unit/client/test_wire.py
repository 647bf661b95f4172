"""The wire rules: track ids and idempotency keys, answers parsed and refused."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from airflow_provider_zuora_aqua.client.wire import (
    HttpAnswer,
    make_track_id,
    parse_answer,
    parse_retry_after,
    validate_track_id,
)
from airflow_provider_zuora_aqua.exceptions import (
    AquaApiError,
    AquaAuthenticationError,
    AquaInvalidAnswerError,
    AquaJobNotFoundError,
    AquaRateLimitError,
    AquaServerError,
)
from airflow_provider_zuora_aqua.tasks.record import task_track_id


class TestTrackId:
    def test_made_track_ids_are_valid_and_unique(self):
        run_id = "manual__2026-11-25T13:52:00.123456+00:00"
        first = make_track_id("airflow", "a_long_dag_id_for_exports", "export_invoices", run_id, 1)
        second = make_track_id("airflow", "a_long_dag_id_for_exports", "export_invoices", run_id, 2)
        assert validate_track_id(first) == first
        assert len(first) <= 64 and first != second

    def test_task_track_id_names_the_try(self):
        ti = SimpleNamespace(
            dag_id="d", task_id="t", run_id="manual__2026-01-01T00:00:00+00:00", try_number=3, map_index=2
        )
        assert task_track_id(ti) == "airflow.d.t[2].manual__2026-01-01T00-00-00+00-00.3"


class TestParseAnswer:
    def answer(self, status, body, **headers):
        return HttpAnswer(status, {"Zuora-Request-Id": "rid-1", **headers}, body.encode())

    def test_success(self):
        assert parse_answer(self.answer(200, '{"id": "j1"}'), what="GET", required_key="id") == {"id": "j1"}

    @pytest.mark.parametrize(
        ("status", "body", "error", "code"),
        [
            (200, '{"errorCode": "90005", "message": "syntax"}', AquaApiError, "90005"),
            (200, '{"success": false, "reasons": [{"code": 50000040, "message": "bad"}]}', AquaApiError, "50000040"),
            (200, '{"status": "submitted"}', AquaApiError, None),
            # An unreadable 2xx answer is treated like a server fault (retried, tolerated by waits).
            (200, "<html>proxy</html>", AquaInvalidAnswerError, None),
            (401, '{"message": "Authentication error"}', AquaAuthenticationError, None),
            (429, "{}", AquaRateLimitError, None),
            (200, '{"errorCode": "90028", "message": "limit"}', AquaRateLimitError, "90028"),
            (503, "", AquaServerError, None),
            (404, '{"errorCode": "90002", "message": "Invalid Job Id."}', AquaJobNotFoundError, "90002"),
            (200, '{"errorCode": "90002", "message": "Invalid Job Id."}', AquaJobNotFoundError, "90002"),
            (400, '{"errorCode": "90003", "message": "Invalid Job Id for job cancellation."}', AquaApiError, "90003"),
        ],
    )
    def test_errors(self, status, body, error, code):
        with pytest.raises(error) as raised:
            parse_answer(self.answer(status, body), what="GET job j1", required_key="id", job_id="j1")
        assert type(raised.value) is error
        assert raised.value.error_code == code
        assert raised.value.status_code == status
        assert raised.value.request_id == "rid-1"

    def test_retry_after(self):
        with pytest.raises(AquaRateLimitError) as raised:
            parse_answer(self.answer(429, "{}", **{"Retry-After": "7"}), what="GET", required_key="id")
        assert raised.value.retry_after == 7
        assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0
        assert parse_retry_after("soon") is None
