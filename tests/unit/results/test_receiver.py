"""Receiving one file: resumes, verification (what an answer that is not the file means: client/test_wire.py)."""

from __future__ import annotations

import gzip

import pytest

from airflow_provider_zuora_aqua.exceptions import (
    AquaIntegrityError,
    AquaTransportError,
)
from airflow_provider_zuora_aqua.results import receiver as file_download
from airflow_provider_zuora_aqua.results.destination import resolve_destination
from airflow_provider_zuora_aqua.results.receiver import FileReceiver
from airflow_provider_zuora_aqua.results.staging import StagedFile

FILE_ID = "2c92c0f86a8dd422016a9e7a70116b0d"


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
            {"Content-Range": "bytes 3-10/11"},  # the file changed size since the first answer
            {"Content-Range": "bytes 3-9/*"},  # a total that cannot be checked
            {"Content-Range": "bytes 3-9/10", "ETag": '"v2"'},  # another version of the file
        ],
    )
    def test_a_206_that_does_not_continue_is_retried_from_zero(self, receiver, headers):
        receiver.begin(200, {"ETag": '"v1"', "Content-Length": "10"}, 0)
        receiver.write(b"Id\n")
        with pytest.raises(AquaTransportError, match="does not continue the same file at byte 3"):
            receiver.begin(206, headers, 3)
        assert receiver.resume_offset == 0

    def test_a_resumed_answer_must_reach_the_full_size(self, receiver):
        receiver.begin(200, {"ETag": '"v1"', "Content-Length": "10"}, 0)
        receiver.write(b"Id\n")
        receiver.begin(206, {"Content-Range": "bytes 3-9/10", "ETag": '"v1"'}, 3)
        receiver.write(b"1\n")
        with pytest.raises(AquaTransportError, match="ended at byte 5 of 10"):
            receiver.end()
        assert receiver.resume_offset == 5

    @pytest.mark.parametrize(
        ("headers", "validator"),
        [
            ({"ETag": '"v1"', "Last-Modified": "Tue, 01 Dec 2026 10:00:00 GMT"}, '"v1"'),
            ({"ETag": 'W/"v1"', "Last-Modified": "Tue, 01 Dec 2026 10:00:00 GMT"}, "Tue, 01 Dec 2026 10:00:00 GMT"),
            ({"Last-Modified": "Tue, 01 Dec 2026 10:00:00 GMT"}, "Tue, 01 Dec 2026 10:00:00 GMT"),
        ],
    )
    def test_the_first_answers_validator_goes_into_if_range(self, receiver, headers, validator):
        receiver.begin(200, headers, 0)
        receiver.write(b"Id\n")
        assert (receiver.resume_offset, receiver.validator) == (3, validator)

    def test_without_a_validator_a_resume_starts_from_zero(self, receiver):
        """No ETag or Last-Modified: nothing tells a changed file apart, so nothing is spliced."""
        receiver.begin(200, {"Content-Length": "10"}, 0)
        receiver.write(b"Id\n")
        assert receiver.resume_offset == 0

    def test_corrupt_gzip_mid_stream_is_an_integrity_error(self, tmp_path):
        """Not a bare ValueError subclass: the delivery's callers catch the provider's errors."""
        data = gzip.compress(b"Id\n" + b"".join(b"%d\n" % n for n in range(100_000)), mtime=0)
        corrupt = data[:20] + bytes(256) + data[276:]
        with StagedFile(resolve_destination(tmp_path / "a.csv.gz")) as staged:
            receiver = FileReceiver(FILE_ID, staged, "gzip")
            with pytest.raises(AquaIntegrityError, match="not a valid gzip file: the gzip data is corrupt"):
                receiver.write(corrupt)

    def test_more_than_any_aqua_file_is_refused(self, receiver, monkeypatch):
        monkeypatch.setattr(file_download, "MAX_FILE_BYTES", 10)
        receiver.write(b"Id\n1\n2\n3\n")
        with pytest.raises(AquaIntegrityError, match="is over 10 bytes"):
            receiver.write(b"4\n")

    def test_bytes_of_another_format_are_refused(self, receiver):
        with pytest.raises(AquaIntegrityError, match="should be csv .* but its bytes are gzip"):
            receiver.write(b"\x1f\x8b\x08\x00rest")
