"""A large result file is written and served in constant memory (the simulator as its own process)."""

from __future__ import annotations

import csv
import io
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests

from tests.support.sim_client import CLIENT_ID, CLIENT_SECRET, MODULE, TIMEOUT, first_line, job_body, token_form

ROWS = 2_000_000


class PeakRss:
    """The highest resident set size of a process while sampling runs (and the kernel's own peak)."""

    def __init__(self, pid: int) -> None:
        self._process = psutil.Process(pid)
        self._stop = threading.Event()
        self.peak = self._process.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(TIMEOUT)
        self.peak = max(self.peak, self._process.memory_info().rss, _kernel_high_water_mark(self._process.pid))


def _kernel_high_water_mark(pid: int) -> int:
    """VmHWM (peak RSS since start) on Linux, 0 elsewhere: catches peaks between samples."""
    status = Path(f"/proc/{pid}/status")
    if not status.exists():
        return 0
    for line in status.read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


@pytest.fixture
def big_simulator() -> Iterator[tuple[int, str]]:
    process = subprocess.Popen(
        [*MODULE, "--client-id", CLIENT_ID, "--client-secret", CLIENT_SECRET]
        + ["--job-seconds", "0", "--file-rows", str(ROWS), "--no-sample-data"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield process.pid, first_line(process)
    finally:
        process.terminate()
        process.communicate(timeout=TIMEOUT)


def count_records(response: requests.Response) -> tuple[int, int]:
    """Stream the download through a CSV parser: (records including the header, bytes)."""
    response.raw.auto_close = False  # io.BufferedReader reads to EOF itself
    counted = io.BufferedReader(response.raw, buffer_size=1024 * 1024)  # type: ignore[arg-type]
    text = io.TextIOWrapper(counted, encoding="utf-8", newline="")
    records = sum(1 for _ in csv.reader(text))
    return records, response.raw.tell()


@pytest.mark.timeout(120)
def test_a_two_million_row_file_is_served_in_constant_memory(big_simulator: tuple[int, str]) -> None:
    pid, base_url = big_simulator
    session = requests.Session()
    token = session.post(f"{base_url}/oauth/token", data=token_form(), timeout=TIMEOUT).json()["access_token"]
    session.headers["Authorization"] = f"Bearer {token}"
    job = session.post(f"{base_url}/v1/batch-query/", json=job_body(), timeout=TIMEOUT).json()
    [batch] = session.get(f"{base_url}/v1/batch-query/jobs/{job['id']}", timeout=TIMEOUT).json()["batches"]
    assert batch["status"] == "completed" and batch["recordCount"] == ROWS
    baseline = psutil.Process(pid).memory_info().rss

    sizes = []
    with PeakRss(pid) as memory:
        for _ in range(2):  # the first download builds the file, the second reads the spool
            with session.get(f"{base_url}/v1/files/{batch['fileId']}", stream=True, timeout=60) as response:
                assert response.status_code == 200
                records, size = count_records(response)
            assert records == ROWS + 1  # quoted multi-line cells are one record each
            assert size == int(response.headers["Content-Length"])
            sizes.append(size)
    assert sizes[0] == sizes[1] > 50 * 1024 * 1024
    growth = memory.peak - baseline
    assert growth < sizes[0] / 4, f"RSS grew by {growth / 2**20:.0f} MiB for a {sizes[0] / 2**20:.0f} MiB file"
