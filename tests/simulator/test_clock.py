"""The tenant's clock over HTTP: the ``Date`` header, its skew, and job times and stamps read from it."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime

import pytest
import requests

from airflow_provider_zuora_aqua.simulator import AquaSimulator
from tests.support.sim_client import TIMEOUT, Client, SimFactory, job_body

UTC = timezone.utc
SKEW = -900


def header_date(response: requests.Response) -> datetime:
    return parsedate_to_datetime(response.headers["Date"])


def job_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S%z")


def test_the_date_header_is_the_frozen_tenant_clock_to_the_second(make_sim: SimFactory) -> None:
    sim = make_sim(job_seconds=0.2)
    sim.tenant.clock.set("2026-03-01T08:15:59.999Z")
    client = Client(sim.base_url)
    for response in (
        client.get_job("nope"),
        client.submit(job_body()),
        requests.get(f"{sim.base_url}/_simulator/tenant", timeout=TIMEOUT),
    ):
        assert response.headers["Date"] == "Sun, 01 Mar 2026 08:15:59 GMT"


def test_a_skewed_clock_moves_date_job_times_and_stamps_together(make_sim: SimFactory) -> None:
    sim = make_sim(job_seconds=0.3, clock_skew=SKEW)
    client = Client(sim.base_url)
    real_before = datetime.now(UTC).replace(microsecond=0)
    submitted = client.submit(job_body("select Id from Account"))
    date = header_date(submitted)
    real_after = datetime.now(UTC)
    assert real_before + timedelta(seconds=SKEW) <= date <= real_after + timedelta(seconds=SKEW)
    row = sim.tenant.insert("Account", {"Id": "A1"})
    assert abs((row["UpdatedDate"] - date).total_seconds()) <= 1  # stamped by the same skewed clock
    done = client.wait_for(submitted.json()["id"], "completed")
    start, end = job_time(done["startTime"]), job_time(done["endTime"])
    answered = header_date(client.get_job(done["id"]))
    assert date <= start <= end <= answered  # job times on the tenant's clock, not the real one
    assert (datetime.now(UTC) - answered).total_seconds() >= -SKEW - 1


def test_skew_over_the_control_api(sim: AquaSimulator) -> None:
    control = f"{sim.base_url}/_simulator/tenant"
    assert requests.get(control, timeout=TIMEOUT).json()["skew"] == 0
    requests.post(f"{control}/clock", json={"skew": 600}, timeout=TIMEOUT).raise_for_status()
    answer = requests.get(control, timeout=TIMEOUT)
    assert answer.json()["skew"] == 600
    ahead = (header_date(answer) - datetime.now(UTC)).total_seconds()
    assert 598 <= ahead <= 601
    requests.post(f"{control}/clock", json={"now": "2026-01-01T00:00:00Z"}, timeout=TIMEOUT)
    assert requests.get(control, timeout=TIMEOUT).json()["skew"] is None  # a set clock has no skew
    requests.post(f"{control}/clock", json={"now": None}, timeout=TIMEOUT)
    assert requests.get(control, timeout=TIMEOUT).json()["skew"] == 0


@pytest.mark.parametrize("skew", ["soon", True, None])
def test_a_bad_skew_is_refused(sim: AquaSimulator, skew: object) -> None:
    answer = requests.post(f"{sim.base_url}/_simulator/tenant/clock", json={"skew": skew}, timeout=TIMEOUT)
    assert answer.status_code == 400 and "skew" in answer.json()["error"]
