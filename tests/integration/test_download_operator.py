"""AquaDownloadResultsOperator against the simulator: manifest, refusals, asset extras, OpenLineage."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from airflow.sdk import Asset, AssetAlias
from airflow.sdk.execution_time.context import OutletEventAccessors

from airflow_provider_zuora_aqua.exceptions import AquaConfigurationError, AquaJobError, AquaJobFailedError
from airflow_provider_zuora_aqua.hooks.aqua import ZuoraAquaHook
from airflow_provider_zuora_aqua.operators.aqua import AquaDownloadResultsOperator
from airflow_provider_zuora_aqua.results.delivery import MANIFEST_NAME
from airflow_provider_zuora_aqua.simulator import AquaSimulator
from tests.support.credentials import CLIENT_ID, CLIENT_SECRET, CONN_ID, connection_json
from tests.support.fakes import context

QUERIES = [
    {"name": "accounts", "query": "select Id, Name from Account where Name != 'from Contact'"},
    {"name": "invoices", "query": "SELECT Id, Account.Name FROM Invoice"},
]


@pytest.fixture
def instant_sim(monkeypatch: pytest.MonkeyPatch):
    with AquaSimulator(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, job_seconds=0, file_rows=25) as sim:
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", connection_json(sim.base_url))
        yield sim


def completed_job_id(sim: AquaSimulator) -> str:
    job_id = ZuoraAquaHook().submit_job({"format": "csv", "version": "1.0", "queries": QUERIES})["id"]
    deadline = time.monotonic() + 10
    while sim.get_job(job_id)["status"] != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return job_id


def test_downloads_every_batch_and_returns_the_manifest(instant_sim, tmp_path):
    job_id = completed_job_id(instant_sim)
    operator = AquaDownloadResultsOperator(task_id="download", job_id=job_id, destination=str(tmp_path))

    manifest = operator.execute(context())

    assert manifest["job_id"] == job_id
    assert [(file["batch"], Path(file["uri"]).name, file["records"]) for file in manifest["files"]] == [
        ("accounts", "accounts.csv", 25),
        ("invoices", "invoices.csv", 25),
    ]
    assert json.loads((tmp_path / MANIFEST_NAME).read_text()) == manifest
    [get_job] = instant_sim.requests_for("get_job")
    assert get_job.headers["Zuora-Track-Id"] == "airflow.dag.cancel.manual__2026-11-25T10-00-00+00-00.1"


def test_outlet_asset_events_carry_job_files_and_records(instant_sim, tmp_path):
    job_id = completed_job_id(instant_sim)
    asset = Asset(name="zuora_exports", uri="file:///data/zuora")
    alias = AssetAlias(name="zuora_alias")
    operator = AquaDownloadResultsOperator(
        task_id="download", job_id=job_id, destination=tmp_path, outlets=[asset, alias]
    )
    events = OutletEventAccessors()

    manifest = operator.execute(context(outlet_events=events))

    assert events[asset].extra == {
        "aqua_job_id": job_id,
        "files": [file["uri"] for file in manifest["files"]],
        "records": 50,
    }
    assert events[alias].extra == {}  # an alias needs the DAG author to say which asset it stands for


@pytest.mark.parametrize("job_id", [None, "None", "", "  "])
def test_missing_upstream_xcom_is_refused_before_any_request(instant_sim, tmp_path, job_id):
    operator = AquaDownloadResultsOperator(task_id="download", job_id=job_id, destination=tmp_path)
    with pytest.raises(AquaConfigurationError, match="upstream XCom is missing"):
        operator.execute(context())
    assert instant_sim.requests == []


def test_a_running_job_is_refused(simulator, aqua_conn, tmp_path):
    job_id = ZuoraAquaHook().submit_job({"format": "csv", "version": "1.0", "queries": QUERIES})["id"]
    operator = AquaDownloadResultsOperator(task_id="download", job_id=job_id, destination=tmp_path)
    with pytest.raises(AquaJobError, match="not 'completed': its results are not ready"):
        operator.execute(context())
    assert simulator.requests_for("file") == []
    assert list(tmp_path.iterdir()) == []


def test_a_failed_job_is_refused(simulator, aqua_conn, tmp_path):
    job_id = ZuoraAquaHook().submit_job({"format": "csv", "version": "1.0", "queries": QUERIES})["id"]
    simulator.finish_job(job_id, "error", "query timed out")
    operator = AquaDownloadResultsOperator(task_id="download", job_id=job_id, destination=tmp_path)
    with pytest.raises(AquaJobFailedError, match="query timed out.*no results to download"):
        operator.execute(context())
    assert simulator.requests_for("file") == []


def test_openlineage_facets_name_zuora_objects_in_and_files_out(instant_sim, tmp_path):
    from airflow.providers.openlineage.extractors.base import DefaultExtractor

    job_id = completed_job_id(instant_sim)
    operator = AquaDownloadResultsOperator(task_id="download", job_id=job_id, destination=tmp_path)
    manifest = operator.execute(context())

    # Through the OpenLineage provider's own extractor, as Airflow calls it after success.
    lineage = DefaultExtractor(operator).extract_on_complete(task_instance=None)

    host = instant_sim.base_url.removeprefix("http://")
    assert [(dataset.namespace, dataset.name) for dataset in lineage.inputs] == [
        (f"zuora://{host}", "Account"),
        (f"zuora://{host}", "Invoice"),
    ]
    assert [(dataset.namespace, dataset.name) for dataset in lineage.outputs] == [
        ("file", str(tmp_path / "accounts.csv")),
        ("file", str(tmp_path / "invoices.csv")),
    ]
    statistics = lineage.outputs[0].outputFacets["outputStatistics"]
    assert (statistics.rowCount, statistics.size) == (25, manifest["files"][0]["bytes"])


def test_template_fields():
    assert set(AquaDownloadResultsOperator.template_fields) == {
        "job_id",
        "destination",
        "destination_conn_id",
        "zuora_conn_id",
        "track_id",
    }


def test_the_submit_operator_with_a_destination_has_the_same_lineage_and_asset_extras(instant_sim, tmp_path):
    from airflow.providers.openlineage.extractors.base import DefaultExtractor

    from airflow_provider_zuora_aqua.operators.aqua import AquaSubmitJobOperator

    asset = Asset(name="zuora_exports", uri="file:///data/zuora")
    operator = AquaSubmitJobOperator(
        task_id="export", queries=QUERIES, poll_interval=0.1, destination=tmp_path, outlets=[asset]
    )
    events = OutletEventAccessors()

    manifest = operator.execute(context(outlet_events=events))
    lineage = DefaultExtractor(operator).extract_on_complete(task_instance=None)

    assert events[asset].extra == {
        "aqua_job_id": manifest["job_id"],
        "files": [file["uri"] for file in manifest["files"]],
        "records": 50,
    }
    assert [dataset.name for dataset in lineage.inputs] == ["Account", "Invoice"]
    assert [dataset.name for dataset in lineage.outputs] == [
        str(tmp_path / "accounts.csv"),
        str(tmp_path / "invoices.csv"),
    ]


@pytest.mark.parametrize("status", ["error", "pending"])
def test_a_completed_job_with_a_batch_not_completed_is_refused_before_any_file(tmp_path, monkeypatch, status):
    """The rule of the submit operator (check_job_succeeded), applied by the delivery both operators share."""
    from tests.support.hostile_server import HostileServer, Reply, job_json, json_body

    batches = [
        {"name": "accounts", "status": "completed", "fileId": "f1", "recordCount": 1},
        {"name": "invoices", "status": status, "message": "query aborted"},
    ]
    with HostileServer() as server:
        job = job_json("completed", format="csv", batches=batches)
        server.on("GET", f"/v1/batch-query/jobs/{job['id']}", Reply(body=json_body(job)))
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", connection_json(server.base_url))
        operator = AquaDownloadResultsOperator(task_id="download", job_id=job["id"], destination=tmp_path / "out")

        with pytest.raises(AquaJobFailedError, match=f"'invoices' {status}: query aborted"):
            operator.execute(context())

        assert [request.path for request in server.requests if request.path.startswith("/v1/files")] == []
    assert not (tmp_path / "out").exists()
