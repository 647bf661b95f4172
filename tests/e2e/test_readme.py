"""The README's code, copied verbatim, run with real Airflow against the simulator."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
from pathlib import Path

import pytest

from airflow_provider_zuora_aqua.simulator import AquaSimulator
from airflow_provider_zuora_aqua.testing.airflow_env import AIRFLOW_BIN, AirflowHome, stop_process_group
from tests.conftest import CLIENT_ID, CLIENT_SECRET, connection_json
from tests.e2e.conftest import assert_no_secret
from tests.readme import README_SIMULATOR_PORT, code_blocks, connection_lines

pytestmark = pytest.mark.airflow_e2e

USAGE_DAG_ID = "zuora_exports"


@pytest.fixture
def quick_simulator():
    with AquaSimulator(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, job_seconds=3) as sim:
        yield sim


def test_usage_snippet_runs_as_written(migrated_home: AirflowHome, quick_simulator: AquaSimulator, tmp_path: Path):
    snippet = code_blocks("Usage", "python")[0]  # the DAG that opens the section; operators follow
    dags_folder = tmp_path / "dags"
    dags_folder.mkdir()
    (dags_folder / "zuora_exports.py").write_text(snippet)
    home = dataclasses.replace(
        migrated_home.copy_to(
            tmp_path / "airflow", AIRFLOW_CONN_ZUORA_AQUA_DEFAULT=connection_json(quick_simulator.base_url)
        ),
        dags_folder=dags_folder,
    )

    process = home.spawn("dags", "test", USAGE_DAG_ID, log_name="dags-test.out")
    try:
        returncode = process.wait(240)
    finally:
        stop_process_group(process)
    log = home.read_log("dags-test.out")
    assert returncode == 0, log[-5000:]

    [job] = quick_simulator.jobs()
    assert job["status"] == "completed"
    assert re.fullmatch(r"accounts-\d{8}", job["name"])
    [batch] = job["batches"]
    assert re.search(r"UpdatedDate >= '\d{4}-\d{2}-\d{2}'", batch["query"])  # {{ ds }} was rendered
    # The downstream task got the job JSON and returned the file id of each batch.
    assert f"'accounts': '{batch['fileId']}'" in log
    assert "state=success" in log
    assert quick_simulator.requests_for("delete_job") == []
    assert_no_secret(home.all_logs(), quick_simulator)


def test_connections_test_command_runs_as_written(migrated_home: AirflowHome, tmp_path: Path):
    [start, *_] = [block for block in code_blocks("Connection", "bash") if "airflow connections test" in block]
    command = next(line for line in start.splitlines() if "airflow connections test" in line)
    command = command.split("#")[0].strip()
    home = migrated_home.copy_to(tmp_path / "airflow")
    with AquaSimulator(client_id="my-id", client_secret="my-secret-value") as sim:
        port = sim.base_url.rsplit(":", 1)[1]
        for conn in [line for line in connection_lines("Connection") if f":{README_SIMULATOR_PORT}" in line]:
            env = {
                **home.env,
                "AIRFLOW_CONN_ZUORA_AQUA_DEFAULT": conn.replace(str(README_SIMULATOR_PORT), port),
                "PATH": f"{Path(AIRFLOW_BIN).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            }
            result = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=120)
            assert "Connection success!" in result.stdout, result.stdout + result.stderr

            # Without the setting, Airflow refuses to test (the README says to set it).
            disabled = subprocess.run(
                ["bash", "-c", command.replace("AIRFLOW__CORE__TEST_CONNECTION=Enabled ", "")],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert "Testing connections is disabled" in disabled.stdout + disabled.stderr
        assert sim.tokens_issued == 2
