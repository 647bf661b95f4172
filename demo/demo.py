"""
The README demo: real Airflow runs of the example DAGs against the local AQuA simulator.

1. ``example_zuora_aqua_cancel``: one task submits an export, the next cancels it by the job id
   it took from XCom. The job goes ``executing`` → ``cancelled``.
2. ``example_zuora_aqua_export``: the task waits for its export; the demo kills the task
   process (SIGTERM, what Airflow sends when a task is marked failed or times out) and the
   job goes ``executing`` → ``cancelled`` instead of running on as an orphan.
3. ``example_zuora_aqua_results``: two exports run to completion and their files land in a
   local folder, verified, with a ``_manifest.json``; the demo lists the files and prints a
   manifest.

The exports stay after the demo exits, in ``demo/exports/<timestamp>/`` (the closing line prints
the path); the Airflow home is temporary.

Job statuses are printed as the simulator sees them change. Exit status 0 only when the first
two jobs ended ``cancelled`` and the third DAG wrote its files and manifests.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

from airflow_provider_zuora_aqua.simulator import AquaSimulator
from airflow_provider_zuora_aqua.testing.airflow_env import AirflowHome, stop_process_group, wait_for

ROOT = Path(__file__).resolve().parent.parent
#: Each run's exports land in a folder of their own under here, and stay for the user to open.
EXPORTS = ROOT / "demo" / "exports"

CLIENT_ID = "demo-client-id"
CLIENT_SECRET = "demo-client-secret-do-not-print"


class StatusWatcher(threading.Thread):
    """Print every status change of every job the simulator holds."""

    def __init__(self, sim: AquaSimulator) -> None:
        super().__init__(daemon=True)
        self.sim = sim
        self.history: dict[str, list[str]] = {}
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(0.02):
            for job_id in self.sim.job_ids():
                job = self.sim.get_job(job_id)
                statuses = self.history.setdefault(job_id, [])
                if not statuses or statuses[-1] != job["status"]:
                    statuses.append(job["status"])
                    print(f"    [zuora] job {job_id} ({job.get('name')}): {job['status']}", flush=True)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def run_results_dag(home: AirflowHome, folder: Path) -> bool:
    """Step 3: run the results DAG against a simulator whose jobs complete, then show what landed."""
    step("airflow dags test example_zuora_aqua_results  (exports land in a folder, verified, with a manifest)")
    with AquaSimulator(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, job_seconds=4, queue_seconds=0.05) as sim:
        connection = {"conn_type": "zuora_aqua", "host": sim.base_url, "login": CLIENT_ID, "password": CLIENT_SECRET}
        env = {"AIRFLOW_CONN_ZUORA_AQUA_DEFAULT": json.dumps(connection), "ZUORA_EXPORT_FOLDER": str(folder)}
        process = home.spawn("dags", "test", "example_zuora_aqua_results", log_name="results-dag.out", env=env)
        try:
            process.wait(300)
        finally:
            stop_process_group(process)
    dag_ok = process.returncode == 0 and "state=success" in home.read_log("results-dag.out")
    print(f"    DAG run {'succeeded' if dag_ok else 'FAILED'}; files under {folder}:", flush=True)
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        print(f"      {path.relative_to(folder)}  ({path.stat().st_size:,} bytes)")
    manifests = sorted(folder.rglob("_manifest.json"))
    if manifests:
        print(f"    {manifests[0].relative_to(folder)}:")
        print("      " + manifests[0].read_text().replace("\n", "\n      "))
    return dag_ok and len(manifests) == 2


def main() -> int:
    exports = EXPORTS / time.strftime("%Y%m%d-%H%M%S")
    exports.mkdir(parents=True)
    with (
        tempfile.TemporaryDirectory(prefix="aqua-demo-") as tmp,
        AquaSimulator(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, job_seconds=600, queue_seconds=0.05) as sim,
    ):
        connection = {"conn_type": "zuora_aqua", "host": sim.base_url, "login": CLIENT_ID, "password": CLIENT_SECRET}
        home = AirflowHome(
            Path(tmp) / "airflow",
            ROOT / "example_dags",
            {"AIRFLOW_CONN_ZUORA_AQUA_DEFAULT": json.dumps(connection)},
        )
        step(f"AQuA simulator on {sim.base_url}; preparing a fresh Airflow home (airflow db migrate)")
        home.migrate()
        watcher = StatusWatcher(sim)
        watcher.start()

        step("airflow dags test example_zuora_aqua_cancel  (submit, then AquaCancelJobOperator by XCom job id)")
        process = home.spawn("dags", "test", "example_zuora_aqua_cancel", log_name="cancel-dag.out")
        process.wait(300)
        cancel_dag_ok = process.returncode == 0 and "state=success" in home.read_log("cancel-dag.out")
        print(f"    DAG run {'succeeded' if cancel_dag_ok else 'FAILED'}", flush=True)
        first_job = next(iter(watcher.history), None)

        step("airflow dags test example_zuora_aqua_export  (the task waits for its export; the demo kills it)")
        process = home.spawn("dags", "test", "example_zuora_aqua_export", log_name="export-dag.out")
        try:
            second_job = wait_for(
                lambda: [j for j in watcher.history if j != first_job and watcher.history[j][-1] == "executing"],
                timeout=180,
                what="the export job executing",
            )[0]
            wait_for(lambda: any(r.path.endswith(second_job) for r in sim.requests_for("get_job")), timeout=60)
            print(f"    sending SIGTERM to the task process (pid {process.pid})", flush=True)
            killed_at = time.time()
            os.kill(process.pid, signal.SIGTERM)
            deletes = wait_for(
                lambda: [r.time for r in sim.requests_for("delete_job") if r.path.endswith(second_job)],
                timeout=30,
                interval=0.01,
                what="the cancel",
            )
            print(f"    the task's DELETE reached Zuora {(deletes[0] - killed_at) * 1000:.0f} ms after the SIGTERM")
            wait_for(lambda: watcher.history[second_job][-1] != "executing", timeout=5, what="the watcher")
        finally:
            stop_process_group(process)
        watcher.stop()

        results_ok = run_results_dag(home, exports)

        step("Summary")
        ok = cancel_dag_ok and results_ok
        for job_id, statuses in watcher.history.items():
            went = " → ".join(statuses)
            print(f"    job {job_id}: {went}")
            ok = ok and statuses[-2:] == ["executing", "cancelled"]
        ok = ok and len(watcher.history) == 2
        logs = home.all_logs()
        leaked = CLIENT_SECRET in logs or any(token in logs for token in sim.issued_tokens)
        print(f"    secrets in Airflow logs: {'FOUND' if leaked else 'none'}")
        print(
            f"\nDemo {'passed' if ok and not leaked else 'FAILED'}: the two watched jobs went executing → cancelled, "
            f"and the exports landed, verified, with their manifests, in {exports}"
        )
        return 0 if ok and not leaked else 1


if __name__ == "__main__":
    sys.exit(main())
