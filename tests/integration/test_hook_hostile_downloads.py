"""
Result file downloads against a hostile local HTTP server: transport encodings decoded by us
within bounds, a floor under the pace of a file, resumes that cannot splice two versions of a
file, and files that readers would count otherwise. No wall-clock assertions: where a bound is
the point, the server says how much it had to send before the client gave up.

The bounds of a file's body run both through urllib3's own ``read1`` (2.1+) and through the
fallback for urllib3 2.0.x, which users of zuora-sdk get (fixture ``body_reads``); ``.ci/floor``
runs this module on urllib3 2.0.7 for real.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator

import pytest

from airflow_provider_zuora_aqua.client import urllib3_read1
from airflow_provider_zuora_aqua.exceptions import AquaIntegrityError, AquaInvalidAnswerError, AquaTransportError
from airflow_provider_zuora_aqua.hooks.aqua import ZuoraAquaHook
from airflow_provider_zuora_aqua.results.staging import StagedFile
from tests.support.hostile_server import FileVersions, HostileServer, Recorded, Reply, chunked, serve

CONN_ID = "hostile_files"
FILE_ID = "2c92c0f86a8dd422016a9e7a70116b0d"
FILE_PATH = f"/v1/files/{FILE_ID}"
MIB = 1024 * 1024


def csv_rows(rows: int, version: str = "a") -> bytes:
    return b"Id,Name\n" + b"".join(b"%d,name-%s-%d\n" % (n, version.encode(), n) for n in range(rows))


server = pytest.fixture(serve, name="server")


@pytest.fixture
def hook(server: HostileServer, monkeypatch: pytest.MonkeyPatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)

    def make(**extra: object) -> ZuoraAquaHook:
        extras = {"retry_backoff": 0.05, "max_retries": 2, "timeout": 5, **extra}
        connection = {"conn_type": "zuora_aqua", "host": server.base_url, "login": "c", "password": "s3cret-x"}
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps({**connection, "extra": extras}))
        return ZuoraAquaHook(CONN_ID)

    return make


@pytest.fixture(params=["urllib3-read1", "urllib3-2.0-fallback"])
def body_reads(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The test once through urllib3's ``read1`` (where it has one), once through the urllib3 2.0 fallback."""
    if request.param == "urllib3-read1":
        if not urllib3_read1.NATIVE_READ1:
            pytest.skip("this urllib3 has no read1: the fallback's run covers it")
        yield
        return
    reads: list[int] = []
    fallback = urllib3_read1._read1_urllib3_20

    def counted(response, amt):
        reads.append(amt)
        return fallback(response, amt)

    monkeypatch.setattr(urllib3_read1, "NATIVE_READ1", False)
    monkeypatch.setattr(urllib3_read1, "_read1_urllib3_20", counted)
    yield
    assert reads, "the file was not read through the urllib3 2.0 fallback"


@pytest.mark.usefixtures("body_reads")
class TestTransportEncoding:
    def test_a_gzip_bomb_file_answer_is_decoded_in_bounded_pieces(self, server, hook, tmp_path):
        """0.2 MB of transport gzip inflating to 200 MB: stored whole, never held in memory at once."""
        compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
        parts = [compressor.compress(b"Id\n")]
        parts += [compressor.compress(b"\n" * MIB) for _ in range(200)]
        body = b"".join(parts) + compressor.flush()
        assert len(body) < 0.3 * MIB
        server.on("GET", FILE_PATH, Reply(body=body, headers={"Content-Type": "text/csv", "Content-Encoding": "gzip"}))
        client = hook(max_retries=0)
        client.get_access_token()

        tracemalloc.start()
        try:
            result = client.download_file(FILE_ID, tmp_path / "a.csv", expected_records=0)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()

        assert result["bytes"] == 3 + 200 * MIB
        assert peak < 24 * MIB

    @pytest.mark.parametrize("cut", [10, 200], ids=["header", "body"])
    def test_a_truncated_gzip_file_answer_is_refused_not_published(self, server, hook, tmp_path, cut):
        """urllib3 takes a gzip stream cut short as its end; a file that lost its tail is no file."""
        encoded = gzip.compress(csv_rows(500), mtime=0)
        headers = {"Content-Type": "text/csv", "Content-Encoding": "gzip"}
        server.on("GET", FILE_PATH, Reply(body=encoded[: len(encoded) - cut], headers=headers))

        with pytest.raises(AquaInvalidAnswerError, match="compressed body is truncated"):
            hook(max_retries=0).download_file(FILE_ID, tmp_path / "a.csv")

        assert list(tmp_path.iterdir()) == []


@pytest.mark.usefixtures("body_reads")
class TestThroughputFloor:
    def test_a_file_dripped_under_the_read_timeout_fails_at_the_floor(self, server, hook, tmp_path):
        """One byte every 1.5 s with timeout=2: each read succeeds, the pace does not (40 bytes would take 60 s)."""
        drip = Reply(body=csv_rows(5)[:40], drip_seconds=1.5, headers={"Content-Type": "text/csv"})
        server.on("GET", FILE_PATH, drip)
        client = hook(timeout=2, max_retries=0)
        client.get_access_token()

        with pytest.raises(AquaTransportError, match="under the floor of 65536 bytes per 2 s"):
            client.download_file(FILE_ID, tmp_path / "a.csv")

        assert drip.sent <= 6  # two 2-second windows at most, not the 40 bytes of the whole drip
        assert list(tmp_path.iterdir()) == []

    def test_a_slow_but_steady_file_is_downloaded(self, server, hook, tmp_path):
        """64 KiB every 0.25 s (256 KiB/s) with timeout=2: well above the floor, however long it takes."""
        data = csv_rows(60_000)
        assert len(data) > MIB
        server.on(
            "GET",
            FILE_PATH,
            Reply(body=data, drip_seconds=0.25, drip_bytes=64 * 1024, headers={"Content-Type": "text/csv"}),
        )

        result = hook(timeout=2, max_retries=0).download_file(FILE_ID, tmp_path / "a.csv", expected_records=60_000)

        assert result["sha256"] == hashlib.sha256(data).hexdigest()

    def test_a_slow_destination_is_not_taken_for_a_slow_server(self, server, hook, tmp_path, monkeypatch):
        """
        The whole file arrives at once, but storing each piece takes longer than the timeout (a
        slow disk, a gzip bomb inflating): only the time spent waiting on the network counts.
        """
        data = csv_rows(20_000)
        server.on("GET", FILE_PATH, Reply(body=data, headers={"Content-Type": "text/csv"}))
        write = StagedFile.write

        def slow_write(staged, piece):
            time.sleep(1.1)
            write(staged, piece)

        monkeypatch.setattr(StagedFile, "write", slow_write)

        result = hook(timeout=1, max_retries=0).download_file(FILE_ID, tmp_path / "a.csv", expected_records=20_000)

        assert result["sha256"] == hashlib.sha256(data).hexdigest()


def changed_before_the_resume(route: FileVersions) -> Callable[[Recorded], Reply]:
    """The file changes between the first answer and the first range request."""

    def answer(request: Recorded) -> Reply:
        if route.current == 0 and "Range" in request.headers:
            route.change()
        return route(request)

    return answer


@pytest.mark.usefixtures("body_reads")
class TestFraming:
    """A file's end is where its framing says, never where the connection happened to close."""

    def test_a_file_cut_short_by_an_orderly_close_is_received_again(self, server, hook, tmp_path):
        """Half the Content-Length, then FIN (not a reset): no error from the socket, yet no file."""
        data = csv_rows(20_000)
        headers = {"Content-Type": "text/csv", "Content-Length": str(len(data))}
        cut = Reply(body=data[: len(data) // 2], headers={**headers, "Connection": "close"})
        server.on("GET", FILE_PATH, [cut, Reply(body=data, headers=headers)])

        result = hook().download_file(FILE_ID, tmp_path / "a.csv")

        assert len(server.requests_to("GET", FILE_PATH)) == 2
        assert result["sha256"] == hashlib.sha256(data).hexdigest()

    def test_a_chunked_file_is_received_whole(self, server, hook, tmp_path):
        data = csv_rows(50_000)
        headers = {"Content-Type": "text/csv", "Transfer-Encoding": "chunked"}
        server.on("GET", FILE_PATH, Reply(body=chunked(data, 10_000), headers=headers))

        result = hook(max_retries=0).download_file(FILE_ID, tmp_path / "a.csv", expected_records=50_000)

        assert result["sha256"] == hashlib.sha256(data).hexdigest()

    def test_a_chunked_file_without_its_last_chunk_is_refused(self, server, hook, tmp_path):
        data = csv_rows(50_000)
        headers = {"Content-Type": "text/csv", "Transfer-Encoding": "chunked", "Connection": "close"}
        server.on("GET", FILE_PATH, Reply(body=chunked(data, 10_000, complete=False), headers=headers))

        with pytest.raises(AquaTransportError, match="broke off after"):
            hook(max_retries=0).download_file(FILE_ID, tmp_path / "a.csv")

        assert list(tmp_path.iterdir()) == []


@pytest.mark.usefixtures("body_reads")
class TestResume:
    @pytest.mark.parametrize("validator", ["etag", "last-modified"])
    def test_a_resume_sends_if_range_with_the_first_answers_validator(self, server, hook, tmp_path, validator):
        data = csv_rows(100_000)
        route = FileVersions(data, cut_first_after=len(data) // 2, validator=validator)
        server.on("GET", FILE_PATH, route)

        result = hook().download_file(FILE_ID, tmp_path / "a.csv", expected_records=100_000)

        first, second = server.requests_to("GET", FILE_PATH)
        assert "Range" not in first.headers
        assert second.headers["Range"].startswith("bytes=") and second.headers["Range"] != "bytes=0-"
        expected = '"v0"' if validator == "etag" else "Tue, 01 Dec 2026 10:00:00 GMT"
        assert second.headers["If-Range"] == expected
        assert result["sha256"] == hashlib.sha256(data).hexdigest()

    def test_a_file_that_changed_between_attempts_is_not_spliced(self, server, hook, tmp_path):
        """If-Range no longer matches: the server sends the new version whole, and only it is stored."""
        old, new = csv_rows(100_000, "a"), csv_rows(100_000, "b")
        server.on("GET", FILE_PATH, changed_before_the_resume(FileVersions(old, new, cut_first_after=len(old) // 2)))

        result = hook().download_file(FILE_ID, tmp_path / "a.csv", expected_records=100_000)

        assert result["sha256"] == hashlib.sha256(new).hexdigest()
        assert (tmp_path / "a.csv").read_bytes() == new

    def test_a_server_that_ignores_if_range_is_caught_by_the_total(self, server, hook, tmp_path):
        """The range of another version (another size) does not continue the file: it starts again from zero."""
        old, new = csv_rows(100_000, "a"), csv_rows(120_000, "b")
        route = FileVersions(old, new, cut_first_after=len(old) // 2, honour_if_range=False)
        server.on("GET", FILE_PATH, changed_before_the_resume(route))

        result = hook().download_file(FILE_ID, tmp_path / "a.csv", expected_records=120_000)

        ranges = [request.headers.get("Range") for request in server.requests_to("GET", FILE_PATH)]
        assert ranges[0] is None and ranges[1] is not None and ranges[2] is None
        assert result["sha256"] == hashlib.sha256(new).hexdigest()

    def test_without_a_validator_a_dropped_file_starts_again_from_zero(self, server, hook, tmp_path):
        data = csv_rows(100_000)
        server.on("GET", FILE_PATH, FileVersions(data, cut_first_after=len(data) // 2, validator=None))

        result = hook().download_file(FILE_ID, tmp_path / "a.csv", expected_records=100_000)

        assert ["Range" in request.headers for request in server.requests_to("GET", FILE_PATH)] == [False, False]
        assert result["sha256"] == hashlib.sha256(data).hexdigest()


class TestMalformedFiles:
    def test_corrupt_gzip_found_mid_stream_is_an_integrity_error(self, server, hook, tmp_path):
        data = gzip.compress(csv_rows(200_000), mtime=0)
        corrupt = data[: len(data) // 2] + bytes(4096) + data[len(data) // 2 + 4096 :]
        server.on("GET", FILE_PATH, Reply(body=corrupt, headers={"Content-Type": "application/x-gzip"}))

        with pytest.raises(AquaIntegrityError, match="not a valid gzip file: the gzip data is corrupt"):
            hook(max_retries=0).download_file(FILE_ID, tmp_path / "a.csv.gz")

        assert list(tmp_path.iterdir()) == []

    @pytest.mark.parametrize(
        "data",
        [b"Id,Name\r1,a\r2,b\r", b'Id,Note\n1,say "hi\n2,x"\n3,y\n'],
        ids=["bare-cr", "quote-in-unquoted-field"],
    )
    def test_without_a_record_count_what_csv_reads_otherwise_is_refused(self, server, hook, tmp_path, data):
        server.on("GET", FILE_PATH, Reply(body=data, headers={"Content-Type": "text/csv"}))

        with pytest.raises(AquaIntegrityError, match="readers would disagree"):
            hook(max_retries=0).download_file(FILE_ID, tmp_path / "a.csv")

        assert list(tmp_path.iterdir()) == []
