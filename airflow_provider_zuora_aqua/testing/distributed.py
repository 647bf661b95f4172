"""
A distributed Airflow for tests: PostgreSQL, Redis and the CeleryExecutor, all on 127.0.0.1.

Runs what teams that outgrow one machine run: a Postgres metadata database, a Redis broker,
two Celery workers and two triggerers beside the scheduler, DAG processor and API server, with
detection timeouts lowered so that a lost worker or triggerer is noticed in seconds::

    with PostgresServer() as postgres, RedisServer() as redis:
        template = migrated_template(postgres, tmp_path / "template", dags_folder)
        home = postgres_home(postgres, postgres.create_database("scenarios", template), tmp_path / "home", dags_folder)
        with CeleryStack(home, redis) as stack:
            stack.wait_for_dag("my_dag")
            stack.trigger("my_dag", "run-1")
            ti = stack.wait_for_task_state("my_dag", "run-1", "export", {"running"})
            stack.kill(stack.worker_of(ti))  # the worker's whole process tree, SIGKILL

Needs Debian's ``postgresql`` and ``redis-server`` packages (``bash .ci/services``) and
``apache-airflow-providers-celery``, ``psycopg2`` and ``asyncpg`` (the ``distributed`` extra).
PostgreSQL refuses to run as root: as root, its server binaries run as the ``postgres`` user
(``runuser``) in a folder made for it under the system's temporary folder. Standard library only.
"""

from __future__ import annotations

import atexit
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from airflow_provider_zuora_aqua.testing.airflow_env import (
    FULL_STACK_ENV,
    AirflowHome,
    AirflowStack,
    free_port,
    stop_process_group,
    wait_for,
)

#: Set per process: what :func:`process_hostname` answers, so that each worker and triggerer has its own name.
HOSTNAME_ENV = "AQUA_STACK_HOSTNAME"
POSTGRES_USER = "airflow"
_POSTGRES_ROOT = Path("/usr/lib/postgresql")
_SYSTEM_POSTGRES_USER = "postgres"


def process_hostname() -> str:
    """
    The host name Airflow records for this process (``[core] hostname_callable``).

    All processes of a test stack share one machine; each worker and triggerer of a
    :class:`CeleryStack` gets its own name through ``$AQUA_STACK_HOSTNAME`` instead, so that a
    task instance's ``hostname`` names its worker and a triggerer's job names its triggerer.
    """
    return os.environ.get(HOSTNAME_ENV) or socket.getfqdn()


def postgres_bin_dir() -> Path | None:
    """The folder of PostgreSQL's server binaries (``initdb``, ``pg_ctl``): Debian's newest, else on PATH."""
    versions = sorted(
        (path for path in _POSTGRES_ROOT.glob("*/bin") if (path / "initdb").is_file()),
        key=lambda path: int(path.parent.name) if path.parent.name.isdigit() else 0,
    )
    if versions:
        return versions[-1]
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def missing_services() -> list[str]:
    """The binaries a distributed stack needs that this machine lacks (empty: it can run)."""
    missing = []
    bin_dir = postgres_bin_dir()
    if bin_dir is None or not all((bin_dir / name).is_file() for name in ("initdb", "pg_ctl", "psql")):
        missing.append("PostgreSQL (initdb, pg_ctl, psql)")
    if shutil.which("redis-server") is None:
        missing.append("redis-server")
    return missing


def session_pids(session: int) -> list[int]:
    """Every live process of the session ``session`` (its leader's pid), read from ``/proc``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name (field 2) may hold spaces and parentheses: count fields after its closing one.
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[3]) == session and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


def signal_session(session: int, signum: int) -> list[int]:
    """Send ``signum`` to every process of the session; return their pids."""
    pids = session_pids(session)
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass
    return pids


class PostgresServer:
    """
    A PostgreSQL server of its own on a free port of 127.0.0.1, trust authentication, user ``airflow``.

    Its data folder is made with :func:`tempfile.mkdtemp` in the system's temporary folder (the
    ``postgres`` user cannot enter pytest's folders when the tests run as root) and removed by
    :meth:`stop`. Durability is off (``fsync``): it is a test database.
    """

    def __init__(self, bin_dir: Path | None = None) -> None:
        found = bin_dir or postgres_bin_dir()
        if found is None:
            raise FileNotFoundError("PostgreSQL's initdb was not found: run `bash .ci/services`")
        self.bin_dir: Path = found
        self.port = 0
        self.root: Path | None = None

    @property
    def data_dir(self) -> Path:
        if self.root is None:
            raise RuntimeError("the PostgreSQL server is not started")
        return self.root / "data"

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _server_command(self, *args: str) -> list[str]:
        # PostgreSQL refuses to run as root: run its server binaries as the user the package made.
        prefix = ["runuser", "-u", _SYSTEM_POSTGRES_USER, "--"] if os.geteuid() == 0 else []
        return prefix + [str(self.bin_dir / args[0]), *args[1:]]

    def _run_server_binary(self, *args: str, timeout: float = 120) -> None:
        result = subprocess.run(
            self._server_command(*args),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # the postmaster pg_ctl leaves behind is in no session of ours
        )
        if result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({result.returncode}): {result.stderr or result.stdout}")

    def start(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="aqua-postgres-"))
        if os.geteuid() == 0:
            shutil.chown(self.root, _SYSTEM_POSTGRES_USER, _SYSTEM_POSTGRES_USER)
        self.port = free_port()
        self._run_server_binary(
            "initdb", "-D", str(self.data_dir), "-A", "trust", "-U", POSTGRES_USER, "-E", "UTF8", "-N"
        )
        options = " ".join(
            (
                f"-p {self.port}",
                f"-k {self.root}",
                "-c listen_addresses=127.0.0.1",
                "-c max_connections=300",
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
            )
        )
        atexit.register(self.stop)
        self._run_server_binary(
            "pg_ctl", "-D", str(self.data_dir), "-o", options, "-l", str(self.root / "postgres.log"), "-w", "start"
        )

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove its folder; nothing happens when it is not running."""
        if self.root is None:
            return
        root, self.root = self.root, None
        atexit.unregister(self.stop)
        pid_file = root / "data" / "postmaster.pid"
        if pid_file.exists():
            command = self._server_command("pg_ctl", "-D", str(root / "data"), "-m", "fast", "-w", "stop")
            try:
                subprocess.run(command, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
            except subprocess.TimeoutExpired:
                pass
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
            except (ProcessLookupError, ValueError, OSError):
                pass
        shutil.rmtree(root, ignore_errors=True)

    def url(self, database: str, driver: str = "postgresql+psycopg2") -> str:
        """The SQLAlchemy URL of ``database`` (``driver`` ``db+postgresql`` for Celery's result backend)."""
        return f"{driver}://{POSTGRES_USER}@127.0.0.1:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> list[list[str]]:
        """Run ``sql`` with ``psql``; return the rows of its last statement, as text."""
        result = subprocess.run(
            [str(self.bin_dir / "psql"), "-X", "-q", "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1"]
            + ["-h", "127.0.0.1", "-p", str(self.port), "-U", POSTGRES_USER, "-d", database, "-c", sql],
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql failed ({result.returncode}): {result.stderr}")
        return [line.split("\t") for line in result.stdout.splitlines() if line]

    def create_database(self, name: str, template: str | None = None) -> str:
        """Create ``name``, a copy of ``template`` if given (no session may be connected to it); return ``name``."""
        copy = f' TEMPLATE "{template}"' if template else ""
        self.psql(f'CREATE DATABASE "{name}"{copy}')
        return name


class RedisError(RuntimeError):
    """Redis answered a command with an error."""


class RedisServer:
    """``redis-server`` on a free port of 127.0.0.1, in its own session, persisting nothing."""

    def __init__(self) -> None:
        self.port = 0
        self.root: Path | None = None
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server was not found: run `bash .ci/services`")
        self.root = Path(tempfile.mkdtemp(prefix="aqua-redis-"))
        self.port = free_port()
        command = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        command += ["--dir", str(self.root), "--logfile", str(self.root / "redis.log")]
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        atexit.register(self.stop)
        wait_for(self._answers, timeout=30, interval=0.1, what="redis-server answering PING")

    def _answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"redis-server exited with {self.process.returncode}")
        try:
            return self.command("PING") == "PONG"
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            atexit.unregister(self.stop)
            stop_process_group(self.process, grace=5)
            self.process = None
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def command(self, *args: str | bytes | int) -> Any:
        """Send one command (RESP2) and return its answer: str, int, bytes, None or a list of them."""
        parts = [arg if isinstance(arg, bytes) else str(arg).encode() for arg in args]
        request = b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(part), part) for part in parts)
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(request)
            with sock.makefile("rb") as reader:
                return _read_reply(reader)


def _read_reply(reader: Any) -> Any:
    line = reader.readline()
    if not line.endswith(b"\r\n"):
        raise OSError("redis closed the connection")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RedisError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        return None if size < 0 else reader.read(size + 2)[:-2]
    if kind == b"*":
        count = int(rest)
        return None if count < 0 else [_read_reply(reader) for _ in range(count)]
    raise OSError(f"unexpected answer from redis: {line!r}")


def postgres_home(
    postgres: PostgresServer, database: str, root: Path, dags_folder: Path, **extra_env: str
) -> AirflowHome:
    """An Airflow home whose metadata database is ``database`` on ``postgres``."""
    env = {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": postgres.url(database), **extra_env}
    root.mkdir(parents=True, exist_ok=True)
    return AirflowHome(root, dags_folder, env)


def migrated_template(postgres: PostgresServer, root: Path, dags_folder: Path, name: str = "airflow_template") -> str:
    """
    Create and migrate the database ``name`` once (``airflow db migrate`` takes seconds); each
    stack then starts from a copy: ``postgres.create_database(..., template=name)``.
    """
    postgres.create_database(name)
    postgres_home(postgres, name, root, dags_folder).migrate()
    return name


#: The stack's settings: LocalExecutor's, then Celery's, detection in seconds (Airflow's defaults in comments).
CELERY_STACK_ENV = {
    **FULL_STACK_ENV,
    "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
    "AIRFLOW__CORE__PARALLELISM": "8",
    "AIRFLOW__CORE__HOSTNAME_CALLABLE": f"{__name__}.process_hostname",
    "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
    "AIRFLOW__CELERY__SYNC_PARALLELISM": "1",
    # Celery's own default for Redis, said out loud (a message not acked in this time is redelivered).
    "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "86400",
    # A worker that stops heartbeating fails its task instances after 10 s (default 300 s, checked every 10 s).
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "10",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "1",
    # A triggerer that stops heartbeating (every 1 s; default 5 s) loses its triggers after 5 s (default 30 s).
    "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
    "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "5",
    "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD": "10",
    "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "10",
    "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "120",
    "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT_CHECK_INTERVAL": "10",
}


class CeleryStack(AirflowStack):
    """
    API server, scheduler, DAG processor, Celery workers and triggerers on 127.0.0.1: CeleryExecutor,
    Redis broker, Postgres metadata database and result backend.

    :param home: a home on Postgres (:func:`postgres_home`) whose database is migrated.
    :param redis: the broker.
    :param workers: Celery workers, named ``worker-1``, ``worker-2``...: their celery host names
        and the ``hostname`` of the task instances they run.
    :param triggerers: triggerers, named ``triggerer-1``...: the ``hostname`` of their jobs.
    :param concurrency: task slots of each worker.

    Process names (keys of :attr:`processes`) are those names, ``api-server``, ``scheduler`` and
    ``dag-processor``. Each runs in its own session: :meth:`kill` ends a whole process tree.
    """

    stack_env = CELERY_STACK_ENV

    def __init__(
        self, home: AirflowHome, redis: RedisServer, *, workers: int = 2, triggerers: int = 2, concurrency: int = 2
    ) -> None:
        database_url = home.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        if not database_url.startswith("postgresql"):
            raise ValueError(f"the CeleryExecutor needs a Postgres home, not {database_url.split(':')[0]}")
        celery_env = {
            "AIRFLOW__CELERY__BROKER_URL": redis.url(),
            # db+postgresql+psycopg2://: SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3, not installed here.
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + database_url,
        }
        super().__init__(AirflowHome(home.root, home.dags_folder, {**home.extra_env, **celery_env}), triggerer=False)
        self.redis = redis
        self.concurrency = concurrency
        self.worker_names = [f"worker-{index}" for index in range(1, workers + 1)]
        self.triggerer_names = [f"triggerer-{index}" for index in range(1, triggerers + 1)]
        self._starts: dict[str, int] = {}

    def __enter__(self) -> CeleryStack:
        try:
            self.start()
        except BaseException:
            self.stop()  # a stack that failed to start leaves no process behind
            raise
        return self

    def _start_more(self) -> None:
        for name in self.triggerer_names:
            self.start_triggerer_named(name)
        for name in self.worker_names:
            self.start_worker(name)

    def start(self) -> None:
        super().start()
        for name in self.worker_names:
            self.wait_for_worker(name)

    def _spawn_named(self, name: str, *args: str) -> None:
        if name in self.processes and self.processes[name].poll() is None:
            raise RuntimeError(f"{name} already runs")
        self._starts[name] = self._starts.get(name, 0) + 1
        self.processes[name] = self.home.spawn(*args, log_name=self.log_name(name), env={HOSTNAME_ENV: name})

    def log_name(self, name: str, start: int | None = None) -> str:
        """The output file of ``name``'s latest start (or of its ``start``-th), under the home."""
        start = start or self._starts.get(name, 1)
        return f"{name}.out" if start == 1 else f"{name}.{start}.out"

    def start_worker(self, name: str) -> None:
        """Start (or start again) the Celery worker ``name``; :meth:`wait_for_worker` waits for it."""
        concurrency = str(self.concurrency)
        self._spawn_named(
            name,
            "celery",
            "worker",
            "--concurrency",
            concurrency,
            "--skip-serve-logs",
            "--celery-hostname",
            f"{name}@%h",
        )

    def wait_for_worker(self, name: str, timeout: float = 180) -> None:
        """Wait until the worker ``name`` consumes from the broker (Celery logs ``ready.``)."""
        wait_for(
            lambda: " ready." in self.home.read_log(self.log_name(name)),
            timeout=timeout,
            interval=0.5,
            what=f"Celery worker {name}",
        )

    def start_triggerer_named(self, name: str) -> None:
        """Start (or start again) the triggerer ``name``."""
        self._spawn_named(name, "triggerer", "--skip-serve-logs")

    # -- stopping -------------------------------------------------------------------------
    def kill(self, name: str) -> float:
        """
        SIGKILL the whole process tree of ``name`` (a worker: its pool, task supervisors and task
        processes, which have process groups of their own; a triggerer: its trigger runner), as a
        lost machine would. Everything is stopped first, so nothing reports or forks meanwhile.
        Return the ``time.time()`` of the kill.
        """
        process = self.processes.pop(name)
        signal_session(process.pid, signal.SIGSTOP)
        killed_at = time.time()
        for _ in range(20):
            if not signal_session(process.pid, signal.SIGKILL):
                break
            time.sleep(0.05)
        process.wait(10)
        return killed_at

    def freeze(self, name: str) -> None:
        """SIGSTOP every process of ``name`` (a stalled machine: it misses its heartbeats)."""
        signal_session(self.processes[name].pid, signal.SIGSTOP)

    def thaw(self, name: str) -> None:
        """SIGCONT every process of ``name``."""
        signal_session(self.processes[name].pid, signal.SIGCONT)

    def stop(self) -> None:
        """Stop every process group, then anything left in their sessions (task processes have groups of their own)."""
        sessions = [process.pid for process in self.processes.values()]
        for pid in sessions:
            signal_session(pid, signal.SIGCONT)  # a frozen process cannot act on SIGTERM
        super().stop()
        for pid in sessions:
            signal_session(pid, signal.SIGKILL)

    # -- who runs what --------------------------------------------------------------------
    def worker_of(self, ti: dict[str, Any]) -> str | None:
        """The worker that runs (or last ran) the task instance ``ti`` (a REST answer)."""
        hostname = ti.get("hostname")
        return hostname if hostname in self.worker_names else None

    def triggerer_of(self, ti: dict[str, Any]) -> str | None:
        """The triggerer that runs the trigger of the deferred task instance ``ti``; None when none has it."""
        triggerer_id = (ti.get("trigger") or {}).get("triggerer_id")
        if triggerer_id is None:
            return None
        status, body = self.api("GET", "/jobs?job_type=TriggererJob&limit=100&order_by=-id")
        if status != 200:
            return None
        for job in body.get("jobs", []):
            if job.get("id") == triggerer_id:
                hostname = job.get("hostname")
                return hostname if hostname in self.triggerer_names else None
        return None

    def wait_for_triggerer_of(
        self, dag_id: str, run_id: str, task_id: str, *, not_on: str | None = None, timeout: float = 120
    ) -> str:
        """Wait until a triggerer (other than ``not_on``) runs the task instance's trigger; return its name."""

        def running_on() -> str | None:
            name = self.triggerer_of(self.task_instance(dag_id, run_id, task_id))
            return name if name and name != not_on else None

        return wait_for(running_on, timeout=timeout, interval=0.5, what=f"a triggerer running {dag_id}.{task_id}")

    def redeliver_unacked(self, ti_id: str | None = None) -> int:
        """
        Put the messages workers hold unacknowledged back on their queue, as Redis does for a
        message older than the visibility timeout (``kombu``'s ``restore_visible``); return how many.

        :param ti_id: only the message of this task instance try (the ``id`` of its REST answer);
            a killed worker's messages stay unacknowledged too.
        """
        entries = self.redis.command("HGETALL", "unacked") or []
        count = 0
        for tag, raw in zip(entries[::2], entries[1::2]):
            message, _exchange, routing_key = json.loads(raw)
            if ti_id is not None and ti_id not in _message_body(message):
                continue
            message.setdefault("headers", {})["redelivered"] = True
            message.setdefault("properties", {}).setdefault("delivery_info", {})["redelivered"] = True
            self.redis.command("HDEL", "unacked", tag)
            self.redis.command("ZREM", "unacked_index", tag)
            self.redis.command("RPUSH", routing_key, json.dumps(message))
            count += 1
        return count

    def queued_messages(self, queue: str = "default") -> int:
        """Messages waiting on a Celery queue of the broker."""
        return int(self.redis.command("LLEN", queue))


def _message_body(message: dict[str, Any]) -> str:
    """The body of a kombu message as text (Celery sends it base64-encoded)."""
    body = message.get("body", "")
    if message.get("properties", {}).get("body_encoding") == "base64":
        return base64.b64decode(body).decode(errors="replace")
    return str(body)
