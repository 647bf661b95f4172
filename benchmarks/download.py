"""
Download throughput and memory: ``ZuoraAquaHook.download_file`` beside hand-written clients.

One simulator process serves a CSV file of about ``--mb`` MiB and the gzip file of the same
rows; both are generated (and spooled by the simulator) before any measurement. Each
measurement is a fresh Python process that downloads one file once, from loopback:

* ``bare``: a ``requests`` streaming loop writing 1 MiB chunks to disk;
* ``bare+verify``: the same loop, also computing SHA-256 and counting CSV records by hand
  (quote-aware; gzip decompressed with zlib), the verification the provider does;
* ``provider``: ``ZuoraAquaHook.download_file(..., expected_records=N)``: the same checks,
  plus a temporary name, fsync and rename;
* ``zuora-sdk``: ``FilesApi.get_files`` (the whole file in memory), then written to disk; left
  out when the interpreter running this has no ``zuora_sdk`` (it lives in ``.venv-sdk`` now).

Rounds interleave the clients (their order rotates). Throughput is stored bytes per second
of the download call; peak RSS growth is sampled from the parent (psutil, every 5 ms) against
the process's RSS when it was ready to download.

Run: ``.venv/bin/python benchmarks/download.py [--mb 1024] [--rounds 3]``
(``--mb 50 --rounds 1`` for a quick check).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import psutil
import requests

ROOT = Path(__file__).resolve().parent.parent
CLIENT_ID = "bench-client-id"
CLIENT_SECRET = "bench-client-secret-123"
QUERY = "select Id, Name, Notes from Account"
CHUNK = 1024 * 1024
MIB = 1024 * 1024
CLIENTS = ("bare", "bare+verify", "provider", "zuora-sdk")
CALIBRATION_ROWS = 20_000
#: Prefix of the lines a worker reports on (Airflow may log to stdout too).
MARK = "BENCH "


# Workers: each runs in a fresh process, prints "ready", downloads once, prints a JSON line.


def bare(url: str, token: str, out: str, file_format: str) -> dict:
    with requests.get(url, headers={"Authorization": f"Bearer {token}"}, stream=True, timeout=60) as response:
        response.raise_for_status()
        size = 0
        with open(out, "wb") as sink:
            for chunk in response.iter_content(CHUNK):
                sink.write(chunk)
                size += len(chunk)
    return {"bytes": size}


def bare_verify(url: str, token: str, out: str, file_format: str) -> dict:
    """The loop above plus SHA-256 and a quote-aware record count, written the plain way."""
    digest = hashlib.sha256()
    inflate = zlib.decompressobj(31) if file_format == "gzip" else None
    in_quotes, newlines, last = False, 0, b"\n"
    with requests.get(url, headers={"Authorization": f"Bearer {token}"}, stream=True, timeout=60) as response:
        response.raise_for_status()
        size = 0
        with open(out, "wb") as sink:
            for chunk in response.iter_content(CHUNK):
                sink.write(chunk)
                digest.update(chunk)
                size += len(chunk)
                text = inflate.decompress(chunk) if inflate is not None else chunk
                if not text:
                    continue
                if in_quotes or b'"' in text:
                    parts = text.split(b'"')
                    newlines += b"".join(parts[1::2] if in_quotes else parts[0::2]).count(b"\n")
                    in_quotes ^= len(parts) % 2 == 0
                else:
                    newlines += text.count(b"\n")
                last = text[-1:]
    records = newlines + (0 if last == b"\n" else 1) - 1
    return {"bytes": size, "records": records, "sha256": digest.hexdigest()}


def provider(url: str, token: str, out: str, file_format: str, *, expected: int) -> dict:
    from airflow_provider_zuora_aqua.hooks.aqua import ZuoraAquaHook

    hook = ZuoraAquaHook()
    hook.get_access_token()  # the token is not part of the download
    file_id = url.rsplit("/", 1)[1]
    print(f"{MARK}ready", flush=True)
    started = time.perf_counter()
    result = hook.download_file(file_id, out, expected_records=expected)
    return {"seconds": time.perf_counter() - started, **result}


def sdk(url: str, token: str, out: str, file_format: str) -> dict:
    import zuora_sdk

    base_url, file_id = url.split("/v1/files/")
    client = zuora_sdk.ApiClient(zuora_sdk.Configuration(host=base_url))
    client.set_default_header("Authorization", f"Bearer {token}")
    files = zuora_sdk.FilesApi(client)
    print(f"{MARK}ready", flush=True)
    started = time.perf_counter()
    content = files.get_files(file_id)
    with open(out, "wb") as sink:
        sink.write(content)
    return {"seconds": time.perf_counter() - started, "bytes": len(content)}


def worker(args: argparse.Namespace) -> None:
    token = os.environ.get("BENCH_TOKEN", "")
    if args.worker == "provider":
        result = provider(args.url, token, args.out, args.format, expected=args.expected)
    elif args.worker == "zuora-sdk":
        result = sdk(args.url, token, args.out, args.format)
    else:
        loop = bare if args.worker == "bare" else bare_verify
        print(f"{MARK}ready", flush=True)
        started = time.perf_counter()
        result = loop(args.url, token, args.out, args.format)
        result["seconds"] = time.perf_counter() - started
    print(f"{MARK}{json.dumps(result)}", flush=True)


# The parent: simulator, priming, interleaved fresh processes, figures.


def start_simulator(rows: int) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "airflow_provider_zuora_aqua.simulator", "--client-id", CLIENT_ID]
        + ["--client-secret", CLIENT_SECRET, "--job-seconds", "0", "--file-rows", str(rows), "--no-sample-data"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


def token_for(base_url: str) -> str:
    answer = requests.post(
        f"{base_url}/oauth/token",
        data={"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "grant_type": "client_credentials"},
        timeout=30,
    )
    return answer.json()["access_token"]


def completed_file(base_url: str, token: str, file_format: str) -> tuple[str, int]:
    headers = {"Authorization": f"Bearer {token}"}
    body = {"format": file_format, "version": "1.0", "queries": [{"name": "accounts", "query": QUERY}]}
    job_id = requests.post(f"{base_url}/v1/batch-query/", json=body, headers=headers, timeout=30).json()["id"]
    for _ in range(600):
        job = requests.get(f"{base_url}/v1/batch-query/jobs/{job_id}", headers=headers, timeout=30).json()
        if job["status"] == "completed":
            return job["batches"][0]["fileId"], job["batches"][0]["recordCount"]
        time.sleep(0.1)
    raise RuntimeError(f"job {job_id} did not complete")


def prime(url: str, token: str) -> int:
    """Download once, discarding: the simulator builds and spools the file on first download."""
    size = 0
    with requests.get(url, headers={"Authorization": f"Bearer {token}"}, stream=True, timeout=3600) as response:
        response.raise_for_status()
        for chunk in response.iter_content(CHUNK):
            size += len(chunk)
    return size


def bytes_per_row() -> float:
    """Calibrate the simulator's CSV row size, so that --mb is met."""
    process, base_url = start_simulator(CALIBRATION_ROWS)
    try:
        token = token_for(base_url)
        file_id, _ = completed_file(base_url, token, "csv")
        return prime(f"{base_url}/v1/files/{file_id}", token) / CALIBRATION_ROWS
    finally:
        process.terminate()
        process.wait(30)


def measure(client: str, url: str, token: str, file_format: str, expected: int, folder: str, env: dict) -> dict:
    out = os.path.join(folder, f"out-{client}-{file_format}")
    process = subprocess.Popen(
        [sys.executable, __file__, "--worker", client, "--url", url, "--out", out]
        + ["--format", file_format, "--expected", str(expected)],
        stdout=subprocess.PIPE,
        text=True,
        env={**env, "BENCH_TOKEN": token},
    )
    assert process.stdout is not None
    if read_report(process) != "ready":
        raise RuntimeError(f"{client} did not start")
    watched = psutil.Process(process.pid)
    baseline = peak = watched.memory_info().rss
    while process.poll() is None:
        try:
            peak = max(peak, watched.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.005)
    result = json.loads(read_report(process))
    if process.wait() != 0:
        raise RuntimeError(f"{client} failed")
    if os.path.exists(out):
        os.unlink(out)
    result["rss_growth"] = peak - baseline
    if "records" in result and result["records"] != expected:
        raise RuntimeError(f"{client} counted {result['records']} records, expected {expected}")
    return result


def read_report(process: subprocess.Popen) -> str:
    """The next line a worker reports, skipping anything else it printed."""
    for line in process.stdout:  # type: ignore[union-attr]
        if line.startswith(MARK):
            return line[len(MARK) :].strip()
    return ""


def report(file_format: str, runs: dict[str, list[dict]]) -> None:
    size = runs["bare"][0]["bytes"]
    print(f"\n{file_format}: {size / MIB:.0f} MiB stored, {len(runs['bare'])} round(s), medians")
    print(f"  {'client':<13} {'MiB/s':>8} {'vs bare+verify':>15} {'peak RSS growth':>16}")
    reference = statistics.median(size / run["seconds"] for run in runs["bare+verify"])
    for client in runs:
        rate = statistics.median(size / run["seconds"] for run in runs[client])
        growth = statistics.median(run["rss_growth"] for run in runs[client])
        print(f"  {client:<13} {rate / MIB:>8.0f} {rate / reference:>14.2f}x {growth / MIB:>13.1f} MB")
    digests = {run["sha256"] for client in ("bare+verify", "provider") for run in runs[client]}
    assert len(digests) == 1, "the clients stored different bytes"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=1024, help="size of the CSV file in MiB (default 1024)")
    parser.add_argument("--rounds", type=int, default=3, help="measurements per client and file (default 3)")
    parser.add_argument("--worker", choices=CLIENTS, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--format", help=argparse.SUPPRESS)
    parser.add_argument("--expected", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    rows = max(1, round(args.mb * MIB / bytes_per_row()))
    simulator, base_url = start_simulator(rows)
    try:
        token = token_for(base_url)
        files = {}
        for file_format in ("csv", "gzip"):
            file_id, expected = completed_file(base_url, token, file_format)
            url = f"{base_url}/v1/files/{file_id}"
            started = time.perf_counter()
            size = prime(url, token)
            took = time.perf_counter() - started
            print(f"{file_format}: {rows} rows, {size / MIB:.0f} MiB, generated in {took:.0f} s", flush=True)
            files[file_format] = (url, expected)
        with tempfile.TemporaryDirectory(prefix="aqua-bench-") as folder:
            connection = json.dumps(
                {"conn_type": "zuora_aqua", "host": base_url, "login": CLIENT_ID, "password": CLIENT_SECRET}
            )
            env = {**os.environ, "AIRFLOW_CONN_ZUORA_AQUA_DEFAULT": connection, "AIRFLOW_HOME": folder}
            clients = [c for c in CLIENTS if c != "zuora-sdk" or importlib.util.find_spec("zuora_sdk") is not None]
            if "zuora-sdk" not in clients:
                print("zuora-sdk is not installed here (it lives in .venv-sdk, apart from Airflow): left out")
            runs: dict[str, dict[str, list[dict]]] = {name: {client: [] for client in clients} for name in files}
            for round_number in range(args.rounds):
                order = clients[round_number % len(clients) :] + clients[: round_number % len(clients)]
                for file_format, (url, expected) in files.items():
                    for client in order:
                        run = measure(client, url, token, file_format, expected, folder, env)
                        runs[file_format][client].append(run)
        for file_format, by_client in runs.items():
            report(file_format, by_client)
    finally:
        simulator.terminate()
        simulator.wait(30)


if __name__ == "__main__":
    main()
