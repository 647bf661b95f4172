"""Late commits over HTTP: writes stamped in the past that the export index shows only later."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import requests

from airflow_provider_zuora_aqua.simulator import AquaSimulator
from tests.support.sim_client import TIMEOUT, Client, SimFactory, window_query

UTC = timezone.utc
NOW = datetime(2026, 2, 1, 12, 0, tzinfo=UTC)
TWO_HOURS = 7200


@pytest.fixture
def late_sim(make_sim: SimFactory) -> AquaSimulator:
    sim = make_sim(job_seconds=0.2)
    sim.tenant.clock.set(NOW)
    sim.tenant.insert("Account", {"Id": "A0", "Name": "on time", "UpdatedDate": NOW - timedelta(hours=3)})
    return sim


def _rows(sim: AquaSimulator, method: str, path: str, payload: dict) -> requests.Response:
    answer = requests.request(method, f"{sim.base_url}/_simulator/tables/Account/{path}", json=payload, timeout=TIMEOUT)
    assert answer.status_code == 200, answer.text
    return answer


def _window(start: datetime, end: datetime) -> str:
    return window_query(start.isoformat(), end.isoformat(), fields="Id, Name")


def test_a_late_insert_lands_in_a_window_already_exported(late_sim: AquaSimulator) -> None:
    client = Client(late_sim.base_url)
    # Zuora's own lag: the window ends 2 hours before now.
    window = _window(NOW - timedelta(hours=4), NOW - timedelta(hours=2))
    assert client.export(window)[1] == [[{"Id": "A0", "Name": "on time"}]]
    stored = _rows(
        late_sim, "POST", "rows", {"row": {"Id": "L1", "Name": "late"}, "late_by": 3 * 3600, "index_delay": 300}
    )
    assert stored.json()[0]["UpdatedDate"] == "2026-02-01T09:00:00Z"  # stamped 3 hours ago
    assert client.export(window)[1] == [[{"Id": "A0", "Name": "on time"}]]  # not in the index yet
    late_sim.tenant.clock.advance(300)
    assert client.export(window)[1] == [[{"Id": "A0", "Name": "on time"}, {"Id": "L1", "Name": "late"}]]


def test_late_updates_and_deletes(late_sim: AquaSimulator) -> None:
    patched = _rows(late_sim, "PATCH", "rows/A0", {"changes": {"Name": "renamed"}, "late_by": TWO_HOURS})
    assert patched.json()["UpdatedDate"] == "2026-02-01T10:00:00Z"
    deleted = _rows(late_sim, "DELETE", "rows/A0", {"late_by": 60})
    assert deleted.json()["UpdatedDate"] == "2026-02-01T11:59:00Z"
    rows = _rows(late_sim, "GET", "rows?deleted=true&visible=true", {}).json()
    assert [(row["Id"], row["IsDeleted"]) for row in rows] == [("A0", True)]


@pytest.mark.parametrize("late_by", [-1, "soon", True])
def test_a_bad_late_by_is_refused(late_sim: AquaSimulator, late_by: object) -> None:
    answer = requests.post(
        f"{late_sim.base_url}/_simulator/tables/Account/rows",
        json={"row": {"Id": "L2"}, "late_by": late_by},
        timeout=TIMEOUT,
    )
    assert answer.status_code == 400 and "late_by" in answer.json()["error"]
