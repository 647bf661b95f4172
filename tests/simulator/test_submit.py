"""POST /v1/batch-query/: accepted jobs, and AQuA's refusals."""

from __future__ import annotations

import gzip
import json
import re
from typing import Any

import pytest
import requests

from airflow_provider_zuora_aqua.simulator import AquaSimulator
from tests.support.sim_client import ACCOUNT_QUERY, HEX32, INVOICE_QUERY, Client, job_body


def test_submit_success_shape(client: Client) -> None:
    body = job_body(ACCOUNT_QUERY, INVOICE_QUERY, format="gzip", useQueryLabels=True, dateTimeUtc="true")
    body["queries"][0]["apiVersion"] = "127.0"
    job = client.submit_job(body)
    assert re.fullmatch(HEX32, job["id"])
    assert job["status"] == "submitted"
    assert job["format"] == "GZIP"
    assert job["name"] == "sim-test"
    assert (job["version"], job["encrypted"], job["sourceData"]) == ("1.0", "none", "LIVE")
    assert job["useQueryLabels"] is True and job["dateTimeUtc"] is True
    assert "partner" not in job and "startTime" not in job
    first, second = job["batches"]
    assert re.fullmatch(HEX32, first["batchId"]) and first["batchId"] != second["batchId"]
    assert first == {
        "batchId": first["batchId"],
        "batchType": "zoqlexport",
        "name": "Q0",
        "query": ACCOUNT_QUERY,
        "status": "pending",
        "recordCount": 0,
        "apiVersion": "127.0",
    }
    assert "apiVersion" not in second


@pytest.mark.parametrize(("given", "shown"), [("CSV", "CSV"), ("zip", "ZIP"), ("Gzip", "GZIP"), (None, "CSV")])
def test_format_is_case_insensitive_and_defaults_to_csv(client: Client, given: str | None, shown: str) -> None:
    body = job_body()
    if given is None:
        del body["format"]
    else:
        body["format"] = given
    assert client.submit_job(body)["format"] == shown


def test_defaults_and_unnamed_batches(client: Client) -> None:
    job = client.submit_job({"queries": [{"query": "SELECT id FROM Account"}]})
    assert (job["version"], job["encrypted"], job["format"]) == ("1.0", "none", "CSV")
    assert job["batches"][0]["name"] == "Account"  # named after the object, like Zuora's samples
    assert job["batches"][0]["batchType"] == "zoqlexport"
    assert job["useQueryLabels"] is False and job["dateTimeUtc"] is False


def test_stateful_submit(client: Client) -> None:
    deleted = {"column": "IsDeleted", "format": "Boolean"}
    body = job_body(version="1.1", partner="acme", project="p1", incrementalTime="2026-01-01 00:00:00", offset=600)
    body["queries"][0]["deleted"] = deleted
    job = client.submit_job(body)
    assert (job["partner"], job["project"], job["version"]) == ("acme", "p1", "1.1")
    assert job["incrementalTime"] == "2026-01-01 00:00:00" and job["offset"] == 600
    batch = job["batches"][0]
    assert batch["full"] is True
    assert batch["deleted"] == {**deleted, "forceExport": False}


def test_gzipped_request_body(sim: AquaSimulator, client: Client) -> None:
    payload = gzip.compress(json.dumps(job_body()).encode())
    response = client.request(
        "POST",
        "/v1/batch-query",
        data=payload,
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert response.status_code == 200 and response.json()["status"] == "submitted"
    assert sim.requests_for("submit")[-1].json == job_body()


def test_undecodable_gzip_body_is_a_400(client: Client) -> None:
    response = client.request("POST", "/v1/batch-query/", data=b"not gzip", headers={"Content-Encoding": "gzip"})
    assert response.status_code == 400
    assert response.json()["success"] is False


@pytest.mark.parametrize("raw", [b"{not json", b"", b"[1, 2"])
def test_malformed_json_is_a_400_general_error(client: Client, raw: bytes) -> None:
    response = client.request("POST", "/v1/batch-query/", data=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    body = response.json()
    assert body["success"] is False
    assert re.fullmatch(r"[0-9A-F]{16}", body["processId"])
    [reason] = body["reasons"]
    assert isinstance(reason["code"], int) and reason["message"]


def _with_query(query: Any) -> dict[str, Any]:
    body = job_body()
    body["queries"][0]["query"] = query
    return body


def _with_first_query(**fields: Any) -> dict[str, Any]:
    body = job_body()
    body["queries"][0].update(fields)
    return body


SYNTAX_ERRORS = [
    "select from Account",
    "select Id from",
    "select Id Account",
    "select Id, from Account",
    "select * from Account",
    "select Id from Account where",
    "update Account set Name = 'x'",
    "select Id from Account; drop table x",
    "select Id-Name from Account",
    "",
]

REFUSALS = [
    *[pytest.param(_with_query(query), "90005", "syntax error", id=f"syntax:{query}") for query in SYNTAX_ERRORS],
    pytest.param(job_body(*[ACCOUNT_QUERY] * 51), "90004", "maximum of 50", id="51-queries"),
    pytest.param(job_body(queries=[]), "90016", "no queries", id="empty-queries"),
    pytest.param({"format": "csv"}, "90016", "no queries", id="missing-queries"),
    pytest.param(job_body(format="xml"), "90000", "'format'", id="format"),
    pytest.param(job_body(name="n" * 33), "90000", "'name'", id="name-33-chars"),
    pytest.param(job_body(version="2.0"), "90000", "'version'", id="version"),
    pytest.param(job_body(version="1.1"), "90000", "partner", id="stateful-without-partner"),
    pytest.param(job_body(version="1.1", partner="acme"), "90000", "project", id="stateful-without-project"),
    pytest.param(job_body(encrypted="pgp"), "90000", "'encrypted'", id="encrypted-pgp"),
    pytest.param(job_body(useQueryLabels="yes"), "90000", "'useQueryLabels'", id="useQueryLabels"),
    pytest.param(job_body(dateTimeUtc=1), "90000", "'dateTimeUtc'", id="dateTimeUtc"),
    pytest.param(job_body(offset=3601), "90000", "'offset'", id="offset-too-big"),
    pytest.param(job_body(offset="60"), "90000", "'offset'", id="offset-string"),
    pytest.param(job_body(queries="select Id from Account"), "90000", "'queries'", id="queries-not-a-list"),
    pytest.param(job_body(queries=["select Id from Account"]), "90000", "queries[0]", id="query-not-an-object"),
    pytest.param(_with_query(42), "90000", "queries[0].query", id="query-not-a-string"),
    pytest.param(_with_first_query(type="soql"), "90000", "'type'", id="query-type"),
    pytest.param(_with_first_query(deleted={"column": "IsDeleted"}), "90012", "deleted", id="deleted-stateless"),
    pytest.param(job_body(notifyUrl="https://x/" + "a" * 5000), "90014", "notifyURL", id="notifyUrl-too-long"),
    pytest.param(job_body(incrementalTime="yesterday"), "90015", "incremental", id="incrementalTime"),
    pytest.param([job_body()], "90000", "'body'", id="body-not-an-object"),
]


@pytest.mark.parametrize(("body", "code", "fragment"), REFUSALS)
def test_refusals_are_http_200_error_bodies(
    sim: AquaSimulator, client: Client, body: Any, code: str, fragment: str
) -> None:
    response = client.submit(body)
    assert response.status_code == 200
    refusal = response.json()
    assert set(refusal) == {"errorCode", "message"}
    assert refusal["errorCode"] == code
    assert fragment.lower() in refusal["message"].lower()
    assert sim.requests_for("submit")[-1].status == 200


def test_syntax_error_message_is_zuoras(client: Client) -> None:
    refusal = client.submit(_with_query("select from Account")).json()
    assert refusal["message"].startswith("There is a syntax error in one of the queries in the AQuA input.")


def test_fifty_queries_are_accepted(client: Client) -> None:
    assert len(client.submit_job(job_body(*[ACCOUNT_QUERY] * 50))["batches"]) == 50


@pytest.mark.parametrize(
    "query",
    [
        "select Id from Account",
        "SELECT Id,Name FROM Account WHERE Name = 'a, b'",
        "Select  Account.Id ,\n  Invoice.InvoiceNumber\nfrom InvoiceItem where Amount > 0 and Status != 'Draft'",
        "select AccountingCode,CancelledOn,CreatedDate,Id,ImpactAmount,Invoice.Id, InvoiceNumber"
        " from InvoiceAdjustment",
    ],
)
def test_accepted_zoql(client: Client, query: str) -> None:
    assert client.submit_job(_with_query(query))["batches"][0]["query"] == query


def test_string_booleans_are_accepted(client: Client) -> None:
    job = client.submit_job(job_body(useQueryLabels="TRUE", dateTimeUtc="false"))
    assert job["useQueryLabels"] is True and job["dateTimeUtc"] is False


def test_submit_without_trailing_slash(client: Client) -> None:
    response = requests.post(
        f"{client.base_url}/v1/batch-query", json=job_body(), headers=dict(client.session.headers), timeout=10
    )
    assert response.status_code == 200 and response.json()["status"] == "submitted"
