"""Receiving one file: error answers, resumes, verification."""

from __future__ import annotations

import pytest

from airflow_provider_zuora_aqua.client.wire import HttpAnswer
from airflow_provider_zuora_aqua.exceptions import (
    AquaApiError,
    AquaFileAccessDeniedError,
    AquaFileNotFoundError,
    AquaFileTooLargeError,
    AquaIntegrityError,
    AquaRateLimitError,
    AquaServerError,
    AquaTransportError,
)
from airflow_provider_zuora_aqua.results import receiver as file_download
from airflow_provider_zuora_aqua.results.receiver import FileReceiver, download_headers, file_error
from airflow_provider_zuora_aqua.results.staging import (
    StagedFile,
    resolve_destination,
)

FILE_ID = "2c92c0f86a8dd422016a9e7a70116b0d"


class TestAnswers:
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
        assert download_headers({"Accept-Encoding": "gzip", "Authorization": "x"}, 0)["Accept-Encoding"] == "gzip"
        resumed = download_headers({"Accept-Encoding": "gzip"}, 1024)
        assert (resumed["Range"], resumed["Accept-Encoding"], resumed["Accept"]) == ("bytes=1024-", "identity", "*/*")


class TestReceiver:
    @pytest.fixture
    def receiver(self, tmp_path):
        with StagedFile(resolve_destination(tmp_path / "a.csv")) as staged:
            yield FileReceiver(FILE_ID, staged, "csv")

    def test_a_200_after_a_range_request_starts_over(self, receiver):
        receiver.write(b"Id\nstale-")
        receiver.begin(200, {}, receiver.resume_offset)
        receiver.write(b"Id\n1\n2\n")
        assert receiver.finish(2)["bytes"] == 7

    @pytest.mark.parametrize(
        "headers",
        [
            {"Content-Range": "bytes 0-9/10"},
            {"Content-Range": "bytes 3-9/10", "Content-Encoding": "gzip"},
            {},
        ],
    )
    def test_a_206_that_does_not_continue_is_retried_from_zero(self, receiver, headers):
        receiver.write(b"Id\n")
        with pytest.raises(AquaTransportError, match="does not continue the file at byte 3"):
            receiver.begin(206, headers, 3)
        assert receiver.resume_offset == 0

    def test_a_resumed_answer_must_reach_the_full_size(self, receiver):
        receiver.write(b"Id\n")
        receiver.begin(206, {"Content-Range": "bytes 3-9/10"}, 3)
        receiver.write(b"1\n")
        with pytest.raises(AquaTransportError, match="ended at byte 5 of 10"):
            receiver.end()
        assert receiver.resume_offset == 5

    def test_more_than_any_aqua_file_is_refused(self, receiver, monkeypatch):
        monkeypatch.setattr(file_download, "MAX_FILE_BYTES", 10)
        receiver.write(b"Id\n1\n2\n3\n")
        with pytest.raises(AquaIntegrityError, match="is over 10 bytes"):
            receiver.write(b"4\n")

    def test_bytes_of_another_format_are_refused(self, receiver):
        with pytest.raises(AquaIntegrityError, match="should be csv .* but its bytes are gzip"):
            receiver.write(b"\x1f\x8b\x08\x00rest")
