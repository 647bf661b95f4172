"""The sample tenant: seeded, Zuora-shaped Account and Subscription rows; off by default in-process."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tests.support.sim_client import Client, SimFactory, job_body


def _without_stamps(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{name: value for name, value in row.items() if not name.endswith("Date")} for row in rows]


def test_sample_data_is_seeded_and_spread_over_four_weeks(make_sim: SimFactory) -> None:
    first, again, other = (make_sim(sample_data=True, seed=seed) for seed in (7, 7, 8))
    for table in ("Account", "Subscription"):
        rows = first.tenant.rows(table)
        assert _without_stamps(rows) == _without_stamps(again.tenant.rows(table))
        assert _without_stamps(rows) != _without_stamps(other.tenant.rows(table))
        now = first.tenant.clock.now()
        assert all(row["CreatedDate"] <= row["UpdatedDate"] for row in rows)
        assert all(now - timedelta(days=28) <= row["UpdatedDate"] <= now for row in rows)
    accounts = {row["Id"] for row in first.tenant.rows("Account")}
    assert {
        row["AccountId"] for row in first.tenant.rows("Subscription")
    } <= accounts  # every subscription belongs to a sample account
    late = len(first.tenant.rows("Account")) - len(first.tenant.rows("Account", visible=True))
    assert late == 2  # late commits, not yet in the index


def test_in_process_simulators_start_empty(make_sim: SimFactory) -> None:
    sim = make_sim(job_seconds=0.2)
    assert sim.tenant.tables() == {}
    job, (records,) = Client(sim.base_url).export("select Id from Account")
    assert records[0]["Id"] == "Id-000001"  # generated rows, as before


def test_a_window_over_the_sample_exports_its_rows(make_sim: SimFactory) -> None:
    sim = make_sim(job_seconds=0.2, sample_data=True)
    now = sim.tenant.clock.now()
    start, end = now - timedelta(days=14), now - timedelta(days=7)
    window = f"UpdatedDate >= '{start.isoformat()}' and UpdatedDate < '{end.isoformat()}'"
    query = f"select Id, Name, Status from Subscription where {window}"
    job, (records,) = Client(sim.base_url).export_body(job_body(query))
    expected = [row for row in sim.tenant.rows("Subscription") if start <= row["UpdatedDate"] < end]
    assert len(records) == len(expected) > 20
    assert [record["Id"] for record in records] == [row["Id"] for row in expected]
