"""Export ZOQL's relative date expressions and whole-day dates, exported over HTTP."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from airflow_provider_zuora_aqua.simulator import AquaSimulator
from tests.support.sim_client import Client, SimFactory, job_body

UTC = timezone.utc
# 2026-03-10 10:00 in Los Angeles (PDT, -07:00 since March 8).
NOW = datetime(2026, 3, 10, 17, 0, tzinfo=UTC)
ROWS = {
    "yesterday_late": "2026-03-10T06:59:59Z",  # 23:59:59 on the 9th, Los Angeles
    "today_early": "2026-03-10T07:00:00Z",  # midnight of the 10th
    "hour_ago": "2026-03-10T16:00:00Z",
    "month_ago": "2026-02-10T18:00:00Z",  # 10:00 PST on Feb 10
    "two_days_ago": "2026-03-08T12:00:00Z",
}


@pytest.fixture
def dated_sim(make_sim: SimFactory) -> AquaSimulator:
    sim = make_sim(job_seconds=0.2)
    sim.tenant.clock.set(NOW)
    sim.tenant.insert_many("Account", [{"Id": key, "UpdatedDate": value} for key, value in ROWS.items()])
    return sim


def _ids(sim: AquaSimulator, where: str, query_type: str = "zoqlexport") -> list[str] | str:
    body = job_body(f"select Id from Account where {where}")
    body["queries"][0]["type"] = query_type
    answer = Client(sim.base_url).submit(body).json()
    if "errorCode" in answer:
        return answer["errorCode"]
    _, (records,) = Client(sim.base_url).export_body(body)
    return sorted(record["Id"] for record in records)


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("UpdatedDate >= 'now - 1 hour'", ["hour_ago"]),
        ("UpdatedDate >= 'now - 1 day'", ["hour_ago", "today_early", "yesterday_late"]),
        ("UpdatedDate = 'today'", ["hour_ago", "today_early"]),
        ("UpdatedDate = 'today - 1 day'", ["yesterday_late"]),
        ("UpdatedDate < 'today'", ["month_ago", "two_days_ago", "yesterday_late"]),
        ("UpdatedDate > 'today - 1 day'", ["hour_ago", "today_early"]),
        ("UpdatedDate <= 'today - 2 days'", ["month_ago", "two_days_ago"]),
        ("UpdatedDate = 'now - 1 month'", ["month_ago"]),  # calendar months, across the DST change
        ("UpdatedDate >= 'today (UTC)'", ["hour_ago", "today_early", "yesterday_late"]),
        ("UpdatedDate >= 'today (+09:00)'", ["hour_ago"]),  # already the 11th in Tokyo's offset
        ("UpdatedDate = 'today - 1 day (Los Angeles)'", ["yesterday_late"]),
        ("UpdatedDate = '2026-03-09'", ["yesterday_late"]),  # a date alone is its whole day
        ("UpdatedDate > '2026-03-09'", ["hour_ago", "today_early"]),
    ],
)
def test_relative_expressions_in_export_zoql(dated_sim: AquaSimulator, where: str, expected: list[str]) -> None:
    assert _ids(dated_sim, where) == expected


def test_standard_zoql_has_no_relative_expressions(dated_sim: AquaSimulator) -> None:
    assert _ids(dated_sim, "UpdatedDate >= 'now - 1 day'", query_type="zoql") == "90005"


def test_an_unknown_time_zone_is_refused(dated_sim: AquaSimulator) -> None:
    assert _ids(dated_sim, "UpdatedDate >= 'today (Atlantis)'") == "90005"
