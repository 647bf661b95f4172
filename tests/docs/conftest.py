"""Fixtures for running the docs' code blocks: a migrated Airflow home, the simulator, an S3 server."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from airflow_provider_zuora_aqua.simulator import AquaSimulator
from airflow_provider_zuora_aqua.testing.airflow_env import AirflowHome
from tests.docs.blocks import EXAMPLE_DAGS, S3_BUCKET, s3_client
from tests.support.credentials import CLIENT_ID, CLIENT_SECRET, connection_json


@pytest.fixture(scope="session")
def docs_migrated_home(tmp_path_factory: pytest.TempPathFactory) -> AirflowHome:
    """One migrated Airflow database per session; each block runs in a copy of it."""
    home = AirflowHome(tmp_path_factory.mktemp("docs-airflow-template"), EXAMPLE_DAGS)
    home.migrate()
    return home


@pytest.fixture
def docs_simulator() -> Iterator[AquaSimulator]:
    """Jobs complete after a second, so that DAG runs end quickly; Account and Subscription hold rows."""
    with AquaSimulator(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, job_seconds=1) as sim:
        seed_tenant(sim)
        yield sim


def seed_tenant(sim: AquaSimulator) -> None:
    """Rows changed over the last 60 days, so that the docs' windowed exports export records."""
    now = datetime.now(timezone.utc).replace(microsecond=0)
    sim.tenant.insert_many(
        "Account",
        [
            {
                "Id": f"A{i:03}",
                "Name": f"Customer {i}",
                "Balance": 10 * i,
                "UpdatedDate": now - timedelta(days=2 * i, hours=3),
            }
            for i in range(30)
        ],
    )
    sim.tenant.insert_many(
        "Subscription",
        [
            {
                "Id": f"S{i:03}",
                "Name": f"Plan {i}",
                "Status": ("Active", "Expired")[i % 2],
                "UpdatedDate": now - timedelta(days=3 * i, hours=1),
            }
            for i in range(20)
        ],
    )


@pytest.fixture
def exports_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "exports"
    folder.mkdir()
    return folder


@pytest.fixture
def docs_home(
    docs_migrated_home: AirflowHome, docs_simulator: AquaSimulator, exports_folder: Path, tmp_path: Path
) -> AirflowHome:
    """
    A home whose DAGs folder holds the example DAGs (a test adds its block), with the connection
    to the simulator and the example DAGs' export folder under the test's own tmp_path.
    """
    dags = tmp_path / "dags"
    dags.mkdir()
    for path in EXAMPLE_DAGS.glob("*.py"):
        (dags / path.name).write_text(path.read_text())
    home = docs_migrated_home.copy_to(
        tmp_path / "airflow",
        AIRFLOW_CONN_ZUORA_AQUA_DEFAULT=connection_json(docs_simulator.base_url),
        ZUORA_EXPORT_FOLDER=str(exports_folder),
    )
    return AirflowHome(home.root, dags, home.extra_env)


@pytest.fixture(scope="module")
def s3_endpoint(s3_server: str) -> str:
    """The session's moto S3 server, with the bucket the docs write to."""
    client = s3_client(s3_server)
    if S3_BUCKET not in {bucket["Name"] for bucket in client.list_buckets()["Buckets"]}:
        client.create_bucket(Bucket=S3_BUCKET)
    return s3_server
