"""The README's code, copied verbatim, run with real Airflow against the simulator (docs/ blocks: tests/docs)."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
import re
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from airflow_provider_zuora_aqua.simulator import AquaSimulator
from airflow_provider_zuora_aqua.testing.airflow_env import AIRFLOW_BIN, AirflowHome, free_port, stop_process_group
from tests.docs.blocks import ROOT, command_lines, run_bash
from tests.readme import README_SIMULATOR_PORT, code_blocks, connection_lines_of
from tests.support.credentials import CLIENT_ID, CLIENT_SECRET, connection_json
from tests.support.e2e import assert_no_secret

pytestmark = pytest.mark.airflow_e2e

USAGE_DAG_ID = "zuora_exports"


@pytest.fixture
def quick_simulator():
    with AquaSimulator(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, job_seconds=3) as sim:
        yield sim


#: The folder the README's Usage writes to and reads from; tests swap in their own.
README_EXPORTS = "/tmp/zuora-exports"
#: The Usage DAG's lag.
README_LAG = timedelta(hours=2)


def seed_accounts(sim: AquaSimulator, start: datetime) -> set[str]:
    """Account rows around the README's window; return the ids whose current version a run must export."""
    now = datetime.now(timezone.utc).replace(microsecond=0)
    rows = [
        ("before-start", start - timedelta(days=1)),  # changed before start: never exported
        ("first-second", start),  # windows are half-open: start is in, the mark is out
        *((f"A{day:03}", start + timedelta(days=day, hours=5)) for day in range(0, (now - start).days, 4)),
        ("before-the-lag", now - README_LAG - timedelta(hours=1)),
        ("last-hour", now - timedelta(hours=1)),  # inside the lag: the next runs'
        ("in-the-lag", now - timedelta(minutes=2)),  # too recent: the next run's
    ]
    for row_id, at in rows:
        sim.tenant.insert("Account", {"Id": row_id, "Name": row_id, "Balance": 10, "UpdatedDate": at})
    # Updated before the run: only its current version is exported.
    sim.tenant.update("Account", "A004", {"Name": "A004 renamed", "UpdatedDate": now - README_LAG - timedelta(hours=1)})
    return {row_id for row_id, at in rows if start <= at < now - README_LAG}


def test_usage_runs_as_written_and_its_manifest_reader_reads_the_files(
    migrated_home: AirflowHome, quick_simulator: AquaSimulator, tmp_path: Path
):
    dag_snippet, manifest_snippet = code_blocks("Usage", "python")
    [run_command] = code_blocks("Usage", "bash")
    assert run_command.split() == ["airflow", "dags", "test", USAGE_DAG_ID]
    exports = tmp_path / "exports"
    for snippet in (dag_snippet, manifest_snippet):
        assert snippet.count(README_EXPORTS) == 1  # the one line the test swaps
    start = datetime.fromisoformat(re.search(r'start="([^"]+)"', dag_snippet).group(1).replace("Z", "+00:00"))
    expected_ids = seed_accounts(quick_simulator, start)
    dags_folder = tmp_path / "dags"
    dags_folder.mkdir()
    (dags_folder / "zuora_exports.py").write_text(dag_snippet.replace(README_EXPORTS, str(exports)))
    home = dataclasses.replace(
        migrated_home.copy_to(
            tmp_path / "airflow", AIRFLOW_CONN_ZUORA_AQUA_DEFAULT=connection_json(quick_simulator.base_url)
        ),
        dags_folder=dags_folder,
    )
    env = {**home.env, "PATH": f"{Path(AIRFLOW_BIN).parent}{os.pathsep}{os.environ.get('PATH', '')}"}

    # The README's run command, verbatim.
    log_path = home.root / "dags-test.out"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            ["bash", "-c", run_command],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        started = datetime.now(timezone.utc)
        try:
            returncode = process.wait(240)
        finally:
            stop_process_group(process)
    log = log_path.read_text(errors="replace")
    assert returncode == 0, log[-5000:]
    assert "state=success" in log

    jobs = quick_simulator.jobs()
    assert len(jobs) >= 2 and all(job["status"] == "completed" for job in jobs)  # a catch-up: several windows
    for job in jobs:
        [batch] = job["batches"]
        assert re.fullmatch(
            r"select Id, Name, Balance, UpdatedDate from Account where UpdatedDate >= '\S+' and UpdatedDate < '\S+'",
            batch["query"],
        )
    assert quick_simulator.requests_for("delete_job") == []
    assert_no_secret(home.all_logs(), quick_simulator)
    # The files are on disk, one folder per window, each with its manifest; the windows tile from start.
    manifest_files = sorted(exports.rglob("_manifest.json"))
    manifests = [json.loads(path.read_text()) for path in manifest_files]
    assert [path.parent.parent.name for path in manifest_files] == ["Account"] * len(jobs)
    windows = [(m["window"]["start"], m["window"]["end"]) for m in manifests]
    assert windows[0][0] == start.isoformat()
    assert all(left[1] == right[0] for left, right in zip(windows, windows[1:]))
    assert datetime.fromisoformat(windows[-1][1]) <= datetime.now(timezone.utc) - README_LAG
    assert datetime.fromisoformat(windows[-1][1]) >= started.replace(microsecond=0) - README_LAG
    exported = []
    for manifest in manifests:
        for entry in manifest["files"]:
            exported += [
                row["Id"] for row in csv.DictReader(io.StringIO(Path(entry["uri"].removeprefix("file://")).read_text()))
            ]
    assert sorted(exported) == sorted(expected_ids)  # each current row in the windows, once

    # The README's manifest reader, verbatim but for the folder.
    reader = tmp_path / "read_manifest.py"
    reader.write_text(manifest_snippet.replace(README_EXPORTS, str(exports)))
    result = subprocess.run([sys.executable, str(reader)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    expected_lines = []
    for path, manifest in zip(manifest_files, manifests):
        [entry] = manifest["files"]
        [data_file] = [file for file in path.parent.iterdir() if file.name != "_manifest.json"]
        expected_lines += [
            f"Account [{manifest['window']['start']}, {manifest['window']['end']}) job {manifest['job_id']}",
            f"  {entry['records']} records, {data_file.stat().st_size} bytes, "
            f"sha256 {hashlib.sha256(data_file.read_bytes()).hexdigest()}, {data_file.as_uri()}",
        ]
        assert entry["file_id"] in {job["batches"][0]["fileId"] for job in jobs}
    assert result.stdout.splitlines() == expected_lines


def test_install_pins_a_supported_airflow_with_its_own_constraints():
    install, fallback = code_blocks("Install", "bash")
    version = re.search(r"^AIRFLOW_VERSION=(\d+)\.(\d+)\.(\d+)$", install, re.MULTILINE)
    assert version, install
    assert (3, 0, 6) <= tuple(map(int, version.groups())) < (3, 4, 0)  # pyproject: apache-airflow>=3.0.6,<3.4
    assert (
        "https://raw.githubusercontent.com/apache/airflow/constraints-${AIRFLOW_VERSION}/constraints-${PYTHON_VERSION}.txt"
        in install
    )
    commands = [line.split("#")[0].strip() for line in install.splitlines()]
    order = ["python3 -m venv", 'pip install "apache-airflow==', "pip install .", "airflow db migrate", "mkdir -p"]
    positions = [next(i for i, line in enumerate(commands) if line.startswith(command)) for command in order]
    assert positions == sorted(positions)
    syntax = subprocess.run(["bash", "-n", "-c", install], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr

    # The fallback: the project's own constraints for the same, newest supported Airflow, which
    # .ci/bootstrap installs the tested .venv with and the Quick start page installs with (its
    # test, tests/docs/test_quickstart.py, runs this very command).
    newest = ".".join(version.groups())
    [command] = command_lines(fallback)
    constraints = f".ci/constraints/airflow-{newest}.txt"
    assert command == f'pip install "apache-airflow=={newest}" . -c {constraints}'
    assert (ROOT / constraints).is_file()
    assert f"apache-airflow=={newest}\n" in (ROOT / constraints).read_text()
    pinned = [path.name for path in (ROOT / ".ci/constraints").glob("airflow-*.txt")]
    assert max(pinned, key=lambda name: tuple(map(int, re.findall(r"\d+", name)))) == f"airflow-{newest}.txt"
    assert f"-c {constraints}" in (ROOT / ".ci/bootstrap").read_text().replace("\\\n    ", "")
    assert command in (ROOT / "docs/quickstart.md").read_text()


def _connection_forms() -> tuple[str, list[str]]:
    """The Connection section's simulator block and its connection blocks, one per form."""
    blocks = code_blocks("Connection", "bash")
    [simulator] = [block for block in blocks if block.startswith("python -m airflow_provider_zuora_aqua.simulator")]
    forms = [block for block in blocks if "AIRFLOW_CONN_ZUORA_AQUA_DEFAULT" in block]
    return simulator, forms


def test_each_connection_form_has_its_own_block_with_its_own_test():
    simulator, forms = _connection_forms()
    assert len(command_lines(simulator)) == 1 and simulator.rstrip().endswith("&")
    assert [connection_lines_of(form)[0][:1] for form in forms] == ["{", "z"]  # JSON, then URI
    for form in forms:
        # Pasted alone, a block sets its form and tests that form: one export, then the test.
        assert len(connection_lines_of(form)) == 1
        assert [line.split()[0] for line in command_lines(form)] == [
            "export",
            "AIRFLOW__CORE__TEST_CONNECTION=Enabled",
        ], form
        assert form.count("# Connection success!") == 1


@pytest.mark.parametrize("form", ["json", "uri"])
def test_each_connection_block_runs_on_its_own_as_written(migrated_home: AirflowHome, tmp_path: Path, form: str):
    simulator, forms = _connection_forms()
    block = forms[["json", "uri"].index(form)]
    home = migrated_home.copy_to(tmp_path / "airflow")
    env = {
        **{name: value for name, value in home.env.items() if not name.startswith("AIRFLOW_CONN_")},
        "PATH": f"{Path(AIRFLOW_BIN).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    script = (simulator + block).replace(str(README_SIMULATOR_PORT), str(free_port()))

    # The simulator block, then this block, verbatim: what a reader pastes for this form.
    returncode, output = run_bash(script, env, tmp_path, timeout=120)
    assert returncode == 0 and output.count("Connection success!") == 1, output[-3000:]

    # Without the setting, Airflow refuses to test (the README says to set it).
    disabled = script.replace("AIRFLOW__CORE__TEST_CONNECTION=Enabled ", "")
    returncode, output = run_bash(disabled, env, tmp_path, timeout=120)
    assert "Testing connections is disabled" in output, output[-3000:]
    assert "Connection success!" not in output


def test_the_docs_command_bootstraps_then_builds():
    [command] = code_blocks("Documentation", "bash")
    assert command_lines(command) == ["bash .ci/bootstrap && bash .ci/docs"]
    docs = (ROOT / ".ci/docs").read_text()
    # .ci/docs bootstraps by itself when .venv lacks the docs tools (a fresh clone), then builds as CI.
    assert "bash .ci/bootstrap" in docs and "-m sphinx -W --keep-going -b html docs docs/_build/html" in docs
