"""The streaming record counter against Python's csv module, with chunks split anywhere."""

from __future__ import annotations

import csv
import gzip
import io
import random
import zipfile
import zlib

import pytest

from airflow_provider_zuora_aqua.results.records import (
    CSV,
    GZIP,
    INFLATE_ALLOWANCE,
    MAX_INFLATE_RATIO,
    MAX_ZIP_MEMBERS,
    ZIP,
    CsvRecordCounter,
    GzipRecordCounter,
    MalformedResultError,
    count_zip_records,
    record_counter,
    sniff_format,
)

CHUNK_SIZES = [1, 2, 3, 5, 7, 16, 64, 1000, 1 << 20]
TRICKY_CELLS = ["plain", "", "a,b", 'say "hi"', '"', '""', "line\nbreak", "crlf\r\nbreak", "\n", ",\n,", "é ü 漢字"]


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


def count(data: bytes, size: int) -> int:
    counter = CsvRecordCounter()
    for chunk in chunks(data, size):
        counter.feed(chunk)
    return counter.finish()


def reference(data: bytes) -> int:
    """Python's csv module: non-empty rows, minus the header."""
    rows = [row for row in csv.reader(io.StringIO(data.decode("utf-8"), newline="")) if row]
    return max(0, len(rows) - 1)


def random_csv(
    rng: random.Random, rows: int, *, terminator: str, trailing_newline: bool, quote_all: bool, columns: int = 3
) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator=terminator, quoting=csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL)
    writer.writerow(["Id", "Name", "Notes"][:columns])
    for row in range(rows):
        cells = [f"id-{row}", rng.choice(TRICKY_CELLS), rng.choice(TRICKY_CELLS) + rng.choice(TRICKY_CELLS)]
        writer.writerow(cells[:columns] if columns > 1 else [rng.choice([f"id-{row}", *TRICKY_CELLS[2:]])])
    text = buffer.getvalue()
    if not trailing_newline:
        text = text[: -len(terminator)]
    return text.encode("utf-8")


@pytest.mark.parametrize("size", CHUNK_SIZES)
@pytest.mark.parametrize("columns", [3, 1], ids=["3-columns", "1-column"])
@pytest.mark.parametrize("seed", range(6))
def test_random_tricky_csv_matches_the_csv_module(seed: int, columns: int, size: int) -> None:
    rng = random.Random(seed)
    data = random_csv(
        rng,
        rows=rng.randint(0, 60),
        terminator=rng.choice(["\n", "\r\n"]),
        trailing_newline=rng.random() < 0.5,
        quote_all=rng.random() < 0.3,
        columns=columns,
    )
    assert count(data, size) == reference(data)


@pytest.mark.parametrize("size", CHUNK_SIZES)
@pytest.mark.parametrize(
    ("data", "records"),
    [
        (b"", 0),
        (b"Id", 0),
        (b"Id\n", 0),
        (b"Id\nA", 1),
        (b"Id\nA\n", 1),
        (b"Id\r\nA\r\nB\r\n", 2),
        (b'Id,Note\n1,"multi\nline\nnote"\n2,x\n', 2),
        (b'Id,Note\r\n1,"multi\r\nline"\r\n2,"x"', 2),
        (b'Id,Note\n1,"he said ""no,\n way"""\n', 1),
        (b'Id\n""\n""\n', 2),  # a quoted empty field is a record, not a blank line
        (b"Id\n\n\nA\n\n\nB\n\n", 2),  # blank lines are not records
        (b"\n\nId\nA\n", 1),  # leading blank lines come before the header
        (b"Id\r\n\r\nA\r\n\r\n", 1),
        (b'"Id\nwith newline"\nA\n', 1),  # the header itself may be quoted and span lines
        (b'Id\n"a"\n\n"b"\n', 2),  # quoted records around a blank line
    ],
)
def test_known_cases(data: bytes, records: int, size: int) -> None:
    assert count(data, size) == records == reference(data)


def test_unterminated_quote_is_malformed() -> None:
    counter = CsvRecordCounter()
    counter.feed(b'Id\n"never closed\n')
    with pytest.raises(MalformedResultError, match="inside a quoted field"):
        counter.finish()


@pytest.mark.parametrize("size", [1, 13, 4096, 1 << 20])
def test_gzip_counts_after_decompressing_and_accepts_several_members(size: int) -> None:
    first = random_csv(random.Random(1), 40, terminator="\n", trailing_newline=True, quote_all=False)
    # A second member continuing the same CSV stream (no header of its own), as `cat a.gz b.gz` does.
    second = b'x-1,"more\nlines",z\nx-2,b,c\n'
    data = gzip.compress(first, mtime=0) + gzip.compress(second, mtime=0)
    counter = GzipRecordCounter()
    for chunk in chunks(data, size):
        counter.feed(chunk)
    assert counter.finish() == reference(first + second)


def test_gzip_output_is_bounded_for_highly_compressed_data() -> None:
    # 48 MiB of newlines in about 48 KiB: each decompressed piece stays at most 1 MiB.
    data = gzip.compress(b"Id\n" + b"x\n" * (24 * 1024 * 1024), compresslevel=9, mtime=0)
    counter = GzipRecordCounter()
    seen: list[int] = []
    feed = counter._csv.feed
    counter._csv.feed = lambda out: (seen.append(len(out)), feed(out))  # type: ignore[method-assign]
    counter.feed(data)
    assert counter.finish() == 24 * 1024 * 1024
    assert max(seen) <= 1024 * 1024


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (gzip.compress(b"Id\nA\n", mtime=0)[:-6], "cut short"),
        (b"\x1f\x8b\x08\x00garbage-garbage", "corrupt"),
        (gzip.compress(b"Id\nA\n", mtime=0)[:-8] + b"\x00\x00\x00\x00\x04\x00\x00\x00", "corrupt"),  # bad CRC
    ],
    ids=["cut short", "not gzip", "bad CRC"],  # the same on every xdist worker
)
def test_gzip_cut_short_or_corrupt_is_malformed(data: bytes, message: str) -> None:
    counter = GzipRecordCounter()
    with pytest.raises(MalformedResultError, match=message):
        counter.feed(data)
        counter.finish()


def test_zip_counts_every_member_streaming(tmp_path) -> None:
    members = {
        "a.csv": random_csv(random.Random(2), 30, terminator="\r\n", trailing_newline=False, quote_all=True),
        "b.csv": b'Id,Note\n1,"x\ny"\n',
    }
    path = tmp_path / "result.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("folder/", b"")
        for name, data in members.items():
            archive.writestr(name, data)
    assert count_zip_records(path, chunk_size=7) == sum(reference(data) for data in members.values())


def test_zip_corrupt_is_malformed(tmp_path) -> None:
    path = tmp_path / "result.zip"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(MalformedResultError, match="zip"):
        count_zip_records(path)


def test_formats_and_sniffing() -> None:
    assert isinstance(record_counter(CSV), CsvRecordCounter)
    assert isinstance(record_counter(GZIP), GzipRecordCounter)
    assert record_counter(ZIP) is None
    with pytest.raises(ValueError, match="unknown AQuA file format 'parquet'"):
        record_counter("parquet")
    assert sniff_format(gzip.compress(b"x")) == GZIP
    assert sniff_format(b"PK\x03\x04rest") == ZIP
    assert sniff_format(b"Id,Name\n") == CSV


@pytest.mark.parametrize("size", CHUNK_SIZES)
@pytest.mark.parametrize(
    "data",
    [
        b"Id,Name\r1,a\r2,b\r",  # bare \r line ends: csv ends a record at each
        b"Id,Name\n1,a\r2,b\n",
        b'Id,Name\n1,a\r"2",b\n',
        b'Id,Note\n1,say "hi\n2,x"\n3,y\n',  # a quote inside an unquoted field is text to csv
        b'Id,Note\n1,x"\n2,y\n',
        b'Id,Note\n1,"a"b\n2,"c\n',  # text after a closing quote
    ],
)
def test_what_csv_reads_otherwise_is_refused_not_miscounted(data: bytes, size: int) -> None:
    with pytest.raises(MalformedResultError, match="readers would disagree"):
        count(data, size)


@pytest.mark.parametrize("size", CHUNK_SIZES)
@pytest.mark.parametrize(
    "data",
    [
        b'Id,Note\r\n"1","a\rb"\r\n2,"x\ry"\r\n',  # a bare \r inside quotes is data, to both
        b'"Id","Note"\n"1","say ""hi"""\n"2",""\n',
        b'Id,Note\n1,""\n"",2\n,"x"\n',
        b"Id\r\nA\r\nB\r",  # a last \r ends the last record, to both
    ],
)
def test_what_both_read_alike_is_counted(data: bytes, size: int) -> None:
    assert count(data, size) == reference(data)


def test_a_gzip_bomb_is_refused_at_the_ratio_cap() -> None:
    """1 MiB of gzip that inflates to 1 GiB stops at the ratio cap, long before the gigabyte."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b"\n" * (1 << 20)
    data = b"".join(compressor.compress(block) for _ in range(1024)) + compressor.flush()
    counter = GzipRecordCounter()
    inflated: list[int] = []
    feed = counter._csv.feed
    counter._csv.feed = lambda out: (inflated.append(len(out)), feed(out))  # type: ignore[method-assign]
    with pytest.raises(MalformedResultError, match=f"inflates past {MAX_INFLATE_RATIO} times"):
        counter.feed(data)
    assert sum(inflated) <= max(INFLATE_ALLOWANCE, MAX_INFLATE_RATIO * len(data))


def test_a_zip_bomb_member_is_refused_at_the_ratio_cap(tmp_path) -> None:
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        with archive.open("a.csv", "w", force_zip64=True) as member:
            for _ in range(256):
                member.write(b"\n" * (1 << 20))
    assert path.stat().st_size < 1 << 20
    with pytest.raises(MalformedResultError, match="inflates past"):
        count_zip_records(path)


def test_a_zip_with_too_many_members_is_refused_before_reading_its_directory(tmp_path, monkeypatch) -> None:
    path = tmp_path / "many.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for number in range(MAX_ZIP_MEMBERS + 1):
            archive.writestr(f"{number}.csv", b"")
    read_directory = []
    monkeypatch.setattr(zipfile.ZipFile, "_RealGetContents", lambda self: read_directory.append(self))
    with pytest.raises(MalformedResultError, match=f"more than {MAX_ZIP_MEMBERS}"):
        count_zip_records(path)
    assert read_directory == []


def overlapping_zip(copies: int, inflated: int) -> bytes:
    """``copies`` central directory entries that all point at one local entry (the overlap of a zip bomb)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("a.csv", b"Id\n" + b"\n" * inflated)
    data = buffer.getvalue()
    start = data.index(b"PK\x01\x02")
    end = data.index(b"PK\x05\x06")
    entry = data[start:end]
    directory = b"".join(entry[:46] + b"%c.csv" % (97 + n) + entry[46 + 5 :] for n in range(copies))
    tail = bytearray(data[end:])
    tail[8:10] = tail[10:12] = copies.to_bytes(2, "little")
    tail[12:16] = len(directory).to_bytes(4, "little")
    return data[:start] + directory + bytes(tail)


def test_overlapping_zip_entries_are_refused_before_inflating(tmp_path) -> None:
    path = tmp_path / "overlap.zip"
    path.write_bytes(overlapping_zip(6, 8 << 20))
    with zipfile.ZipFile(path) as archive:
        assert len(archive.infolist()) == 6  # a reader that does not check inflates each one
    with pytest.raises(MalformedResultError, match="overlap"):
        count_zip_records(path)
