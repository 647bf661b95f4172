"""
Run real Airflow 3 processes in a throwaway home: ``airflow dags test`` and the full stack.

Used by this project's end-to-end tests, README demo and benchmarks, and usable for your own
DAG tests against :class:`~airflow_provider_zuora_aqua.simulator.AquaSimulator`::

    home = AirflowHome(tmp_path / "home", dags_folder)
    home.migrate()
    with AirflowStack(home, triggerer=True) as stack:
        stack.wait_for_dag("my_dag")
        stack.trigger("my_dag", "run-1")
        stack.wait_for_task_state("my_dag", "run-1", "export", {"success"})

Every server binds to 127.0.0.1; every process runs in its own session so that cleanup kills
its whole group. Airflow runs from the ``airflow`` script beside the current Python.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

AIRFLOW_BIN = str(Path(sys.executable).with_name("airflow"))
#: SQLite answers "database is locked" when the stack's processes write at once.
_DATABASE_BUSY_RETRIES = 5
_DB_FILE = "airflow.db"


class AirflowApiError(RuntimeError):
    """The Airflow REST API refused a call the harness needs."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate: Callable[[], Any], *, timeout: float, interval: float = 0.1, what: str = "condition") -> Any:
    """
    Poll ``predicate`` until it returns a truthy value, and return that value.

    :param predicate: called every ``interval`` seconds.
    :param timeout: seconds after which :class:`TimeoutError` is raised.
    :param interval: seconds between two calls.
    :param what: what is awaited, for the error message.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def stop_process_group(process: subprocess.Popen, grace: float = 10.0) -> None:
    """
    SIGTERM the process group, then SIGKILL what is left after ``grace`` seconds.

    :param process: a process started in its own session (``start_new_session=True``).
    :param grace: seconds the group has to exit after SIGTERM.
    """
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(5)


@dataclass
class AirflowHome:
    """
    A fresh ``AIRFLOW_HOME`` with a migrated SQLite database.

    :param root: the home folder (created by :meth:`migrate`).
    :param dags_folder: the DAGs folder Airflow parses.
    :param extra_env: environment variables set for every Airflow process, e.g. connections.
    """

    root: Path
    dags_folder: Path
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW")}
        env.update(
            {
                "AIRFLOW_HOME": str(self.root),
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__API_AUTH__JWT_SECRET": "e2e-jwt-secret-not-for-production",
                "AIRFLOW__API__SECRET_KEY": "e2e-api-secret-not-for-production",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.root / _DB_FILE}",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_env)
        return env

    def migrate(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        subprocess.run([AIRFLOW_BIN, "db", "migrate"], env=self.env, check=True, capture_output=True, timeout=300)

    def copy_to(self, root: Path, **extra_env: str) -> AirflowHome:
        """A new home that starts from this home's migrated database (migrating takes ~7 s)."""
        root.mkdir(parents=True, exist_ok=True)
        shutil.copy(self.root / _DB_FILE, root / _DB_FILE)
        return AirflowHome(root, self.dags_folder, {**self.extra_env, **extra_env})

    def spawn(self, *args: str, log_name: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start ``airflow <args>`` in its own session, output to ``<root>/<log_name>``."""
        log = open(self.root / log_name, "wb")  # closed by the OS when the process ends
        return subprocess.Popen(
            [AIRFLOW_BIN, *args],
            env={**self.env, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def read_log(self, log_name: str) -> str:
        return (self.root / log_name).read_text(errors="replace")

    def all_logs(self) -> str:
        """Every log file under the home: process output and task logs."""
        texts = []
        for path in sorted(self.root.rglob("*")):
            if path.is_file() and (path.suffix in (".log", ".out") or path.parent.name.startswith("attempt")):
                texts.append(path.read_text(errors="replace"))
        return "\n".join(texts)


FULL_STACK_ENV = {
    "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
    "AIRFLOW__CORE__PARALLELISM": "4",
    "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
    "AIRFLOW__SCHEDULER__JOB_HEARTBEAT_SEC": "1",
    "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.2",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "10",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "1",
    "AIRFLOW__SCHEDULER__TRIGGER_TIMEOUT_CHECK_INTERVAL": "1",
    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "2",
    "AIRFLOW__DAG_PROCESSOR__BUNDLE_REFRESH_CHECK_INTERVAL": "1",
    "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "5",
    "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
}


class AirflowStack:
    """
    API server, scheduler, DAG processor and triggerer (LocalExecutor, SQLite) on loopback.

    :param home: a migrated home; the stack runs in it with its own settings added.
    :param triggerer: also start a triggerer (deferrable tasks need one).

    Subclasses change the executor through :attr:`stack_env` and add processes in :meth:`start`
    (see :class:`~airflow_provider_zuora_aqua.testing.distributed.CeleryStack`).
    """

    #: Settings of every process of the stack (the API server's address is added to them).
    stack_env: dict[str, str] = FULL_STACK_ENV

    def __init__(self, home: AirflowHome, *, triggerer: bool = False) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        stack_env = {
            **self.stack_env,
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": self.base_url,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
        }
        self.home = AirflowHome(home.root, home.dags_folder, {**home.extra_env, **stack_env})
        self.with_triggerer = triggerer
        self.processes: dict[str, subprocess.Popen] = {}
        self._token: str | None = None

    def __enter__(self) -> AirflowStack:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        spawn = self.home.spawn
        self.processes["api-server"] = spawn(
            "api-server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1", log_name="api-server.out"
        )
        self.processes["scheduler"] = spawn("scheduler", "--skip-serve-logs", log_name="scheduler.out")
        self.processes["dag-processor"] = spawn("dag-processor", log_name="dag-processor.out")
        if self.with_triggerer:
            self.start_triggerer()
        self._start_more()
        wait_for(self._api_up, timeout=120, interval=0.5, what="the Airflow API server")

    def _start_more(self) -> None:
        """Start the processes a subclass adds (workers, more triggerers); none here."""

    def start_triggerer(self) -> None:
        self.processes["triggerer"] = self.home.spawn("triggerer", "--skip-serve-logs", log_name="triggerer.out")

    def restart_triggerer(self) -> None:
        """Stop the triggerer with SIGTERM, as a deploy does, and start a new one."""
        stop_process_group(self.processes.pop("triggerer"))
        self.start_triggerer()

    def stop(self) -> None:
        for process in reversed(list(self.processes.values())):
            stop_process_group(process)
        self.processes.clear()

    # -- REST API -------------------------------------------------------------------------
    def _api_up(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base_url}/api/v2/monitor/health", timeout=2):
                return True
        except (urllib.error.URLError, OSError):
            return False

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        """Call the REST API; a "Database error" (SQLite busy under the stack's load) is retried."""
        for _ in range(_DATABASE_BUSY_RETRIES):
            status, answer = self._api_once(method, path, body)
            if not (status == 500 and "Database error" in str(answer)):
                break
            time.sleep(1)
        return status, answer

    def _api_once(self, method: str, path: str, body: dict[str, Any] | None) -> tuple[int, Any]:
        if self._token is None:
            request = urllib.request.Request(f"{self.base_url}/auth/token", method="GET")
            with urllib.request.urlopen(request, timeout=10) as response:
                self._token = json.loads(response.read())["access_token"]
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.base_url}/api/v2{path}",
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self._token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(errors="replace")

    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> None:
        wait_for(
            lambda: self.api("GET", f"/dags/{dag_id}")[0] == 200, timeout=timeout, interval=1, what=f"DAG {dag_id}"
        )
        status, body = self.api("PATCH", f"/dags/{dag_id}", {"is_paused": False})
        if status != 200:
            raise AirflowApiError(f"could not unpause DAG {dag_id}: HTTP {status}: {body}")

    def trigger(self, dag_id: str, run_id: str, conf: dict[str, Any] | None = None) -> None:
        status, body = self.api(
            "POST", f"/dags/{dag_id}/dagRuns", {"dag_run_id": run_id, "logical_date": None, "conf": conf or {}}
        )
        # 409 after a retried "Database error": the first attempt created the run after all.
        if not (status == 200 or (status == 409 and self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")[0] == 200)):
            raise AirflowApiError(f"could not trigger DAG {dag_id} as run {run_id}: HTTP {status}: {body}")

    def task_instance(self, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
        status, body = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}")
        return body if status == 200 else {}

    def wait_for_task_state(
        self, dag_id: str, run_id: str, task_id: str, states: set[str], timeout: float = 120
    ) -> dict[str, Any]:
        return wait_for(
            lambda: (ti := self.task_instance(dag_id, run_id, task_id)) and ti.get("state") in states and ti,
            timeout=timeout,
            interval=0.5,
            what=f"{dag_id}.{task_id} in {sorted(states)}",
        )

    def set_task_state(self, dag_id: str, run_id: str, task_id: str, state: str) -> None:
        status, body = self.api(
            "PATCH", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}", {"new_state": state}
        )
        if status != 200:
            raise AirflowApiError(f"could not set {dag_id}.{task_id} of run {run_id} to {state}: HTTP {status}: {body}")
