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

``--one-call`` measures one cancel call alone, side by side in one run, each side in fresh
processes (``--processes`` of them, ``--calls`` timed calls each after one untimed warm-up call
that fetches the token and opens the connection): ``ZuoraAquaHook.cancel_job``, a bare
``requests`` session, and zuora-sdk's ``AggregateQueriesApi.delete_batch_query_job`` (run by the
interpreter of ``.venv-sdk`` when it exists: ``bash .ci/sdk`` makes it).

Run: ``.venv/bin/python benchmarks/cancel_latency.py [--rounds 20]`` (about 20 s per round), or
``.venv/bin/python benchmarks/cancel_latency.py --one-call [--processes 10 --calls 50]``.
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
#: zuora-sdk refuses a client id shorter than 36 characters (a UUID, as Zuora issues them).
SDK_CLIENT_ID = "bench0c1-1e2d-4c3b-9a8f-0123456789ab"
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


#: One side of the one-call benchmark: argv = base URL, client id, secret, job ids...; defines ``cancel(job_id)``.
_ONE_CALL_SIDES = {
    "provider": """
os.environ["AIRFLOW_CONN_ZUORA_AQUA_DEFAULT"] = json.dumps(
    {"conn_type": "zuora_aqua", "host": base_url, "login": client_id, "password": secret})
from airflow_provider_zuora_aqua.hooks.aqua import ZuoraAquaHook
cancel = ZuoraAquaHook().cancel_job
""",
    "bare requests": """
import requests
session = requests.Session()
token = session.post(f"{base_url}/oauth/token", data={"client_id": client_id, "client_secret": secret,
    "grant_type": "client_credentials"}, timeout=10).json()["access_token"]
headers = {"Authorization": f"Bearer {token}"}
def cancel(job):
    answer = session.delete(f"{base_url}/v1/batch-query/jobs/{job}", headers=headers, timeout=10)
    answer.raise_for_status()
    return answer.json()
""",
    "zuora-sdk": """
import zuora_sdk
client = zuora_sdk.ApiClient(zuora_sdk.Configuration(host=base_url))
token = zuora_sdk.OAuthApi(client).create_token(client_id=client_id, client_secret=secret,
    grant_type="client_credentials")
client.set_default_header("Authorization", f"Bearer {token.access_token}")
cancel = zuora_sdk.AggregateQueriesApi(client).delete_batch_query_job
""",
}
_ONE_CALL_HEAD = """
import json, os, sys, time
base_url, client_id, secret, *jobs = sys.argv[1:]
"""
#: After the side's code: one untimed call (token, connection), then the timed ones, printed in seconds.
_ONE_CALL_TAIL = """
cancel(jobs[0])
times = []
for job in jobs[1:]:
    started = time.perf_counter()
    cancel(job)
    times.append(time.perf_counter() - started)
print(json.dumps(times))
"""


def one_call(processes: int, calls: int) -> int:
    """Each side in ``processes`` fresh processes, interleaved; ``calls`` timed cancels in each."""
    sdk_python = Path(__file__).resolve().parent.parent / ".venv-sdk" / "bin" / "python"
    interpreters = {"provider": sys.executable, "bare requests": sys.executable}
    if sdk_python.exists():
        interpreters["zuora-sdk"] = str(sdk_python)
    else:
        print("zuora-sdk: no .venv-sdk (run `bash .ci/sdk` to make it): left out")
    times: dict[str, list[float]] = {side: [] for side in interpreters}
    with AquaSimulator(client_id=SDK_CLIENT_ID, client_secret=CLIENT_SECRET, job_seconds=3600) as sim:
        from airflow_provider_zuora_aqua.hooks.aqua import ZuoraAquaHook

        os.environ["AIRFLOW_CONN_ZUORA_AQUA_DEFAULT"] = json.dumps(
            {"conn_type": "zuora_aqua", "host": sim.base_url, "login": SDK_CLIENT_ID, "password": CLIENT_SECRET}
        )
        hook = ZuoraAquaHook()
        for _ in range(processes):
            for side, python in interpreters.items():  # interleaved: machine noise hits every side alike
                jobs = [hook.submit_job(QUERY)["id"] for _ in range(calls + 1)]
                done = subprocess.run(
                    [
                        python,
                        "-c",
                        _ONE_CALL_HEAD + _ONE_CALL_SIDES[side] + _ONE_CALL_TAIL,
                        sim.base_url,
                        SDK_CLIENT_ID,
                        CLIENT_SECRET,
                        *jobs,
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                times[side].extend(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"\nOne cancel call on loopback, {processes} fresh processes x {calls} calls per side (warm token):")
    bare_p50, _ = summary(times["bare requests"])
    sdk_p50 = summary(times["zuora-sdk"])[0] if times.get("zuora-sdk") else None
    for side, values in times.items():
        p50, p95 = summary(values)
        versus_sdk = "" if sdk_p50 is None else f", {p50 / sdk_p50:.2f}x zuora-sdk"
        print(
            f"  {side:14s} p50 {p50 * 1000:6.2f} ms  p95 {p95 * 1000:6.2f} ms  "
            f"({p50 / bare_p50:.2f}x bare requests{versus_sdk})"
        )
    return 0


def summary(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[max(0, int(round(0.95 * len(ordered))) - 1)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20, help="latency rounds; 0 counts API calls only")
    parser.add_argument("--one-call", action="store_true", help="time one cancel call per side (see above)")
    parser.add_argument("--processes", type=int, default=10, help="--one-call: fresh processes per side")
    parser.add_argument("--calls", type=int, default=50, help="--one-call: timed calls per process")
    args = parser.parse_args()
    if args.one_call:
        return one_call(args.processes, args.calls)

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
