"""
The wire rules (client.request, .answers, .body, .downloads, .failures): track ids and
idempotency keys, answers parsed and refused, file answers, failed exchanges.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from airflow_provider_zuora_aqua.client.answers import HttpAnswer, parse_answer, parse_retry_after
from airflow_provider_zuora_aqua.client.downloads import carries_file, download_headers, file_error
from airflow_provider_zuora_aqua.client.failures import Failure, exchange_seconds, transport_error
from airflow_provider_zuora_aqua.client.request import make_track_id, validate_track_id
from airflow_provider_zuora_aqua.exceptions import (
    AquaApiError,
    AquaAuthenticationError,
    AquaFileAccessDeniedError,
    AquaFileNotFoundError,
    AquaFileTooLargeError,
    AquaInvalidAnswerError,
    AquaJobNotFoundError,
    AquaRateLimitError,
    AquaServerError,
    AquaTransportError,
)
from airflow_provider_zuora_aqua.tasks.try_ids import task_track_id


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


FILE_ID = "2c92c0f86a8dd422016a9e7a70116b0d"


class TestFileAnswers:
    def answer(self, status: int, body: bytes, **headers: str) -> HttpAnswer:
        return HttpAnswer(status, {"Zuora-Request-Id": "req-1", **headers}, body)

    def test_404_says_purged_or_never_existed(self):
        error = file_error(self.answer(404, b'{"message": "nope"}'), FILE_ID)
        assert isinstance(error, AquaFileNotFoundError) and isinstance(error, AquaApiError)
        assert FILE_ID in str(error) and "72 hours" in str(error) and "Zuora-Request-Id req-1" in str(error)

    def test_403_size_cap_and_permission(self):
        cap = file_error(self.answer(403, b"<security:max-object-size>2047MB</security:max-object-size>"), FILE_ID)
        assert isinstance(cap, AquaFileTooLargeError) and FILE_ID in str(cap) and "UpdatedDate" in str(cap)
        denied = file_error(self.answer(403, b'{"message": "Forbidden"}'), FILE_ID)
        assert isinstance(denied, AquaFileAccessDeniedError) and FILE_ID in str(denied)

    def test_other_answers_keep_the_provider_rules(self):
        assert isinstance(file_error(self.answer(503, b""), FILE_ID), AquaServerError)
        limited = file_error(self.answer(429, b"", **{"Retry-After": "3"}), FILE_ID)
        assert isinstance(limited, AquaRateLimitError) and limited.retry_after == 3
        body = b'{"success": false, "reasons": [{"code": 50000040, "message": "bad"}]}'
        assert "bad" in str(file_error(self.answer(200, body), FILE_ID))
        not_a_file = file_error(self.answer(200, b'{"file": "x"}'), FILE_ID)
        assert type(not_a_file) is AquaApiError and "JSON instead of the file" in str(not_a_file)

    def test_resumed_requests_ask_for_a_range_of_the_identity_encoding(self):
        assert download_headers(0) == {"Accept": "*/*"}
        assert download_headers(1024) == {"Accept": "*/*", "Range": "bytes=1024-", "Accept-Encoding": "identity"}

    @pytest.mark.parametrize(
        ("status", "content_type", "carries"),
        [
            (200, "text/csv;charset=UTF-8", True),
            (206, "application/x-gzip", True),
            (416, "", True),  # the receiver decides: download again from zero
            (200, "application/json;charset=UTF-8", False),
            (404, "text/csv", False),
            (401, "", False),
        ],
    )
    def test_what_carries_the_file(self, status, content_type, carries):
        assert carries_file(status, {"Content-Type": content_type}) is carries


class TestFailedExchanges:
    """Both clients word a failed exchange, and decide whether it may have arrived, here."""

    @pytest.mark.parametrize(
        ("failure", "arrived", "words"),
        [
            (Failure.NOT_CONNECTED, False, "failed: could not connect: [Errno 111] refused"),
            (Failure.CONNECT_TIMEOUT, False, "failed: timed out while connecting"),
            (Failure.READ_TIMEOUT, True, "failed: timed out waiting for the answer"),
            (Failure.DEADLINE, True, "failed: timed out waiting for the answer (none complete within 2.5 s)"),
            (Failure.BROKEN, True, "failed: [Errno 111] refused"),
        ],
    )
    def test_only_an_exchange_that_never_connected_cannot_have_arrived(self, failure, arrived, words):
        error = transport_error("GET /x", "https://rest.zuora.com", failure, "[Errno 111] refused", seconds=2.5)
        assert isinstance(error, AquaTransportError)
        assert error.request_sent is arrived is failure.request_may_have_arrived
        assert str(error) == f"GET /x to https://rest.zuora.com {words}"

    def test_a_broken_file_says_how_far_it_came(self):
        error = transport_error("GET /v1/files/f", "https://h", Failure.BROKEN, "ProtocolError: reset", received=7)
        assert str(error) == "GET /v1/files/f broke off after 7 bytes: ProtocolError: reset"
        assert error.request_sent

    def test_an_exchange_is_bounded_by_the_timeout_within_the_deadline(self, monkeypatch):
        monkeypatch.setattr("airflow_provider_zuora_aqua.client.failures.time.monotonic", lambda: 100.0)
        assert exchange_seconds(30.0, None) == 30.0
        assert exchange_seconds(30.0, 105.0) == 5.0
        assert exchange_seconds(3.0, 105.0) == 3.0
        assert exchange_seconds(30.0, 99.0) == 0.1  # past the deadline: one short last try
