"""
Catch-up: the wall time of an incremental export's first run over N windows, several AQuA jobs
at a time (``max_active_jobs=4``, the default) against the same windows one after another
(``max_active_jobs=1``).

One simulator process plays the tenant: jobs take ``--job-seconds`` (default 2) from submit to
``completed``, and its Account table holds rows over the whole range (about one every 15
minutes of ``UpdatedDate``). Each measurement is a fresh Python process that runs
``AquaIncrementalExportOperator.execute`` once into an empty folder (timed around that call),
with daily windows (``max_window`` one day) from a ``start`` N - 0.5 days before ``now - lag``:
N windows, one job each, polled as the operator does by default (``poll_interval=30``: waits of
2 s, 4 s, ..., each spread by 10 %).
Rounds interleave the two settings (their order alternates); medians, and the ratio.

Run: ``.venv/bin/python benchmarks/catchup.py [--windows 24] [--rounds 3] [--job-seconds 2]``
(about 2 minutes a round at the defaults; ``--windows 4 --rounds 1`` for a quick check).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
CLIENT_ID = "bench-client-id"
CLIENT_SECRET = "bench-client-secret-123"
QUERIES = {"Account": "select Id, Name, Balance, UpdatedDate from Account"}
LAG = timedelta(minutes=10)
WINDOW = timedelta(days=1)
SETTINGS = (4, 1)


# The worker: a fresh process that runs one first run of the export.


class _TaskInstance(SimpleNamespace):
    """What the operator reads from ``context["ti"]``: ids and its own XCom (no task state store)."""

    def xcom_push(self, key: str, value: object) -> None:
        self.xcom[key] = value

    def xcom_pull(self, task_ids: str | None = None, key: str = "return_value", **_: object) -> object:
        return self.xcom.get(key)


def worker(args: argparse.Namespace) -> None:
    from airflow_provider_zuora_aqua.operators.aqua import AquaIncrementalExportOperator

    operator = AquaIncrementalExportOperator(
        task_id="catchup",
        queries=QUERIES,
        destination=args.destination,
        start=args.start,
        lag=LAG,
        max_window=WINDOW,
        max_active_jobs=args.max_active_jobs,
    )
    ti = _TaskInstance(dag_id="bench", task_id="catchup", run_id="catchup", try_number=1, map_index=-1, xcom={})
    started = time.perf_counter()
    windows = operator.execute({"ti": ti})  # type: ignore[arg-type]
    seconds = time.perf_counter() - started
    report = {"seconds": seconds, "windows": len(windows), "records": sum(w["records"] for w in windows)}
    Path(args.report).write_text(json.dumps(report))


# The parent: the simulator and its rows, interleaved fresh processes, figures.


def start_simulator(job_seconds: float) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "airflow_provider_zuora_aqua.simulator", "--client-id", CLIENT_ID]
        + ["--client-secret", CLIENT_SECRET, "--job-seconds", str(job_seconds)]
        # Its rows are history: visible at once (the CLI's default index delay is a minute).
        + ["--index-delay", "0", "--no-sample-data"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


def seed_rows(base_url: str, days: int) -> int:
    """One Account row every 15 minutes of UpdatedDate over the last ``days`` days."""
    now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    rows = [
        {"Id": f"A{index:06}", "Name": f"Customer {index}", "Balance": index % 1000, "UpdatedDate": when.isoformat()}
        for index, when in enumerate(now - timedelta(minutes=15 * step) for step in range(1, days * 96))
    ]
    answer = requests.post(f"{base_url}/_simulator/tables/Account/rows", json={"rows": rows}, timeout=60)
    answer.raise_for_status()
    return len(rows)


def measure(max_active_jobs: int, windows: int, job_seconds: float, folder: str, env: dict[str, str]) -> dict[str, Any]:
    destination = tempfile.mkdtemp(prefix=f"catchup-{max_active_jobs}-", dir=folder)
    start = datetime.now(timezone.utc).replace(microsecond=0) - LAG - (windows - 0.5) * WINDOW
    report = Path(destination) / "report.json"
    process = subprocess.Popen(
        [sys.executable, __file__, "--worker", "--destination", destination, "--start", start.isoformat()]
        + ["--max-active-jobs", str(max_active_jobs), "--report", str(report)],
        stdout=subprocess.DEVNULL,  # the operator's log lines
        env=env,
    )
    try:
        if process.wait(timeout=windows * (job_seconds + 40) + 120) != 0 or not report.exists():
            raise RuntimeError(f"the worker (max_active_jobs={max_active_jobs}) failed")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    result = json.loads(report.read_text())
    if result["windows"] != windows:
        raise RuntimeError(f"exported {result['windows']} windows, expected {windows}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, default=24, help="daily windows of the first run (default 24)")
    parser.add_argument("--rounds", type=int, default=3, help="measurements per setting (default 3)")
    parser.add_argument("--job-seconds", type=float, default=2.0, help="submit to completed (default 2)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--destination", help=argparse.SUPPRESS)
    parser.add_argument("--start", help=argparse.SUPPRESS)
    parser.add_argument("--max-active-jobs", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--report", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    if args.windows < 1 or args.rounds < 1 or args.job_seconds < 0:
        parser.error("--windows and --rounds must be at least 1, --job-seconds not negative")

    simulator, base_url = start_simulator(args.job_seconds)
    try:
        rows = seed_rows(base_url, args.windows + 2)
        print(f"{rows} Account rows; {args.windows} daily windows; jobs take {args.job_seconds:g} s", flush=True)
        with tempfile.TemporaryDirectory(prefix="aqua-bench-") as folder:
            connection = json.dumps(
                {"conn_type": "zuora_aqua", "host": base_url, "login": CLIENT_ID, "password": CLIENT_SECRET}
            )
            env = {**os.environ, "AIRFLOW_CONN_ZUORA_AQUA_DEFAULT": connection, "AIRFLOW_HOME": folder}
            runs: dict[int, list[dict[str, Any]]] = {setting: [] for setting in SETTINGS}
            for round_number in range(args.rounds):
                order = SETTINGS if round_number % 2 == 0 else SETTINGS[::-1]
                for setting in order:
                    run = measure(setting, args.windows, args.job_seconds, folder, env)
                    runs[setting].append(run)
                    print(f"round {round_number + 1}: max_active_jobs={setting}: {run['seconds']:.1f} s", flush=True)
        report(runs, args)
    finally:
        simulator.terminate()
        simulator.wait(30)


def report(runs: dict[int, list[dict[str, Any]]], args: argparse.Namespace) -> None:
    records = {run["records"] for setting in SETTINGS for run in runs[setting]}
    print(f"\nFirst run over {args.windows} windows ({sorted(records)} records), {args.rounds} round(s), medians:")
    sequential = statistics.median(run["seconds"] for run in runs[1])
    for setting in SETTINGS:
        seconds = statistics.median(run["seconds"] for run in runs[setting])
        print(
            f"  max_active_jobs={setting}: {seconds:6.1f} s  ({seconds / args.windows:.2f} s a window, "
            f"{sequential / seconds:.2f}x faster than one at a time)"
        )


if __name__ == "__main__":
    main()
