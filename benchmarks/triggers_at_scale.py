"""
1,000 deferred AQuA jobs in one event loop, as the triggerer runs their triggers.

The simulator runs in its own process (so that its threads do not share this process's GIL).
The benchmark submits N jobs, then runs N ``AquaJobTrigger.run()`` coroutines on one asyncio
loop until every job has completed and fired its event, and measures:

* event-loop lag: how late a 50 ms ticker wakes up, idle first (baseline) and with the triggers;
* token fetches during the trigger phase (the token cache starts empty);
* API calls: GETs per trigger per poll interval once the backoff has reached the interval;
* memory per trigger: growth of the process's peak RSS with the triggers running, divided by N
  (tracemalloc is left off: it slows every allocation and would distort the lag figures).

Run: ``.venv/bin/python benchmarks/triggers_at_scale.py [--triggers 1000]`` (about a minute).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CLIENT_ID = "scale-client-id"
CLIENT_SECRET = "scale-client-secret-123"
QUERY = {"format": "csv", "version": "1.0", "queries": [{"name": "a", "query": "select Id from Account"}]}


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def control(base_url: str, path: str, method: str = "GET") -> object:
    with urllib.request.urlopen(urllib.request.Request(f"{base_url}/_simulator/{path}", method=method)) as answer:
        body = answer.read()
        return json.loads(body) if body else None


async def ticker(lags: list[float], stop: asyncio.Event, period: float = 0.05) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        expected = loop.time() + period
        await asyncio.sleep(period)
        lags.append(loop.time() - expected)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def run_triggers(job_ids: list[str], poll_interval: float) -> dict[str, object]:
    from airflow_provider_zuora_aqua.triggers.aqua import AquaJobTrigger

    idle_lags: list[float] = []
    stop = asyncio.Event()
    idle = asyncio.ensure_future(ticker(idle_lags, stop))
    await asyncio.sleep(3)
    stop.set()
    await idle

    rss_before = rss_bytes()
    lags: list[float] = []
    stop = asyncio.Event()
    tick = asyncio.ensure_future(ticker(lags, stop))
    peak = {"rss": rss_before}

    async def sample_memory() -> None:
        while not stop.is_set():
            peak["rss"] = max(peak["rss"], rss_bytes())
            await asyncio.sleep(0.5)

    sampler = asyncio.ensure_future(sample_memory())

    async def one(job_id: str) -> list[dict]:
        trigger = AquaJobTrigger(job_id=job_id, poll_interval=poll_interval)
        return [event.payload async for event in trigger.run()]

    started = time.monotonic()
    results = await asyncio.gather(*(one(job_id) for job_id in job_ids))
    elapsed = time.monotonic() - started
    stop.set()
    await tick
    await sampler
    return {
        "events": results,
        "elapsed": elapsed,
        "idle_lags": idle_lags,
        "lags": lags,
        "rss_per_trigger": (peak["rss"] - rss_before) / len(job_ids),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--triggers", type=int, default=1000)
    parser.add_argument("--poll-interval", type=float, default=5.0)
    parser.add_argument("--job-seconds", type=float, default=45.0)
    args = parser.parse_args()

    simulator = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow_provider_zuora_aqua.simulator",
            "--port",
            "0",
            "--job-seconds",
            str(args.job_seconds),
            "--client-id",
            CLIENT_ID,
            "--client-secret",
            CLIENT_SECRET,
            "--no-sample-data",  # generated rows, as the figures were measured with
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert simulator.stdout is not None
        base_url = simulator.stdout.readline().strip()
        connection = {
            "conn_type": "zuora_aqua",
            "host": base_url,
            "login": CLIENT_ID,
            "password": CLIENT_SECRET,
            "extra": {"max_retries": 5},
        }
        os.environ["AIRFLOW_CONN_ZUORA_AQUA_DEFAULT"] = json.dumps(connection)
        from airflow_provider_zuora_aqua.client.auth import TOKEN_CACHE
        from airflow_provider_zuora_aqua.hooks.aqua import ZuoraAquaHook

        hook = ZuoraAquaHook()
        job_ids = [hook.submit_job(QUERY)["id"] for _ in range(args.triggers)]
        TOKEN_CACHE.clear()
        control(base_url, "requests", "DELETE")
        tokens_before = control(base_url, "tokens")["tokens_issued"]

        result = asyncio.run(run_triggers(job_ids, args.poll_interval))

        requests = control(base_url, "requests")
        tokens = control(base_url, "tokens")["tokens_issued"] - tokens_before
    finally:
        simulator.terminate()
        simulator.wait(10)

    statuses = [events[0]["status"] for events in result["events"] if len(events) == 1]
    gets = [r for r in requests if r["route"] == "get_job"]
    polls: dict[str, list[float]] = {}
    for request in gets:
        polls.setdefault(request["path"], []).append(request["time"])
    # Steady state: gaps between polls once the backoff (2, 4, ... s) has reached the interval.
    steady_gaps = [
        later - earlier for times in polls.values() for earlier, later in zip(sorted(times)[3:], sorted(times)[4:])
    ]
    polls_per_interval = args.poll_interval / statistics.mean(steady_gaps) if steady_gaps else float("nan")

    print(
        f"{args.triggers} triggers, poll_interval {args.poll_interval:g} s, jobs of {args.job_seconds:g} s, "
        f"all done in {result['elapsed']:.1f} s"
    )
    print(f"  events: {len(statuses)} triggers fired exactly one event, {statuses.count('completed')} 'completed'")
    idle, busy = result["idle_lags"], result["lags"]
    print(
        f"  event-loop lag idle:          p50 {statistics.median(idle) * 1000:6.1f} ms  "
        f"p99 {percentile(idle, 0.99) * 1000:6.1f} ms  max {max(idle) * 1000:6.1f} ms"
    )
    print(
        f"  event-loop lag with triggers: p50 {statistics.median(busy) * 1000:6.1f} ms  "
        f"p99 {percentile(busy, 0.99) * 1000:6.1f} ms  max {max(busy) * 1000:6.1f} ms"
    )
    print(f"  token fetches: {tokens} (one connection)")
    print(
        f"  API calls: {len(gets)} GETs in all ({len(gets) / args.triggers:.1f} per job); in steady state "
        f"{polls_per_interval:.2f} GET per trigger per poll interval; other calls: {len(requests) - len(gets)}"
    )
    print(f"  memory per trigger: {result['rss_per_trigger'] / 1024:.1f} KiB of peak RSS")
    return 0 if len(statuses) == args.triggers else 1


if __name__ == "__main__":
    sys.exit(main())
