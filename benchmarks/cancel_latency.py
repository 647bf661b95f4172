"""
Cancel latency: SIGTERM to an Airflow task process → its DELETE arriving at the simulator.

Each round, side by side on the same simulator:

* ``airflow warm``: ``airflow dags test`` runs ``AquaSubmitJobOperator``; once the task polls its
  job, SIGTERM → ``on_kill`` → DELETE with the task's token.
* ``airflow cold``: the same, but every token is revoked just before the SIGTERM, so the
  cancel includes fetching a new token (401 → token → DELETE).
* ``bare requests``: a Python process that already imported ``requests`` waits for SIGTERM,
  then POSTs for a token and DELETEs the job.

Also counts the API calls one waiting task makes per job-hour: the real polling loop against
the simulator, with a virtual clock so that an hour passes in a second.

Run: ``.venv/bin/python benchmarks/cancel_latency.py [--rounds 20]`` (about 20 s per round).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from airflow_provider_zuora_aqua.simulator import AquaSimulator
from airflow_provider_zuora_aqua.testing.airflow_env import AirflowHome, stop_process_group, wait_for

CLIENT_ID = "bench-client-id"
CLIENT_SECRET = "bench-client-secret-123"
QUERY = {"format": "csv", "version": "1.0", "queries": [{"name": "a", "query": "select Id from Account"}]}


def delete_arrival(sim: AquaSimulator, job_id: str) -> float:
    return wait_for(
        lambda: [r.time for r in sim.requests_for("delete_job") if r.path.endswith(job_id) and r.status == 200],
        timeout=30,
        interval=0.005,
        what="the DELETE",
    )[0]


def airflow_round(home: AirflowHome, sim: AquaSimulator, *, cold: bool) -> float:
    sim.clear_requests()
    process = home.spawn("dags", "test", "aqua_bench_cancel", log_name="bench.out")
    try:
        job_path = wait_for(
            lambda: [r.path for r in sim.requests_for("get_job")], timeout=120, interval=0.01, what="polling"
        )[0]
        job_id = job_path.rsplit("/", 1)[1]
        if cold:
            sim.expire_tokens()
        sent = time.time()
        os.kill(process.pid, signal.SIGTERM)
        return delete_arrival(sim, job_id) - sent
    finally:
        stop_process_group(process)


def bare_round(sim: AquaSimulator, job_id: str) -> float:
    process = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).with_name("bare_cancel.py")),
            sim.base_url,
            CLIENT_ID,
            CLIENT_SECRET,
            job_id,
        ],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        sent = time.time()
        os.kill(process.pid, signal.SIGTERM)
        return delete_arrival(sim, job_id) - sent
    finally:
        stop_process_group(process)


def calls_per_job_hour(sim: AquaSimulator, poll_interval: float) -> int:
    """Run the operator's real wait loop against the simulator on a virtual clock; count calls."""
    from unittest import mock

    from airflow_provider_zuora_aqua.client.auth import TOKEN_CACHE
    from airflow_provider_zuora_aqua.operators import aqua as operators
    from airflow_provider_zuora_aqua.operators.aqua import AquaSubmitJobOperator

    TOKEN_CACHE.clear()
    sim.clear_requests()
    clock = [0.0]
    operator = AquaSubmitJobOperator(task_id="t", queries={"a": "select Id from Account"}, poll_interval=poll_interval)
    job_id = operator.hook.submit_job(QUERY)["id"]
    operator.job_id = job_id

    def virtual_wait(seconds: float) -> bool:
        clock[0] += seconds
        if clock[0] >= 3600:
            sim.finish_job(job_id, "completed")
        return False

    with (
        mock.patch.object(operators.time, "monotonic", lambda: clock[0]),
        mock.patch.object(operator._stopped, "wait", virtual_wait),
    ):
        operator._wait(job_id)
    return len(sim.requests)


def summary(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[max(0, int(round(0.95 * len(ordered))) - 1)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20, help="latency rounds; 0 counts API calls only")
    args = parser.parse_args()

    results: dict[str, list[float]] = {"airflow warm": [], "airflow cold": [], "bare requests": []}
    with (
        AquaSimulator(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, job_seconds=3600) as sim,
        tempfile.TemporaryDirectory(prefix="aqua-bench-") as tmp,
    ):
        connection = {"conn_type": "zuora_aqua", "host": sim.base_url, "login": CLIENT_ID, "password": CLIENT_SECRET}
        home = AirflowHome(
            Path(tmp), Path(__file__).with_name("dags"), {"AIRFLOW_CONN_ZUORA_AQUA_DEFAULT": json.dumps(connection)}
        )
        home.migrate()
        os.environ["AIRFLOW_CONN_ZUORA_AQUA_DEFAULT"] = json.dumps(connection)
        from airflow_provider_zuora_aqua.hooks.aqua import ZuoraAquaHook

        hook = ZuoraAquaHook()
        for round_number in range(1, args.rounds + 1):
            # Interleaved, so that machine noise hits all three alike.
            results["airflow warm"].append(airflow_round(home, sim, cold=False))
            results["airflow cold"].append(airflow_round(home, sim, cold=True))
            results["bare requests"].append(bare_round(sim, hook.submit_job(QUERY)["id"]))
            print(
                f"round {round_number}: " + ", ".join(f"{k} {v[-1] * 1000:.0f} ms" for k, v in results.items()),
                flush=True,
            )
        calls_30 = calls_per_job_hour(sim, 30)
        calls_60 = calls_per_job_hour(sim, 60)

    if args.rounds:
        print_latencies(results, args.rounds)
    print("API calls per job-hour while waiting (token + submit + polls):")
    print(f"  poll_interval=30 s: {calls_30}    poll_interval=60 s: {calls_60}")
    return 0


def print_latencies(results: dict[str, list[float]], rounds: int) -> None:
    print(f"\nCancel latency, SIGTERM → DELETE at the simulator, {rounds} rounds:")
    bare_p50, _ = summary(results["bare requests"])
    for name, values in results.items():
        p50, p95 = summary(values)
        ratio = p50 / bare_p50
        print(f"  {name:14s} p50 {p50 * 1000:6.1f} ms  p95 {p95 * 1000:6.1f} ms  ratio to bare (p50) {ratio:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
