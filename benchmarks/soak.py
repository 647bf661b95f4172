"""
Fault soak: hundreds of AQuA jobs through real Airflow task runs, with faults and task stops.

Run from the project root (a clone after ``bash .ci/bootstrap``)::

    .venv/bin/python -m benchmarks.soak [--executor local|celery] [--jobs 200] [--seed 1] [--fault-rate 0.2]
                                        [--stop-rate 0.2] [--max-minutes 40] [--json soak.json]

What runs, all on 127.0.0.1 and all started (and, at the end, killed by process group) here:

* the AQuA simulator as its own process (``python -m airflow_provider_zuora_aqua.simulator``)
  with one-hour jobs, so that no job ends unless this soak or the provider ends it, and
  rate-based fault rules (``POST /_simulator/faults``) that hit about ``--fault-rate`` of all
  requests: ``429`` with ``Retry-After``, ``500``, ``503``, dropped connections, slow answers,
  lost submit answers (``submit:lost_answer``: the job is created, the answer never comes) and
  downloads cut halfway (``file:drop_mid``);
* Airflow's full stack in a fresh home with the DAG of ``benchmarks/dags/aqua_soak_dags.py``:
  8 AQuA tasks per run (deferrable or not, one quick retry or none, downloads or not), triggered
  ``ceil(jobs / 8)`` times. ``--executor local`` (the default): API server, scheduler, DAG
  processor, one triggerer, LocalExecutor, SQLite. ``--executor celery``: the distributed stack
  of :mod:`airflow_provider_zuora_aqua.testing.distributed` (PostgreSQL and redis-server of
  its own, CeleryExecutor, two Celery workers, two triggerers; ``bash .ci/services`` installs
  the servers, the ``distributed`` extra the Python packages).

The driver watches the simulator (``GET /_simulator/jobs`` and ``/_simulator/requests``) and
the REST API. Before the runs start, it picks at random (``--seed``) the task instances whose
first try it stops (``--stop-rate``), and how:

* ``sigterm``: SIGTERM to the task process (``on_kill`` must cancel);
* ``sigkill``: SIGKILL to the task process (the next try must re-attach, or, without retries,
  the DAG-level failure callback must cancel);
* ``mark_failed``: ``PATCH .../taskInstances/{task} {"new_state": "failed"}`` of a deferred
  task (the trigger's ``on_kill`` must cancel);
* ``execution_timeout``: nothing is done; the job never ends, so the task's 45 s
  ``execution_timeout`` must stop it and cancel the job;
* ``worker_lost`` (Celery only): SIGKILL to the whole process tree of the Celery worker that
  runs the try (every try on that worker is lost with it), which is started again at once; the
  scheduler fails the tries after the heartbeat timeout, then the next try must re-attach or the
  failure callback cancel;
* ``triggerer_lost`` (Celery only): SIGKILL to the whole process tree of the triggerer that runs
  the deferred try's trigger, which is started again at once: the other triggerer takes the
  triggers over, no job may be cancelled and the try must succeed (its job is finished as any other).
  It hits the task instance's current try when the first was lost with a worker; a ``worker_lost``
  whose try was lost with another killed worker counts as applied.

Waiting tasks get SIGTERM/SIGKILL (and ``worker_lost``), deferrable ones ``mark_failed`` (and
``triggerer_lost``); both kinds may get ``execution_timeout``. A stop lands 0-4 s after the
stopped try's job appeared at the simulator, so a SIGKILL may hit a try whose submit answer is
still on the way. Every job
that a try not picked for a stop is watching (polling) while that try still runs is finished
``completed`` by the driver 2-10 s later; the driver never finishes a job whose task try has
ended. So a job still running at the end can only be one the provider left behind.

Figures (``Report``), counted from the simulator's request log and job list and the REST API:

* jobs submitted (created at the simulator), completed, cancelled, other endings, still running;
* submit requests, requests, injected faults by kind; stops planned, applied, missed by kind;
* task instances by final state, and failures of task instances that no stop was planned for
  (a try lost with its worker counts as stopped: it ran on a worker killed while it ran).

Three must be 0, else the command exits 1:

* **duplicate submits**: a task try is named by the ``Zuora-Track-Id`` of its submit requests
  (``airflow.<dag>.<task>.<run>.<try>``); each job is owned by the try whose submit body created
  it (the job name is ``<run>.<task>.<try>``, rendered from the try's own context). Duplicates
  are the jobs beyond the first of each try: ``sum(max(0, jobs of the try - 1))``. A job whose
  name names a try that neither sent a submit nor has a later try that did (a later try may send
  an earlier try's recorded submit again, key and body) also counts: a submit nobody can own.
* **orphaned jobs**: jobs still ``submitted``/``executing`` at the simulator at the end whose
  task instance has ended (``success``, ``failed``, ...), read after a grace period (90 s) for
  failure callbacks. In a complete soak every task instance has ended, so it is every job still
  running.
* **results lost**: task instances that ended ``success`` with a destination and for which any
  of these fails: ``<downloads>/<run>/<task>/_manifest.json`` exists and is the task's XCom
  ``return_value``; its ``job_id`` is a job the simulator reports ``completed``; its entries are
  exactly the files (``fileId`` or ``segments``) of that job's completed batches; every file
  exists in the folder with the manifest's ``bytes`` and ``sha256``; its records, counted here
  with Python's ``csv`` module (after gunzip or unzip), equal the manifest's ``records``, and
  each batch's records sum to that batch's ``recordCount``.

The soak also fails when it hits ``--max-minutes`` (it then stops, cleans up and reports what
it saw) or when fewer runs finished than it triggered.

Limits: it needs Airflow 3.3+ (a SIGKILLed try's retry re-attaches through the task state
store; a deferred task marked failed is cancelled by the trigger's ``on_kill``).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import gzip
import hashlib
import io
import json
import math
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

import psutil

from airflow_provider_zuora_aqua.testing.airflow_env import AirflowHome, AirflowStack, stop_process_group, wait_for
from airflow_provider_zuora_aqua.testing.distributed import (
    CeleryStack,
    PostgresServer,
    RedisServer,
    postgres_home,
)
from benchmarks.dags.aqua_soak_dags import DOWNLOADS_ENV, SOAK_CONN_ID, SOAK_DAG_ID, SOAK_TASKS, SoakTask

DAGS_FOLDER = Path(__file__).resolve().parent / "dags"
SIGTERM, SIGKILL, MARK_FAILED, EXECUTION_TIMEOUT = "sigterm", "sigkill", "mark_failed", "execution_timeout"
WORKER_LOST, TRIGGERER_LOST = "worker_lost", "triggerer_lost"
#: The stops of a LocalExecutor soak; a CeleryExecutor soak adds the loss of a worker or a triggerer.
STOP_KINDS = (SIGTERM, SIGKILL, MARK_FAILED, EXECUTION_TIMEOUT)
CELERY_STOP_KINDS = (*STOP_KINDS, WORKER_LOST, TRIGGERER_LOST)
#: Stops after which the stopped try must still succeed.
HARMLESS_STOPS = (TRIGGERER_LOST,)
EXECUTORS = {"local": "LocalExecutor", "celery": "CeleryExecutor"}
#: The try each planned stop hits; later tries run undisturbed.
STOPPED_TRY = 1
#: Job statuses that mean the job still runs at the simulator.
RUNNING_JOB = ("submitted", "executing")
ENDED_TASK = ("success", "failed", "upstream_failed", "skipped", "removed")
ACTIVE_TASK = ("running", "deferred", "queued", "scheduled", "restarting")
ENDED_RUN = ("success", "failed")
#: Try states of a try that failed (``up_for_retry``: it failed and a retry followed).
FAILED_TRY = ("failed", "up_for_retry")
#: Delays (seconds) drawn by the driver: stop after the job appeared; finish after a try watches its job.
STOP_DELAY = (0.0, 4.0)
FINISH_DELAY = (2.0, 10.0)
#: Time for DAG-level failure callbacks to cancel after the last run ended.
CALLBACK_GRACE_SECONDS = 90.0
STEP_SECONDS = 1.0
PROGRESS_SECONDS = 30.0
#: Fault kinds and the routes they hit; each rule gets one rate so that about ``fault_rate`` of requests are hit.
FAULT_KINDS = (
    ("submit", "lost_answer"),
    ("file", "drop_mid"),
    ("*", "429"),
    ("*", "500"),
    ("*", "503"),
    ("*", "drop"),
    ("*", "slow"),
)
_RULES_PER_REQUEST = sum(1 for route, _ in FAULT_KINDS if route == "*")
SLOW_SECONDS = 1.5
RETRY_AFTER_SECONDS = 1


class TryId(NamedTuple):
    """One task try: ``(run_id, task_id, try_number)`` of the soak DAG."""

    run_id: str
    task_id: str
    try_number: int


def try_from_track_id(track_id: str | None) -> TryId | None:
    """The try a ``Zuora-Track-Id`` names (``airflow.<dag>.<task>.<run>.<try>``), None for others."""
    parts = (track_id or "").split(".")
    if len(parts) != 5 or parts[0] != "airflow" or parts[1] != SOAK_DAG_ID or not parts[4].isdigit():
        return None
    return TryId(parts[3], parts[2], int(parts[4]))


def try_from_job_name(name: str | None) -> TryId | None:
    """The try whose submit body created a job (``<run>.<task>.<try>``), None for other names."""
    parts = (name or "").split(".")
    if len(parts) != 3 or not parts[2].isdigit():
        return None
    return TryId(parts[0], parts[1], int(parts[2]))


def fault_rules(fault_rate: float) -> list[dict[str, Any]]:
    """
    Rate-based fault rules that hit about ``fault_rate`` of the requests.

    The simulator tries rules in order, each with its own probability, so a request on a route
    with ``n`` rules is hit with ``1 - (1 - p) ** n``: ``p`` is chosen so that this is
    ``fault_rate`` for the rules every route has (submits and downloads get one more rule each).
    """
    if not 0.0 <= fault_rate < 1.0:
        raise ValueError(f"fault_rate must be in [0, 1), not {fault_rate!r}")
    rate = 1.0 - (1.0 - fault_rate) ** (1.0 / _RULES_PER_REQUEST)
    rules = []
    for route, kind in FAULT_KINDS:
        rule: dict[str, Any] = {"route": route, "kind": kind, "rate": round(rate, 6)}
        if kind == "429":
            rule["retry_after"] = RETRY_AFTER_SECONDS
        if kind == "slow":
            rule["delay"] = SLOW_SECONDS
        rules.append(rule)
    return rules


def plan_stops(
    run_ids: Iterable[str],
    tasks: Iterable[SoakTask],
    stop_rate: float,
    rng: random.Random,
    *,
    distributed: bool = False,
) -> dict[tuple[str, str], str]:
    """
    ``(run_id, task_id) -> stop kind`` for the task instances whose first try is stopped.

    :param distributed: also pick ``worker_lost`` and ``triggerer_lost`` (a CeleryExecutor soak).
    """
    tasks = tuple(tasks)
    plan = {}
    for run_id in run_ids:
        for task in tasks:
            if rng.random() < stop_rate:
                kinds = (MARK_FAILED, EXECUTION_TIMEOUT) if task.deferrable else (SIGTERM, SIGKILL, EXECUTION_TIMEOUT)
                if distributed:
                    kinds += (TRIGGERER_LOST,) if task.deferrable else (WORKER_LOST,)
                plan[(run_id, task.task_id)] = rng.choice(kinds)
    return plan


@dataclass
class Report:
    """What one soak saw; ``failures`` lists the reasons it failed (empty: it passed)."""

    jobs_requested: int
    seed: int
    fault_rate: float
    stop_rate: float
    executor: str = "LocalExecutor"
    runs_triggered: int = 0
    runs_ended: int = 0
    task_instances: dict[str, int] = field(default_factory=dict)
    task_tries: int = 0
    unplanned_failures: list[str] = field(default_factory=list)
    #: Where the logs of those tries were kept (they outlive the soak's scratch folder).
    failure_logs: str | None = None
    jobs_submitted: int = 0
    jobs_completed: int = 0
    jobs_cancelled: int = 0
    jobs_other_endings: int = 0
    jobs_running_at_end: int = 0
    jobs_finished_by_soak: int = 0
    submit_requests: int = 0
    requests: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    stops_planned: dict[str, int] = field(default_factory=dict)
    stops_applied: dict[str, int] = field(default_factory=dict)
    stops_missed: list[str] = field(default_factory=list)
    results_checked: int = 0
    duplicate_submits: int = 0
    duplicates: list[str] = field(default_factory=list)
    orphaned_jobs: int = 0
    orphans: list[str] = field(default_factory=list)
    results_lost: int = 0
    lost: list[str] = field(default_factory=list)
    timed_out: bool = False
    wall_seconds: float = 0.0
    failures: list[str] = field(default_factory=list)

    @property
    def faults_injected(self) -> int:
        return sum(self.faults.values())

    @property
    def passed(self) -> bool:
        return not self.failures

    def judge(self) -> None:
        """Fill ``failures``: a must-be-0 figure that is not 0, the time bound hit, runs left unfinished."""
        self.failures = [
            f"{name} = {value}"
            for name, value in (
                ("duplicate_submits", self.duplicate_submits),
                ("orphaned_jobs", self.orphaned_jobs),
                ("results_lost", self.results_lost),
            )
            if value
        ]
        if self.timed_out:
            self.failures.append("stopped at --max-minutes before every run ended")
        if self.runs_ended < self.runs_triggered:
            self.failures.append(f"only {self.runs_ended} of {self.runs_triggered} runs ended")

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "faults_injected": self.faults_injected, "passed": self.passed}

    def table(self) -> str:
        """The report as a plain-text table."""
        fault_share = self.faults_injected / self.requests if self.requests else 0.0
        rows = [
            ("executor", self.executor),
            ("runs ended / triggered", f"{self.runs_ended} / {self.runs_triggered}"),
            ("task instances by final state", _counts(self.task_instances)),
            ("task tries that submitted", self.task_tries),
            ("failed tries without a planned stop", len(self.unplanned_failures)),
            ("jobs submitted", self.jobs_submitted),
            ("jobs completed", self.jobs_completed),
            ("jobs cancelled", self.jobs_cancelled),
            ("jobs with other endings", self.jobs_other_endings),
            ("jobs finished by the soak", self.jobs_finished_by_soak),
            ("submit requests", self.submit_requests),
            ("requests", self.requests),
            ("faults injected", f"{self.faults_injected} ({fault_share:.1%}): {_counts(self.faults)}"),
            ("stops planned", _counts(self.stops_planned)),
            ("stops applied", _counts(self.stops_applied)),
            ("stops missed", len(self.stops_missed)),
            ("downloads checked", self.results_checked),
            ("duplicate submits (must be 0)", self.duplicate_submits),
            ("jobs running after their task stopped (must be 0)", self.orphaned_jobs),
            ("results lost (must be 0)", self.results_lost),
            ("wall time", f"{self.wall_seconds / 60:.1f} min{' (stopped at the bound)' if self.timed_out else ''}"),
            ("verdict", "PASS" if self.passed else "FAIL: " + "; ".join(self.failures)),
        ]
        width = max(len(name) for name, _ in rows)
        lines = [f"{name.ljust(width)}  {value}" for name, value in rows]
        if self.failure_logs:
            lines.append(f"logs of the failed tries without a planned stop: {self.failure_logs}")
        for title, items in (
            ("duplicates", self.duplicates),
            ("orphans", self.orphans),
            ("lost", self.lost),
            ("unplanned failures", self.unplanned_failures),
            ("stops missed", self.stops_missed),
        ):
            lines += [f"{title}: {item}" for item in items[:20]]
        return "\n".join(lines)


def shortfalls(report: Report, plan: dict[tuple[str, str], str], retries: dict[str, int]) -> list[str]:
    """
    Why a soak meant to exercise everything (CI's) did not prove it: the verdict's failures, and
    evidence that is missing (no download checked, too few fault kinds, a stop not applied, fewer
    cancelled jobs than stopped tries whose job must be cancelled, an unplanned failure).

    :param plan: the stop plan the soak ran with.
    :param retries: task id -> its retries (a stopped try with a retry left is re-attached, not cancelled).
    """
    problems = list(report.failures)
    if report.jobs_submitted < report.jobs_requested:
        problems.append(f"only {report.jobs_submitted} jobs submitted")
    if report.results_checked == 0:
        problems.append("no download checked")
    if report.faults_injected == 0 or len(report.faults) < 3:
        problems.append(f"faults injected: {report.faults}")
    if report.stops_applied != report.stops_planned:
        problems.append(f"stops missed: {report.stops_missed}")
    kept = sum(1 for (_, task), kind in plan.items() if kind in (SIGKILL, WORKER_LOST) and retries[task])
    kept += sum(1 for kind in plan.values() if kind in HARMLESS_STOPS)
    if report.jobs_cancelled < len(plan) - kept:
        problems.append(f"{report.jobs_cancelled} jobs cancelled, fewer than the {len(plan) - kept} stopped tries")
    if report.unplanned_failures:
        problems.append(f"unplanned failures {report.unplanned_failures}, logs in {report.failure_logs}")
    return problems


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{key} {value}" for key, value in sorted(counts.items())) or "none"


class SimulatorProcess:
    """The AQuA simulator in its own process group, driven over its ``/_simulator/`` endpoints."""

    def __init__(self, log_path: Path, seed: int) -> None:
        self.client_id = "soak-client"
        self.client_secret = secrets.token_hex(16)
        self._log_path = log_path
        self._seed = seed
        self.process: subprocess.Popen | None = None
        self.base_url = ""

    def start(self) -> None:
        log = open(self._log_path, "wb")  # noqa: SIM115 - the child holds it; closed when it ends
        command = [sys.executable, "-m", "airflow_provider_zuora_aqua.simulator", "--host", "127.0.0.1"]
        command += ["--job-seconds", "3600", "--seed", str(self._seed)]
        command += ["--client-id", self.client_id, "--client-secret", self.client_secret]
        command += ["--no-sample-data"]  # generated rows, as the soak figures were measured with
        self.process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
        log.close()
        self.base_url = wait_for(self._first_line, timeout=60, interval=0.1, what="the simulator's base URL")

    def _first_line(self) -> str:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"the simulator exited: {self._log_path.read_text(errors='replace')[-2000:]}")
        first = self._log_path.read_text(errors="replace").partition("\n")
        return first[0].strip() if first[1] else ""

    def stop(self) -> None:
        if self.process is not None:
            stop_process_group(self.process, grace=5)

    def control(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.base_url}/_simulator/{path}", data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as answer:
            return json.loads(answer.read() or b"null")

    def jobs(self) -> list[dict[str, Any]]:
        return self.control("GET", "jobs")

    def requests(self) -> list[dict[str, Any]]:
        return self.control("GET", "requests")

    def add_fault(self, rule: dict[str, Any]) -> None:
        self.control("POST", "faults", rule)

    def finish(self, job_id: str, status: str = "completed") -> None:
        self.control("POST", f"jobs/{job_id}/finish", {"status": status})


@dataclass
class StopState:
    """A planned stop of one task instance's first try and what became of it."""

    kind: str
    due_at: float | None = None
    applied: bool = False
    missed: str | None = None


class SoakDriver:
    """
    One step at a time: read the runs, task instances, jobs and request log; stop the planned
    tries; finish the jobs that unstopped tries watch.
    """

    def __init__(
        self,
        stack: AirflowStack,
        sim: SimulatorProcess,
        run_ids: list[str],
        plan: dict[tuple[str, str], str],
        rng: random.Random,
        log: Callable[[str], None],
    ) -> None:
        self.stack = stack
        self.sim = sim
        self.run_ids = run_ids
        self.tasks = {task.task_id: task for task in SOAK_TASKS}
        self.stops = {key: StopState(kind) for key, kind in plan.items()}
        self.rng = rng
        self.log = log
        self.run_states: dict[str, str] = {}
        self.tis: dict[tuple[str, str], dict[str, Any]] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.requests: list[dict[str, Any]] = []
        #: job id -> the tries of the job's own task instance that polled it
        self.watchers: dict[str, set[int]] = {}
        #: Celery workers killed by a ``worker_lost`` stop, and when (UTC): their tries were lost with them.
        self.lost_workers: list[tuple[str, datetime]] = []
        #: The tries seen running on those workers when they were killed.
        self.lost_tries: set[TryId] = set()
        self.finish_due: dict[str, float] = {}
        self.finished: set[str] = set()
        self._ended_runs_read: set[str] = set()

    # -- reading --------------------------------------------------------------------------
    def refresh(self, *, every_run: bool = False) -> None:
        """Task instances first, then jobs: a job seen running after its task ended is really left behind."""
        self.run_states = {run["dag_run_id"]: run["state"] for run in self._dag_runs()}
        for run_id, state in self.run_states.items():
            if state == "queued" or (run_id in self._ended_runs_read and not every_run):
                continue
            status, body = self.stack.api("GET", f"/dags/{SOAK_DAG_ID}/dagRuns/{run_id}/taskInstances?limit=100")
            if status != 200:
                continue
            for ti in body["task_instances"]:
                self.tis[(run_id, ti["task_id"])] = ti
            if state in ENDED_RUN:
                self._ended_runs_read.add(run_id)
        self.jobs = {job["id"]: job for job in self.sim.jobs()}
        self.requests = self.sim.requests()
        for entry in self.requests:
            job = self.jobs.get(_polled_job_id(entry) or "")
            poller = try_from_track_id(entry["headers"].get("Zuora-Track-Id"))
            owner = try_from_job_name(job.get("name")) if job else None
            # A DAG-level callback polls every job of the run with its own task's Track-Id: not a watcher.
            if poller and owner and poller[:2] == owner[:2]:
                self.watchers.setdefault(job["id"], set()).add(poller.try_number)

    def _dag_runs(self) -> list[dict[str, Any]]:
        runs: list[dict[str, Any]] = []
        while True:
            status, body = self.stack.api("GET", f"/dags/{SOAK_DAG_ID}/dagRuns?limit=100&offset={len(runs)}")
            if status != 200:
                raise OSError(f"listing the dag runs answered {status}: {str(body)[:200]}")
            runs += body["dag_runs"]
            if not body["dag_runs"] or len(runs) >= body["total_entries"]:
                return runs

    def job_of(self, owner: TryId) -> dict[str, Any] | None:
        return next((job for job in self.jobs.values() if try_from_job_name(job.get("name")) == owner), None)

    def all_runs_ended(self) -> bool:
        return all(self.run_states.get(run_id) in ENDED_RUN for run_id in self.run_ids)

    # -- acting ---------------------------------------------------------------------------
    def step(self) -> None:
        self.refresh()
        now = time.monotonic()
        for key, stop in self.stops.items():
            if not stop.applied and stop.missed is None:
                self._advance_stop(key, stop, now)
        self._finish_watched_jobs(now)

    def _advance_stop(self, key: tuple[str, str], stop: StopState, now: float) -> None:
        run_id, task_id = key
        ti = self.tis.get(key)
        if ti is None:
            return
        if stop.kind == WORKER_LOST and TryId(run_id, task_id, STOPPED_TRY) in self.lost_tries:
            stop.applied = True  # lost with the worker another stop killed: what this stop does
            self.log(f"stop: {stop.kind} {run_id}.{task_id} (with another worker_lost)")
            return
        # A harmless stop may hit a later try (the first may have been lost with a worker).
        later_try = ti.get("try_number", 0) > STOPPED_TRY and stop.kind not in HARMLESS_STOPS
        if later_try or ti.get("state") in ENDED_TASK:
            stop.missed = f"{run_id}.{task_id}: {stop.kind} not applied, the try ended {ti.get('state')}"
            if stop.kind == EXECUTION_TIMEOUT and self.job_of(TryId(run_id, task_id, STOPPED_TRY)):
                # Never finished, the job could only end the try by its execution_timeout (or an earlier error).
                stop.applied, stop.missed = True, None
            return
        job = self.job_of(TryId(run_id, task_id, STOPPED_TRY)) or self.job_of(TryId(run_id, task_id, ti["try_number"]))
        if job is None or stop.kind == EXECUTION_TIMEOUT:
            return
        state = ti.get("state")
        if stop.kind in (SIGTERM, SIGKILL, WORKER_LOST):
            ready = state == "running"
        else:
            ready = state == "deferred"
        if not ready:
            return
        if stop.due_at is None:
            stop.due_at = now + self.rng.uniform(*STOP_DELAY)
        if now >= stop.due_at:
            self._apply(key, stop, ti)

    def _apply(self, key: tuple[str, str], stop: StopState, ti: dict[str, Any]) -> None:
        run_id, task_id = key
        if stop.kind == MARK_FAILED:
            status, body = self.stack.api(
                "PATCH", f"/dags/{SOAK_DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}", {"new_state": "failed"}
            )
            if status != 200:
                stop.missed = f"{run_id}.{task_id}: mark failed answered {status}: {str(body)[:200]}"
                return
        elif stop.kind in (WORKER_LOST, TRIGGERER_LOST):
            if not isinstance(self.stack, CeleryStack):
                stop.missed = f"{run_id}.{task_id}: {stop.kind} needs the CeleryExecutor"
                return
            lost = self.stack.worker_of(ti) if stop.kind == WORKER_LOST else self.stack.triggerer_of(ti)
            if lost is None or lost not in self.stack.processes:
                return  # not (yet) on a worker or triggerer of ours: the next step looks again
            self._lose(self.stack, lost, stop.kind)
        else:
            pid = ti.get("pid")
            if not pid or not self._is_our_task_process(pid):
                return  # the next step reads the task instance again
            try:
                os.kill(pid, signal.SIGTERM if stop.kind == SIGTERM else signal.SIGKILL)
            except ProcessLookupError:
                return
        stop.applied = True
        self.log(f"stop: {stop.kind} {run_id}.{task_id}")

    def _lose(self, stack: CeleryStack, name: str, kind: str) -> None:
        """Kill the worker or triggerer ``name`` with its whole process tree, then start it again."""
        if kind == WORKER_LOST:
            self.lost_tries |= {
                TryId(run_id, task_id, ti.get("try_number", 0))
                for (run_id, task_id), ti in self.tis.items()
                if ti.get("state") == "running" and stack.worker_of(ti) == name
            }
        stack.kill(name)
        if kind == WORKER_LOST:
            self.lost_workers.append((name, datetime.now(timezone.utc)))
            stack.start_worker(name)
        else:
            stack.start_triggerer_named(name)

    def _is_our_task_process(self, pid: int) -> bool:
        """Only signal a process that descends from one this soak started (the scheduler, a Celery worker)."""
        ours = {process.pid for process in self.stack.processes.values()}
        try:
            return any(parent.pid in ours for parent in psutil.Process(pid).parents())
        except psutil.Error:
            return False

    def _finish_watched_jobs(self, now: float) -> None:
        due = []
        for job_id, job in self.jobs.items():
            owner = try_from_job_name(job.get("name"))
            watchers = self.watchers.get(job_id)
            if owner is None or not watchers or job.get("status") not in RUNNING_JOB:
                continue
            watching = max(watchers)
            key = (owner.run_id, owner.task_id)
            stop = self.stops.get(key)
            if stop is not None and stop.kind in HARMLESS_STOPS and not (stop.applied or stop.missed):
                continue  # not yet: the stop comes first
            if stop is not None and stop.kind not in HARMLESS_STOPS and watching == STOPPED_TRY:
                continue  # the job of a try picked for a stop: the provider must end it
            if TryId(owner.run_id, owner.task_id, watching) in self.lost_tries:
                continue  # lost with its worker: the provider must end it
            ti = self.tis.get(key, {})
            if ti.get("state") not in ACTIVE_TASK or ti.get("try_number") != watching:
                self.finish_due.pop(job_id, None)  # never finish a job whose try has ended
                continue
            self.finish_due.setdefault(job_id, now + self.rng.uniform(*FINISH_DELAY))
            if now >= self.finish_due[job_id]:
                due.append(job_id)
        if not due:
            return
        # Read again just before: a job the provider ended meanwhile must keep its ending.
        running = {job["id"] for job in self.sim.jobs() if job.get("status") in RUNNING_JOB}
        for job_id in due:
            if job_id in running:
                self.sim.finish(job_id)
                self.finished.add(job_id)
            self.finish_due.pop(job_id, None)


def _polled_job_id(entry: dict[str, Any]) -> str | None:
    if entry.get("route") != "get_job":
        return None
    return entry["path"].rstrip("/").rsplit("/", 1)[-1]


# -- accounting ---------------------------------------------------------------------------
def count_csv_records(path: Path, file_format: str) -> int:
    """Data records of a result file (header excluded, blank lines skipped), read with ``csv``."""
    if file_format == "zip":
        with zipfile.ZipFile(path) as archive:
            return sum(
                _records(io.TextIOWrapper(archive.open(name), "utf-8", newline="")) for name in archive.namelist()
            )
    opener = gzip.open if file_format == "gzip" else open
    with opener(path, "rt", encoding="utf-8", newline="") as text:
        return _records(text)


def _records(text: io.TextIOBase) -> int:
    rows = sum(1 for row in csv.reader(text) if row)
    return max(0, rows - 1)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_download(folder: Path, xcom: Any, jobs: dict[str, dict[str, Any]]) -> str | None:
    """Why the result of one successful download task is lost, or None if it is all there."""
    manifest_path = folder / "_manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        return f"no readable manifest: {exc}"
    if isinstance(xcom, str):
        try:
            xcom = json.loads(xcom)
        except ValueError:
            pass
    if xcom != manifest:
        return "the XCom return_value differs from _manifest.json"
    job = jobs.get(str(manifest.get("job_id")))
    if job is None or job.get("status") != "completed":
        return f"manifest job {manifest.get('job_id')} is {None if job is None else job.get('status')} at the simulator"
    entries = manifest.get("files") or []
    expected = {}
    for batch in job.get("batches") or []:
        if batch.get("status") == "completed":
            for file_id in batch.get("segments") or [batch.get("fileId")]:
                expected[file_id] = batch
    if sorted(entry.get("file_id") for entry in entries) != sorted(expected):
        return f"manifest files {sorted(e.get('file_id') for e in entries)} are not the job's {sorted(expected)}"
    per_batch: Counter[str] = Counter()
    for entry in entries:
        path = Path(urllib.parse.unquote(urllib.parse.urlsplit(entry["uri"]).path))
        if path.resolve().parent != folder.resolve():
            return f"{entry['uri']} is not in {folder}"
        if not path.is_file() or path.stat().st_size != entry.get("bytes"):
            return f"{path.name} is missing or not {entry.get('bytes')} bytes"
        if _sha256(path) != entry.get("sha256"):
            return f"{path.name} does not match its sha256"
        records = count_csv_records(path, str(job.get("format", "")).lower())
        if records != entry.get("records"):
            return f"{path.name} holds {records} records, the manifest says {entry.get('records')}"
        per_batch[expected[entry["file_id"]]["batchId"]] += records
    for batch in {batch["batchId"]: batch for batch in expected.values()}.values():
        if per_batch[batch["batchId"]] != batch.get("recordCount"):
            counted, expected_count = per_batch[batch["batchId"]], batch.get("recordCount")
            return f"batch {batch.get('name')} has {counted} records, its recordCount is {expected_count}"
    return None


def unplanned_failed_tries(driver: SoakDriver) -> list[tuple[str, str, int]]:
    """
    Every try that failed although no stop was planned for it: ``(run_id, task_id, try_number)``.

    A failed try that a retry made good is hidden in the final state, so every task instance
    that failed or ran more than once has its tries read.
    """
    failed: list[tuple[str, str, int]] = []
    for (run_id, task_id), ti in sorted(driver.tis.items()):
        if ti.get("state") != "failed" and (ti.get("try_number") or 0) <= 1:
            continue
        status, body = driver.stack.api("GET", f"/dags/{SOAK_DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}/tries")
        tries = body.get("task_instances", []) if status == 200 and isinstance(body, dict) else [ti]
        stop = driver.stops.get((run_id, task_id))
        for one in tries:
            number = one.get("try_number")
            if one.get("state") not in FAILED_TRY:
                continue
            if stop is not None and stop.kind not in HARMLESS_STOPS and number == STOPPED_TRY:
                continue
            if _lost_with_its_worker(one, getattr(driver, "lost_workers", [])):
                continue
            failed.append((run_id, task_id, number))
    return failed


def _lost_with_its_worker(one_try: dict[str, Any], lost_workers: list[tuple[str, datetime]]) -> bool:
    """Whether the try ran on a Celery worker that a ``worker_lost`` stop killed while the try ran."""
    started = _utc(one_try.get("start_date"))
    return started is not None and any(
        one_try.get("hostname") == name and started <= killed_at for name, killed_at in lost_workers
    )


def _utc(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def keep_failure_logs(home: AirflowHome, tries: Iterable[tuple[str, str, int]], keep_in: Path) -> Path | None:
    """Copy the task logs (trigger logs included) of ``tries`` to ``keep_in``; None when there are none."""
    kept = False
    for run_id, task_id, try_number in tries:
        folder = home.root / "logs" / f"dag_id={SOAK_DAG_ID}" / f"run_id={run_id}" / f"task_id={task_id}"
        for log_file in sorted(folder.glob(f"attempt={try_number}.log*")):
            target = keep_in / run_id / task_id / log_file.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(log_file, target)
            kept = True
    return keep_in if kept else None


def account(report: Report, driver: SoakDriver, downloads: Path) -> list[tuple[str, str, int]]:
    """Fill the report's figures from the final reads of the driver; return the unplanned failed tries."""
    requests, jobs = driver.requests, driver.jobs
    report.requests = len(requests)
    report.faults = dict(Counter(entry["fault"] for entry in requests if entry.get("fault")))
    submits = [entry for entry in requests if entry.get("route") == "submit"]
    report.submit_requests = len(submits)
    tries = {try_from_track_id(entry["headers"].get("Zuora-Track-Id")) for entry in submits} - {None}
    report.task_tries = len(tries)

    statuses = Counter(job.get("status") for job in jobs.values())
    report.jobs_submitted = len(jobs)
    report.jobs_completed = statuses["completed"]
    report.jobs_cancelled = statuses["cancelled"]
    report.jobs_running_at_end = sum(statuses[status] for status in RUNNING_JOB)
    report.jobs_other_endings = report.jobs_submitted - report.jobs_completed - report.jobs_cancelled
    report.jobs_other_endings -= report.jobs_running_at_end
    report.jobs_finished_by_soak = len(driver.finished)

    owners = Counter(try_from_job_name(job.get("name")) for job in jobs.values())
    for owner, count in owners.items():
        # A later try may send an earlier try's recorded submit (its key and body) again.
        sent = owner is not None and any(
            (one.run_id, one.task_id) == owner[:2] and one.try_number >= owner.try_number for one in tries
        )
        if owner is None or not sent:
            report.duplicates.append(f"{count} job(s) named {owner} that no submit's Track-Id names")
            report.duplicate_submits += count
        elif count > 1:
            report.duplicates.append(f"{owner.run_id}.{owner.task_id} try {owner.try_number}: {count} jobs")
            report.duplicate_submits += count - 1

    for job in jobs.values():
        if job.get("status") not in RUNNING_JOB:
            continue
        owner = try_from_job_name(job.get("name"))
        ti = driver.tis.get((owner.run_id, owner.task_id), {}) if owner else {}
        if owner is None or ti.get("state") in ENDED_TASK:
            report.orphans.append(f"job {job['id']} ({job.get('name')}) {job.get('status')}; task {ti.get('state')}")
    report.orphaned_jobs = len(report.orphans)

    report.task_instances = dict(Counter(str(ti.get("state")) for ti in driver.tis.values()))
    failed_tries = unplanned_failed_tries(driver)
    report.unplanned_failures = [f"{run_id}.{task_id} try {try_number}" for run_id, task_id, try_number in failed_tries]
    report.stops_planned = dict(Counter(stop.kind for stop in driver.stops.values()))
    report.stops_applied = dict(Counter(stop.kind for stop in driver.stops.values() if stop.applied))
    report.stops_missed = sorted(stop.missed for stop in driver.stops.values() if stop.missed)

    for (run_id, task_id), ti in sorted(driver.tis.items()):
        if ti.get("state") != "success" or not driver.tasks[task_id].download:
            continue
        report.results_checked += 1
        status, xcom = driver.stack.api(
            "GET", f"/dags/{SOAK_DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value"
        )
        value = xcom.get("value") if status == 200 and isinstance(xcom, dict) else None
        reason = check_download(downloads / run_id / task_id, value, jobs)
        if reason:
            report.lost.append(f"{run_id}.{task_id}: {reason}")
    report.results_lost = len(report.lost)
    return failed_tries


# -- the soak -----------------------------------------------------------------------------
def connection_uri(sim: SimulatorProcess) -> str:
    """The soak connection: the simulator, quick retries (0.2 s backoff, 6 retries)."""
    extra = {"retry_backoff": 0.2, "max_retries": 6, "timeout": 10}
    return json.dumps(
        {
            "conn_type": "zuora_aqua",
            "host": sim.base_url,
            "login": sim.client_id,
            "password": sim.client_secret,
            "extra": extra,
        }
    )


def run_soak(
    *,
    jobs: int = 200,
    seed: int = 1,
    fault_rate: float = 0.2,
    stop_rate: float = 0.2,
    max_minutes: float = 40.0,
    work_dir: Path | None = None,
    template_home: AirflowHome | None = None,
    failure_logs: Path | None = None,
    log: Callable[[str], None] = print,
    executor: str = "local",
    postgres: PostgresServer | None = None,
    template_database: str | None = None,
) -> Report:
    """
    Run the soak (see the module docs) and return its judged report.

    :param jobs: at least this many task instances (one job each, plus retries) are run.
    :param seed: seeds the stop plan, the driver's delays and the simulator's faults.
    :param fault_rate: about this share of the requests gets a fault.
    :param stop_rate: this share of the task instances has its first try stopped.
    :param max_minutes: the bound on wall time; past it the soak stops and fails.
    :param work_dir: where the Airflow home, logs and downloads go (default: a temporary folder, removed after).
    :param template_home: a migrated home to copy the database from (default: migrate a new one;
        ``local`` only).
    :param failure_logs: where the logs of tries that failed without a planned stop are kept
        (default: ``soak-failures-seed<seed>`` in the current folder; created only when there are any).
    :param log: receives progress lines.
    :param executor: ``local`` (LocalExecutor, SQLite, one triggerer) or ``celery`` (the distributed
        stack: CeleryExecutor, Postgres, Redis, two workers, two triggerers).
    :param postgres: ``celery``: the Postgres server to use (default: start one for the soak).
    :param template_database: ``celery``: a migrated database on ``postgres`` to copy (default: migrate a new one).
    """
    if jobs < 1 or not 0.0 <= stop_rate <= 1.0 or max_minutes <= 0:
        raise ValueError("jobs must be >= 1, stop_rate in [0, 1] and max_minutes > 0")
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {sorted(EXECUTORS)}, not {executor!r}")
    started = time.monotonic()
    deadline = started + max_minutes * 60
    report = Report(
        jobs_requested=jobs, seed=seed, fault_rate=fault_rate, stop_rate=stop_rate, executor=EXECUTORS[executor]
    )
    distributed = executor == "celery"
    with tempfile.TemporaryDirectory(prefix="aqua-soak-") as scratch, contextlib.ExitStack() as services:
        root = Path(work_dir or scratch)
        downloads = root / "downloads"
        downloads.mkdir(parents=True, exist_ok=True)
        run_ids = [f"soak-{index:03d}" for index in range(math.ceil(jobs / len(SOAK_TASKS)))]
        plan = plan_stops(run_ids, SOAK_TASKS, stop_rate, random.Random(seed), distributed=distributed)
        sim = SimulatorProcess(root / "simulator.out", seed)
        stack: AirflowStack | None = None
        try:
            sim.start()
            for rule in fault_rules(fault_rate):
                sim.add_fault(rule)
            if distributed:
                stack = _celery_stack(root / "airflow", services, postgres, template_database, sim, downloads)
            else:
                stack = AirflowStack(_home(root / "airflow", template_home, sim, downloads), triggerer=True)
            home = stack.home
            log(f"soak: starting Airflow ({report.executor}) in {home.root}, simulator at {sim.base_url}")
            stack.start()
            stack.wait_for_dag(SOAK_DAG_ID, timeout=300)
            driver = SoakDriver(stack, sim, run_ids, plan, random.Random(seed + 1), log)
            for run_id in run_ids:
                stack.trigger(SOAK_DAG_ID, run_id)
            report.runs_triggered = len(run_ids)
            log(f"soak: {len(run_ids)} runs of {len(SOAK_TASKS)} tasks triggered; {len(plan)} stops planned")
            report.timed_out = not _drive(driver, deadline, log)
            if not report.timed_out:
                _wait_for_callbacks(driver, deadline)
            driver.refresh(every_run=True)
            report.runs_ended = sum(driver.run_states.get(run_id) in ENDED_RUN for run_id in run_ids)
            account(report, driver, downloads)
            kept = keep_failure_logs(
                home, unplanned_failed_tries(driver), failure_logs or Path(f"soak-failures-seed{seed}")
            )
            report.failure_logs = str(kept.resolve()) if kept else None
        finally:
            if stack is not None:
                _stop_stack(stack)
            sim.stop()
    report.wall_seconds = time.monotonic() - started
    report.judge()
    return report


def _soak_env(sim: SimulatorProcess, downloads: Path) -> dict[str, str]:
    return {f"AIRFLOW_CONN_{SOAK_CONN_ID.upper()}": connection_uri(sim), DOWNLOADS_ENV: str(downloads)}


def _celery_stack(
    root: Path,
    services: contextlib.ExitStack,
    postgres: PostgresServer | None,
    template_database: str | None,
    sim: SimulatorProcess,
    downloads: Path,
) -> CeleryStack:
    """The distributed stack on a database of its own; servers it starts stop with ``services``."""
    if postgres is None:
        postgres = services.enter_context(PostgresServer())
    redis = services.enter_context(RedisServer())
    database = postgres.create_database(f"soak_{secrets.token_hex(4)}", template=template_database)
    home = postgres_home(postgres, database, root, DAGS_FOLDER, **_soak_env(sim, downloads))
    if template_database is None:
        home.migrate()
    return CeleryStack(home, redis)


def _home(root: Path, template: AirflowHome | None, sim: SimulatorProcess, downloads: Path) -> AirflowHome:
    env = _soak_env(sim, downloads)
    if template is not None:
        return replace(template.copy_to(root, **env), dags_folder=DAGS_FOLDER)
    home = AirflowHome(root, DAGS_FOLDER, env)
    home.migrate()
    return home


def _drive(driver: SoakDriver, deadline: float, log: Callable[[str], None]) -> bool:
    """Step until every run ended (True) or the deadline passed (False)."""
    next_progress = time.monotonic() + PROGRESS_SECONDS
    while time.monotonic() < deadline:
        try:
            driver.step()
        except (OSError, urllib.error.URLError, KeyError, ValueError) as exc:
            log(f"soak: a step failed ({exc!r}); trying again")
        if driver.all_runs_ended():
            return True
        if time.monotonic() >= next_progress:
            next_progress += PROGRESS_SECONDS
            states = Counter(driver.run_states.get(run_id, "not created") for run_id in driver.run_ids)
            applied = sum(stop.applied for stop in driver.stops.values())
            log(f"soak: runs {_counts(dict(states))}; jobs {len(driver.jobs)}; stops applied {applied}")
        time.sleep(STEP_SECONDS)
    return False


def _wait_for_callbacks(driver: SoakDriver, deadline: float) -> None:
    """Give the DAG-level failure callbacks of the last runs time to cancel their jobs."""
    grace_end = min(deadline, time.monotonic() + CALLBACK_GRACE_SECONDS)
    while time.monotonic() < grace_end:
        if not any(job.get("status") in RUNNING_JOB for job in driver.sim.jobs()):
            return
        time.sleep(2)


def _stop_stack(stack: AirflowStack) -> None:
    """Stop the stack's process groups, then any task process of theirs that has its own group."""
    descendants = []
    for process in stack.processes.values():
        try:
            descendants += psutil.Process(process.pid).children(recursive=True)
        except psutil.Error:
            pass
    stack.stop()
    for child in descendants:
        try:
            child.kill()
        except psutil.Error:
            pass


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.soak", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--executor",
        choices=sorted(EXECUTORS),
        default="local",
        help="local: LocalExecutor, SQLite (default); celery: CeleryExecutor, Postgres, Redis, 2 workers, 2 triggerers",
    )
    parser.add_argument("--jobs", type=int, default=200, help="task instances to run, one job each (default 200)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the stop plan, delays and faults (default 1)")
    parser.add_argument("--fault-rate", type=float, default=0.2, help="share of requests faulted (default 0.2)")
    parser.add_argument("--stop-rate", type=float, default=0.2, help="share of task instances stopped (default 0.2)")
    parser.add_argument("--max-minutes", type=float, default=40.0, help="wall-time bound (default 40)")
    parser.add_argument("--json", type=Path, default=None, help="also write the report as JSON to this file")
    parser.add_argument(
        "--failure-logs",
        type=Path,
        default=None,
        help="keep the logs of tries that failed without a planned stop here (default soak-failures-seed<N>)",
    )
    parser.add_argument("--keep", type=Path, default=None, help="keep the Airflow home, logs and downloads here")
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so that the process groups started here are stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    report = run_soak(
        jobs=args.jobs,
        seed=args.seed,
        fault_rate=args.fault_rate,
        stop_rate=args.stop_rate,
        max_minutes=args.max_minutes,
        work_dir=args.keep,
        failure_logs=args.failure_logs,
        log=lambda line: print(line, flush=True),
        executor=args.executor,
    )
    print(report.table())
    if args.json is not None:
        args.json.write_text(json.dumps(report.to_json(), indent=2))
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
