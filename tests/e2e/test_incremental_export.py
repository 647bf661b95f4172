"""
AquaIncrementalExportOperator on the full stack (scheduler, DAG processor, triggerer, API server,
LocalExecutor) against the simulator as a tenant with data, in real time: the tenant clock follows
the real clock, ``start`` is an hour back, windows are 15 minutes, the lag 6 seconds.

The tests run in order on one destination and one tenant:

1. a catch-up run SIGKILLed right after its first window's manifest appeared, with three jobs of
   its first wave still running at Zuora: the retry re-attaches to them and goes on;
2. runs with rows inserted, updated, deleted and arriving late in the export index (an
   ``index_delay`` below the lag) between and during runs;
3. what a consumer reads: every ``_manifest.json`` under the destination and the files they list.

All along, a tenth of the submits, job reads and downloads answer ``503``, and the files over
``max_file_bytes`` answer ``403 max-object-size`` (one window holds a burst of rows).

Jobs take 2 seconds, as the ``JobFinisher`` here decides (the simulator's own job time is an
hour): it can hold jobs running, which is how the first test keeps a wave in flight at the kill.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_zuora_aqua.simulator import AquaSimulator
from airflow_provider_zuora_aqua.testing.airflow_env import AirflowHome, AirflowStack, wait_for
from tests.e2e.dags.aqua_e2e_incremental import LAG_SECONDS, MAX_WINDOW, QUERIES
from tests.support.credentials import CLIENT_ID, CLIENT_SECRET, connection_json
from tests.support.e2e import assert_no_secret

pytestmark = pytest.mark.airflow_e2e

UTC = timezone.utc
DAG_ID, TASK_ID = "aqua_e2e_incremental", "changes"
LAG = timedelta(seconds=LAG_SECONDS)
#: Below the lag: a late row is still visible by the time a window that holds it is exported.
INDEX_DELAY = 3.0
JOB_SECONDS = 2.0
#: About 30 records of a window's CSV file: the burst window is split until its files fit.
MAX_FILE_BYTES = 2500
TERMINAL = {"completed", "error", "aborted", "cancelled"}
_BOUNDS = re.compile(r"UpdatedDate >= '([^']+)' and UpdatedDate < '([^']+)'")


def _matches(query: str, row: dict[str, Any]) -> bool:
    """The user's own condition of each query (the window aside)."""
    return query == "Account" or row["Status"] == "Active" or row["Balance"] > 100


class JobFinisher:
    """Completes each job ``seconds`` after it was first seen, as Zuora would; :meth:`hold` stops that."""

    def __init__(self, sim: AquaSimulator, seconds: float) -> None:
        self._sim, self._seconds = sim, seconds
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()
        self._held = False
        self._released: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="job-finisher", daemon=True)
        self._thread.start()

    def hold(self) -> None:
        with self._lock:
            self._held, self._released = True, set()

    def release(self, *job_ids: str) -> None:
        with self._lock:
            self._released.update(job_ids)

    def release_all(self) -> None:
        with self._lock:
            self._held = False

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            now = time.monotonic()
            for job in self._sim.jobs():
                if job["status"] in TERMINAL:
                    continue
                first_seen = self._seen.setdefault(job["id"], now)
                with self._lock:
                    may_end = not self._held or job["id"] in self._released
                if may_end and now - first_seen >= self._seconds:
                    self._sim.finish_job(job["id"], "completed")


@dataclass
class Tenant:
    """The test's writes to the simulator's Account table: every row version it made, by (Id, Rev, deleted)."""

    sim: AquaSimulator
    revs: dict[str, int] = field(default_factory=dict)
    written: set[tuple[str, int, bool]] = field(default_factory=set)
    late: set[tuple[str, int, bool]] = field(default_factory=set)

    def insert(
        self,
        row_id: str,
        status: str,
        balance: int,
        at: datetime | None = None,
        delay: float = 0.0,
        late_by: float = 0.0,
    ) -> None:
        """``late_by``: a late commit, stamped that many seconds ago (its transaction started then)."""
        self.revs[row_id] = 1
        row: dict[str, Any] = {"Id": row_id, "Name": f"{row_id} r1", "Status": status, "Balance": balance, "Rev": 1}
        if at is not None:
            row.update(UpdatedDate=at, CreatedDate=at)
        self.sim.tenant.insert("Account", row, index_delay=delay, late_by=late_by)
        self._made(row_id, False, delay)

    def update(self, row_id: str, at: datetime | None = None, delay: float = 0.0, **changes: Any) -> None:
        rev = self.revs[row_id] = self.revs[row_id] + 1
        changes = {"Name": f"{row_id} r{rev}", "Rev": rev, **changes}
        if at is not None:
            changes["UpdatedDate"] = at
        self.sim.tenant.update("Account", row_id, changes, index_delay=delay)
        self._made(row_id, False, delay)

    def delete(self, row_id: str, delay: float = 0.0) -> None:
        self.sim.tenant.delete("Account", row_id, index_delay=delay)
        self._made(row_id, True, delay)

    def _made(self, row_id: str, deleted: bool, delay: float) -> None:
        version = (row_id, self.revs[row_id], deleted)
        self.written.add(version)
        if delay:
            self.late.add(version)
            # Really late: the export index does not show this version yet.
            visible = {(r["Id"], r["Rev"], r["IsDeleted"]) for r in self.sim.tenant.rows("Account", True, True)}
            assert version not in visible


@dataclass
class Run:
    """One DAG run as the REST API saw it: its task instance and the windows it returned."""

    run_id: str
    ti: dict[str, Any]
    windows: list[dict[str, Any]]

    @property
    def started(self) -> datetime:
        return datetime.fromisoformat(self.ti["start_date"])

    @property
    def ended(self) -> datetime:
        return datetime.fromisoformat(self.ti["end_date"])


@dataclass
class Story:
    """What the tests of this module did, in order, for the checks that follow."""

    start: datetime
    destination: Path
    runs: list[Run] = field(default_factory=list)
    before_start: set[str] = field(default_factory=set)
    after_mark: set[str] = field(default_factory=set)


# ---------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def tenant_sim() -> Iterator[AquaSimulator]:
    with AquaSimulator(
        client_id=CLIENT_ID, client_secret=CLIENT_SECRET, job_seconds=3600, max_file_bytes=MAX_FILE_BYTES, seed=16
    ) as sim:
        for route in ("submit", "get_job", "file"):
            sim.add_fault(route, "503", rate=0.1)
        yield sim


@pytest.fixture(scope="module")
def finisher(tenant_sim: AquaSimulator) -> Iterator[JobFinisher]:
    finisher = JobFinisher(tenant_sim, JOB_SECONDS)
    yield finisher
    finisher.stop()


@pytest.fixture(scope="module")
def tenant(tenant_sim: AquaSimulator) -> Tenant:
    return Tenant(tenant_sim)


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Story:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    return Story(start=start, destination=tmp_path_factory.mktemp("incremental") / "zuora")


@pytest.fixture(scope="module")
def stack(
    migrated_home: AirflowHome, tenant_sim: AquaSimulator, story: Story, tmp_path_factory
) -> Iterator[AirflowStack]:
    home = migrated_home.copy_to(
        Path(tmp_path_factory.mktemp("incremental-stack")),
        AQUA_E2E_INCREMENTAL_DESTINATION=str(story.destination),
        AQUA_E2E_INCREMENTAL_START=story.start.isoformat(),
        AIRFLOW_CONN_ZUORA_AQUA_DEFAULT=connection_json(tenant_sim.base_url),
    )
    with AirflowStack(home, triggerer=True) as running:
        running.wait_for_dag(DAG_ID)
        yield running
    assert_no_secret(home.all_logs(), tenant_sim)


# ---------------------------------------------------------------------------------------------
# Helpers


def manifests(destination: Path) -> list[tuple[Path, dict[str, Any]]]:
    return [(path, json.loads(path.read_text())) for path in sorted(destination.rglob("_manifest.json"))]


def window_of(job: dict[str, Any]) -> tuple[str, str, str]:
    """(query name, start, end) of a job the operator submitted: one batch, one window."""
    [batch] = job["batches"]
    start, end = _BOUNDS.search(batch["query"]).groups()
    return batch["name"], start, end


def finish_run(stack: AirflowStack, run_id: str) -> Run:
    ti = stack.wait_for_task_state(DAG_ID, run_id, TASK_ID, {"success", "failed"}, timeout=180)
    assert ti["state"] == "success", ti
    status, xcom = stack.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{TASK_ID}/xcomEntries/return_value")
    assert status == 200, xcom
    return Run(run_id, ti, xcom["value"])


def running_pid(stack: AirflowStack, run_id: str) -> int:
    ti = stack.wait_for_task_state(DAG_ID, run_id, TASK_ID, {"running"})
    assert ti["pid"], ti
    return ti["pid"]


def polled_by_try(sim: AquaSimulator, job_id: str, try_number: int) -> bool:
    return any(
        request.path.endswith(job_id) and request.headers.get("Zuora-Track-Id", "").endswith(f".{try_number}")
        for request in sim.requests_for("get_job")
    )


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("+0000", "+00:00"))


# ---------------------------------------------------------------------------------------------
# 1. A catch-up killed after its first window


def seed(tenant: Tenant, story: Story) -> None:
    """Rows over the hour before now: regular ones, a burst over the file-size cap, updated ones, and older ones."""
    start = story.start
    for k in range(3):  # match the "or", but changed before start: never exported
        row_id = f"old-{k}"
        tenant.insert(row_id, "Active", 500, at=start - timedelta(days=1, minutes=k))
        story.before_start.add(row_id)
    statuses = ("Active", "Cancelled", "Draft")
    for k in range(16):
        tenant.insert(
            f"acct-{k:02}", statuses[k % 3], (0, 50, 150, 1000)[k % 4], at=start + timedelta(minutes=2 + k * 3.5)
        )
    for j in range(70):  # 70 rows in 12 minutes of the third window: its file is over the cap
        tenant.insert(f"burst-{j:02}", statuses[j % 2], 20 * j, at=start + timedelta(minutes=31, seconds=10 * j))
    for k in (1, 5, 9):  # updated before the first run: only the newer version is current
        tenant.update(f"acct-{k:02}", at=start + timedelta(minutes=4 + k * 3.5))


def test_a_catch_up_killed_after_its_first_window_is_continued_by_its_retry_without_exporting_a_window_twice(
    stack: AirflowStack, tenant_sim: AquaSimulator, finisher: JobFinisher, tenant: Tenant, story: Story
):
    seed(tenant, story)
    finisher.hold()  # the first wave stays running until the test says otherwise
    stack.trigger(DAG_ID, "catch-up")
    pid = running_pid(stack, "catch-up")
    wave = wait_for(lambda: len(jobs := tenant_sim.jobs()) >= 4 and jobs, timeout=120, what="the first wave of jobs")
    assert len(wave) == 4  # max_active_jobs, default 4
    first = min(wave, key=lambda job: (window_of(job)[1], window_of(job)[0]))
    assert window_of(first) == ("Account", story.start.isoformat(), (story.start + MAX_WINDOW).isoformat())
    finisher.release(first["id"])

    wait_for(
        lambda: any(story.destination.rglob("_manifest.json")), timeout=60, interval=0.02, what="the first manifest"
    )
    os.kill(pid, signal.SIGKILL)

    [(_, published)] = manifests(story.destination)
    assert published["job_id"] == first["id"]
    still_running = [job["id"] for job in wave if job["id"] != first["id"]]
    assert all(tenant_sim.get_job(job_id)["status"] not in TERMINAL for job_id in still_running)
    # The retry polls the killed try's jobs while they still run: re-attached, not submitted again.
    wait_for(
        lambda: all(polled_by_try(tenant_sim, job_id, 2) for job_id in still_running),
        timeout=120,
        what="the retry polling the killed try's running jobs",
    )
    assert all(tenant_sim.get_job(job_id)["status"] not in TERMINAL for job_id in still_running)
    finisher.release_all()
    run = finish_run(stack, "catch-up")
    story.runs.append(run)

    assert run.ti["try_number"] == 2
    by_window = Counter(window_of(job) for job in tenant_sim.jobs())
    assert max(by_window.values()) == 1, by_window  # no window submitted twice
    published_jobs = {manifest["job_id"] for _, manifest in manifests(story.destination)}
    assert set(still_running) <= published_jobs and {w["job_id"] for w in run.windows} >= set(still_running)
    assert first["id"] not in {w["job_id"] for w in run.windows}  # the retry did not publish it again
    assert tenant_sim.requests_for("delete_job") == []  # nothing cancelled: every job was used


# ---------------------------------------------------------------------------------------------
# 2. Runs with rows changing between and during them


def wait_until_older_than_the_lag(tenant_sim: AquaSimulator) -> None:
    """Every write so far is older than lag + index delay: the next run's windows reach past it."""
    written = tenant_sim.tenant.clock.now()
    wait_for(
        lambda: tenant_sim.tenant.clock.now() - written > LAG + timedelta(seconds=INDEX_DELAY + 1),
        timeout=30,
        interval=0.2,
        what="the lag to pass",
    )


def test_rows_inserted_updated_deleted_and_arriving_late_between_and_during_runs_are_exported(
    stack: AirflowStack, tenant_sim: AquaSimulator, tenant: Tenant, story: Story
):
    before_run_2 = set(tenant.written)
    # Between runs: versions already exported change, new rows come, one arrives late, one is deleted.
    tenant.update("acct-00", Status="Active")
    tenant.update("burst-03", Balance=5)
    tenant.insert("new-00", "Draft", 200)
    tenant.insert("late-00", "Active", 10, delay=INDEX_DELAY)
    # A late commit: stamped 4 s ago, visible 1 s from now, within the test's 6-second lag (Zuora's
    # rule is 2 hours for the same reason): its window is still open when it becomes visible.
    tenant.insert("late-commit-00", "Active", 20, delay=1.0, late_by=LAG_SECONDS - 2.0)
    tenant.update("acct-02", delay=INDEX_DELAY, Balance=7)
    tenant.delete("acct-03")
    between = set(tenant.written) - before_run_2
    wait_until_older_than_the_lag(tenant_sim)

    submitted = len(tenant_sim.jobs())
    stack.trigger(DAG_ID, "changes-2")
    wait_for(lambda: len(tenant_sim.jobs()) > submitted, timeout=120, what="the second run's first submit")
    # During the run: above its windows' end, they belong to the next one.
    tenant.update("acct-04", Status="Active")
    tenant.insert("new-01", "Cancelled", 0)
    tenant.insert("late-01", "Draft", 300, delay=INDEX_DELAY)
    tenant.delete("burst-10", delay=INDEX_DELAY)
    during = set(tenant.written) - before_run_2 - between
    story.runs.append(finish_run(stack, "changes-2"))

    tenant.update("new-00", Balance=0)
    tenant.insert("late-02", "Active", 0, delay=INDEX_DELAY)
    wait_until_older_than_the_lag(tenant_sim)
    submitted = len(tenant_sim.jobs())
    stack.trigger(DAG_ID, "changes-3")
    wait_for(lambda: len(tenant_sim.jobs()) > submitted, timeout=120, what="the third run's first submit")
    # Written after the last run read "now", so above its mark: they match the "or" and must not be exported.
    for k in range(2):
        tenant.insert(f"after-{k}", "Active", 1000)
        story.after_mark.add(f"after-{k}")
    story.runs.append(finish_run(stack, "changes-3"))
    run_2, run_3 = story.runs[-2:]

    # What changed before a run is in that run's windows; what changed during it, in the next run's.
    assert between <= published_by(run_2)["Account"]
    assert during <= published_by(run_3)["Account"] and not during & published_by(run_2)["Account"]

    for before, after in zip(story.runs, story.runs[1:]):
        for query in QUERIES:
            # Each run goes on where the previous one's last window of the query ended.
            last_end = max(w["window"]["end"] for w in before.windows if w["query"] == query)
            assert min(w["window"]["start"] for w in after.windows if w["query"] == query) == last_end
    assert tenant.late and tenant.late <= exported_versions(story.destination)["Account"]


# ---------------------------------------------------------------------------------------------
# 3. What a consumer reads


def exported_records(destination: Path) -> dict[str, list[tuple[dict[str, Any], dict[str, str]]]]:
    """Per query, every record of every file every manifest lists, with the manifest's window."""
    records: dict[str, list[tuple[dict[str, Any], dict[str, str]]]] = {query: [] for query in QUERIES}
    for _, manifest in manifests(destination):
        for entry in manifest["files"]:
            text = Path(entry["uri"].removeprefix("file://")).read_text()
            rows = list(csv.DictReader(io.StringIO(text)))
            assert len(rows) == entry["records"]
            records[manifest["query"]] += [(row, manifest["window"]) for row in rows]
    return records


def published_by(run: Run) -> dict[str, set[tuple[str, int, bool]]]:
    """Per query, the row versions in the files of the windows one run published (its XCom)."""
    versions: dict[str, set[tuple[str, int, bool]]] = {query: set() for query in QUERIES}
    for window in run.windows:
        manifest = json.loads(Path(window["manifest"].removeprefix("file://")).read_text())
        for entry in manifest["files"]:
            text = Path(entry["uri"].removeprefix("file://")).read_text()
            versions[window["query"]] |= {version_of(row) for row in csv.DictReader(io.StringIO(text))}
    return versions


def version_of(row: dict[str, Any]) -> tuple[str, int, bool]:
    # AQuA names the deleted column after the object, first in the row: "Account.IsDeleted".
    deleted = next(value for name, value in row.items() if name.endswith(".IsDeleted"))
    return row["Id"], int(row["Rev"]), deleted == "true"


def exported_versions(destination: Path) -> dict[str, set[tuple[str, int, bool]]]:
    return {query: {version_of(row) for row, _ in rows} for query, rows in exported_records(destination).items()}


def test_every_manifest_together_holds_each_current_row_below_the_mark_exactly_once(
    stack: AirflowStack, tenant_sim: AquaSimulator, tenant: Tenant, story: Story
):
    assert len(story.runs) == 3, "the scenarios above must run first"
    found = manifests(story.destination)
    records = exported_records(story.destination)
    truth = tenant_sim.tenant.rows("Account", deleted=True)

    for query in QUERIES:
        windows = sorted((utc(m["window"]["start"]), utc(m["window"]["end"])) for _, m in found if m["query"] == query)
        # Windows tile from start: no gap, no overlap.
        assert windows[0][0] == story.start
        assert all(left[1] == right[0] for left, right in zip(windows, windows[1:])), windows
        assert all(end - begin <= MAX_WINDOW for begin, end in windows)
        mark = windows[-1][1]
        assert mark >= datetime.fromisoformat(story.runs[-1].ti["start_date"]).replace(microsecond=0) - LAG

        exported = [version_of(row) for row, _ in records[query]]
        duplicates = [version for version, count in Counter(exported).items() if count > 1]
        assert duplicates == []  # no row version twice
        for row, window in records[query]:
            # Every record in its window, and one the query asks for (the "or" did not loosen the window).
            assert utc(window["start"]) <= utc(row["UpdatedDate"]) < utc(window["end"]), (row, window)
            assert _matches(query, {**row, "Balance": int(row["Balance"])}), row
        assert set(exported) <= tenant.written
        current = {
            (row["Id"], row["Rev"], row["IsDeleted"])
            for row in truth
            if story.start <= row["UpdatedDate"] < mark and _matches(query, row)
        }
        assert current and current <= set(exported)  # every current row version below the mark
        assert not {row_id for row_id, _, _ in exported} & (story.before_start | story.after_mark)
    deletes = {("acct-03", 1, True), ("burst-10", 1, True)}
    assert deletes <= exported_versions(story.destination)["Account"]  # as IsDeleted rows

    # The mark is never closer to now than the lag: each window ended lag before its manifest was written.
    for path, manifest in found:
        written = datetime.fromtimestamp(path.stat().st_mtime, UTC)
        assert utc(manifest["window"]["end"]) <= written - LAG
    for run in story.runs:
        assert all(utc(w["window"]["end"]) <= run.ended - LAG for w in run.windows)

    # What the simulator saw: each window submitted once, every job used, none left running.
    jobs = tenant_sim.jobs()
    assert max(Counter(window_of(job) for job in jobs).values()) == 1
    published = {manifest["job_id"] for _, manifest in found}
    split = [job for job in jobs if job["id"] not in published]
    assert split, "the burst window's file was over the cap"
    for job in split:  # refused as over the cap, then exported in halves
        query, begin, end = window_of(job)
        inside = [m for _, m in found if m["query"] == query and begin <= m["window"]["start"] < end]
        assert len(inside) >= 2 and all(m["window"]["end"] <= end for m in inside)
    assert any(request.status == 403 for request in tenant_sim.requests_for("file"))
    assert all(job["status"] in TERMINAL for job in jobs)
    assert tenant_sim.requests_for("delete_job") == []
    assert sum(request.status == 503 for request in tenant_sim.requests) >= 5  # transient answers, retried

    # A consumer reads only manifests: every window folder has one, listing exactly its files.
    for folder in {path.parent for path in story.destination.rglob("*") if path.is_file()}:
        manifest = json.loads((folder / "_manifest.json").read_text())
        listed = {Path(entry["uri"].removeprefix("file://")).name for entry in manifest["files"]}
        assert {path.name for path in folder.iterdir()} == listed | {"_manifest.json"}
