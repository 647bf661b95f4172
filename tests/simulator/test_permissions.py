"""Queries on objects the API user may not read: Zuora ignores them (90018) and the job still completes."""

from __future__ import annotations

import pytest
import requests

from airflow_provider_zuora_aqua.simulator import AquaSimulator
from tests.support.sim_client import TIMEOUT, Client, SimFactory, job_body

ACCOUNTS = "select Id, Name from Account"
INVOICES = "select Id, InvoiceNumber from Invoice"
JOINED = "select Id, Account.Name from Subscription"  # touches Account through the join


@pytest.fixture
def denying_sim(make_sim: SimFactory) -> AquaSimulator:
    sim = make_sim(job_seconds=1.0, queue_seconds=0.8)
    sim.tenant.insert("Account", {"Id": "A1", "Name": "Acme"})
    return sim


def test_a_denied_object_s_queries_are_dropped_and_the_job_completes(denying_sim: AquaSimulator) -> None:
    denying_sim.tenant.deny("Account")
    client = Client(denying_sim.base_url)
    submitted = client.submit_job(job_body(ACCOUNTS, INVOICES, JOINED))
    # Submitted: every query is listed; Zuora drops them "during execution".
    assert [batch["name"] for batch in submitted["batches"]] == ["Q0", "Q1", "Q2"]
    assert [batch["name"] for batch in client.get_job(submitted["id"]).json()["batches"]] == ["Q0", "Q1", "Q2"]
    done = client.wait_for(submitted["id"], "completed")
    [invoices] = done["batches"]  # nothing in the job says what was dropped: Zuora documents nothing
    assert (invoices["name"], invoices["status"], invoices["message"]) == ("Q1", "completed", "")
    assert client.file(invoices["fileId"]).status_code == 200
    assert "errorCode" not in done and all("90018" not in str(value) for value in done.values())


def test_a_job_of_only_denied_queries_completes_empty(denying_sim: AquaSimulator) -> None:
    denying_sim.tenant.deny("Account")
    client = Client(denying_sim.base_url)
    done = client.wait_for(client.submit_job(job_body(ACCOUNTS))["id"], "completed")
    assert done["batches"] == []


def test_permissions_over_the_control_api(denying_sim: AquaSimulator) -> None:
    control = f"{denying_sim.base_url}/_simulator/tenant"
    answer = requests.post(f"{control}/denied", json={"objects": ["Invoice", "Account"]}, timeout=TIMEOUT)
    assert answer.json() == {"denied_objects": ["Account", "Invoice"]}
    assert requests.get(control, timeout=TIMEOUT).json()["denied_objects"] == ["Account", "Invoice"]
    client = Client(denying_sim.base_url)
    assert client.wait_for(client.submit_job(job_body(ACCOUNTS))["id"], "completed")["batches"] == []
    requests.post(f"{control}/denied", json={"objects": []}, timeout=TIMEOUT).raise_for_status()
    [accounts] = client.wait_for(client.submit_job(job_body(ACCOUNTS))["id"], "completed")["batches"]
    assert accounts["recordCount"] == 1
    refused = requests.post(f"{control}/denied", json={"objects": ["bad name"]}, timeout=TIMEOUT)
    assert refused.status_code == 400 and requests.get(control, timeout=TIMEOUT).json()["denied_objects"] == []
