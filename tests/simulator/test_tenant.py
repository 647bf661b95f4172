"""The tenant's data model, and exports of its tables over real HTTP."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import requests

from airflow_provider_zuora_aqua.simulator import QUERY_TIME_LIMIT_MESSAGE, AquaSimulator
from airflow_provider_zuora_aqua.simulator.tenant import Tenant
from tests.support.sim_client import (
    TIMEOUT,
    Client,
    SimFactory,
    csv_records,
    job_body,
    stateful_body,
    window_query,
)

UTC = timezone.utc
NOW = datetime(2024, 1, 1, 12, 0, 0, 250_000, tzinfo=UTC)
DAY = "2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z"


@pytest.fixture
def tenant() -> Tenant:
    tenant = Tenant()
    tenant.clock.set(NOW)
    return tenant


# The model


def test_writes_stamp_whole_seconds_from_the_tenant_clock(tenant: Tenant) -> None:
    row = tenant.insert("Account", {"Id": "A1", "Name": "Acme"})
    assert row["UpdatedDate"] == row["CreatedDate"] == NOW.replace(microsecond=0)
    tenant.clock.advance(60)
    updated = tenant.update("Account", "A1", {"Name": "Acme Inc"})
    assert updated["UpdatedDate"] == datetime(2024, 1, 1, 12, 1, tzinfo=UTC)
    assert updated["CreatedDate"] == row["CreatedDate"]
    tenant.clock.advance(60)
    quiet = tenant.update("Account", "A1", {"Notes": "no stamp"}, stamp=False)
    assert quiet["UpdatedDate"] == updated["UpdatedDate"]
    given = tenant.update("Account", "A1", {"UpdatedDate": "2023-06-01T00:00:00.9+02:00"})
    assert given["UpdatedDate"] == datetime(2023, 5, 31, 22, tzinfo=UTC)
    assert tenant.rows("Account") == [given]
    assert tenant.insert("Account", {})["Id"]  # an Id is generated when not given


@pytest.mark.parametrize(
    "row",
    [
        {"Id": "A1"},  # exists
        {"Id": 7},
        {"Id": "B", "UpdatedDate": "2024-01-01T00:00:00"},  # no offset: ambiguous
        {"Id": "B", "UpdatedDate": datetime(2024, 1, 1)},  # naive
        {"Id": "B", "Nested": {"a": 1}},
        {"Id": "B", "bad name": 1},
    ],
)
def test_bad_writes_are_refused(tenant: Tenant, row: dict[str, object]) -> None:
    tenant.insert("Account", {"Id": "A1"})
    with pytest.raises(ValueError):
        tenant.insert("Account", row)


def test_updates_and_deletes_need_a_live_row(tenant: Tenant) -> None:
    tenant.insert("Account", {"Id": "A1"})
    tenant.delete("Account", "A1")
    for write in (lambda: tenant.update("Account", "A1", {"Name": "x"}), lambda: tenant.delete("Account", "A1")):
        with pytest.raises(KeyError):
            write()
    with pytest.raises(KeyError):
        tenant.rows("Nope")


def test_late_rows_appear_with_their_updated_date_in_the_past(tenant: Tenant) -> None:
    tenant.insert("Account", {"Id": "early", "Name": "v1"})
    tenant.insert("Account", {"Id": "late"}, index_delay=300)
    tenant.update("Account", "early", {"Name": "v2"}, index_delay=300)
    assert [row["Id"] for row in tenant.rows("Account")] == ["early", "late"]
    visible = tenant.rows("Account", visible=True)
    assert [(row["Id"], row["Name"]) for row in visible] == [("early", "v1")]  # the old version, until indexed
    tenant.clock.advance(300)
    visible = tenant.rows("Account", visible=True)
    assert [(row["Id"], row.get("Name")) for row in visible] == [("early", "v2"), ("late", None)]
    assert visible[1]["UpdatedDate"] == NOW.replace(microsecond=0)  # five minutes in the past now


def test_deleted_rows_are_kept_30_days(tenant: Tenant) -> None:
    tenant.insert("Account", {"Id": "A1", "Name": "gone"})
    tenant.insert("Account", {"Id": "A2"})
    tenant.clock.advance(10)
    tenant.delete("Account", "A1")
    assert [row["Id"] for row in tenant.rows("Account")] == ["A2"]
    with_deleted = tenant.rows("Account", deleted=True)
    assert [(row["Id"], row["IsDeleted"]) for row in with_deleted] == [("A1", True), ("A2", False)]
    assert with_deleted[0]["UpdatedDate"] == NOW.replace(microsecond=0) + timedelta(seconds=10)
    tenant.clock.advance(30 * 86400 + 1)
    assert [row["Id"] for row in tenant.rows("Account", deleted=True)] == ["A2"]


def test_clock_set_running_advance_reset(tenant: Tenant) -> None:
    assert tenant.clock.frozen and tenant.clock.now() == NOW
    tenant.clock.set("2030-01-01T00:00:00Z", running=True)
    assert not tenant.clock.frozen and tenant.clock.now() >= datetime(2030, 1, 1, tzinfo=UTC)
    tenant.clock.reset()
    assert abs((tenant.clock.now() - datetime.now(UTC)).total_seconds()) < 5


# Exports over HTTP


@pytest.fixture
def data_sim(make_sim: SimFactory) -> AquaSimulator:
    sim = make_sim(job_seconds=0.2)
    sim.tenant.clock.set(NOW)
    return sim


def test_a_window_exports_exactly_the_matching_rows(data_sim: AquaSimulator) -> None:
    tenant = data_sim.tenant
    tenant.insert("Account", {"Id": "before", "Name": "x", "UpdatedDate": "2023-12-31T23:59:59Z"})
    tenant.insert("Account", {"Id": "first", "Name": 'a "quoted", multi-line\nname', "UpdatedDate": DAY[0]})
    tenant.insert("Account", {"Id": "last", "Name": None, "UpdatedDate": "2024-01-01T23:59:59Z"})
    tenant.insert("Account", {"Id": "after", "Name": "x", "UpdatedDate": DAY[1]})
    job, (records,) = Client(data_sim.base_url).export(window_query(*DAY), dateTimeUtc=True, nullReplacement="NULL")
    assert job["status"] == "completed" and job["batches"][0]["recordCount"] == 2
    assert records == [
        {"Id": "first", "Name": 'a "quoted", multi-line\nname', "UpdatedDate": "2024-01-01T00:00:00+0000"},
        {"Id": "last", "Name": "NULL", "UpdatedDate": "2024-01-01T23:59:59+0000"},
    ]


def test_an_empty_window_exports_no_rows(data_sim: AquaSimulator) -> None:
    data_sim.tenant.insert("Account", {"Id": "A1", "UpdatedDate": "2023-06-01T00:00:00Z"})
    job, (records,) = Client(data_sim.base_url).export(window_query(*DAY))
    assert job["batches"][0]["recordCount"] == 0 and records == []


def test_date_times_render_in_the_tenant_zone_without_date_time_utc(make_sim: SimFactory) -> None:
    sim = make_sim(job_seconds=0.2, time_zone="Europe/Berlin")
    sim.tenant.insert("Account", {"Id": "A1", "UpdatedDate": "2024-07-01T10:00:00Z"})
    _, (records,) = Client(sim.base_url).export("select Id, UpdatedDate from Account")
    assert records[0]["UpdatedDate"] == "2024-07-01T12:00:00+02:00"


@pytest.mark.parametrize("file_format", ["gzip", "zip"])
def test_table_rows_in_gzip_and_zip(data_sim: AquaSimulator, file_format: str) -> None:
    data_sim.tenant.insert_many("Account", [{"Id": f"A{i}", "UpdatedDate": DAY[0]} for i in range(3)])
    _, (records,) = Client(data_sim.base_url).export(window_query(*DAY, fields="Id"), format=file_format)
    assert [record["Id"] for record in records] == ["A0", "A1", "A2"]


def test_objects_without_a_table_keep_generated_rows(data_sim: AquaSimulator) -> None:
    data_sim.tenant.insert("Account", {"Id": "A1"})
    job, (records,) = Client(data_sim.base_url).export("select Id from Invoice where UpdatedDate >= '2024-01-01'")
    assert job["batches"][0]["recordCount"] == len(records) > 0 and records[0]["Id"] == "Id-000001"


def test_unterminated_quote_and_bad_cursor_bounds_are_refused_at_submit(data_sim: AquaSimulator) -> None:
    data_sim.tenant.create_table("Account")
    client = Client(data_sim.base_url)
    for query in (
        "select Id from Account where UpdatedDate >= '2024-01-01T00:00:00Z",
        "select Id from Invoice where Name = 'no end",
        "select Id from Account where UpdatedDate >= '{{ ds }}'",
    ):
        response = client.submit(job_body(query))
        assert response.status_code == 200
        assert response.json()["errorCode"] == "90005" and "id" not in response.json()
        assert "syntax error" in response.json()["message"]
    assert data_sim.job_ids() == []


def test_incremental_windows_add_up_to_the_table(data_sim: AquaSimulator) -> None:
    """Writes between and during runs, some late in the index: the union of windows is the table."""
    tenant, client = data_sim.tenant, Client(data_sim.base_url)
    tenant.clock.set("2024-01-01T00:00:00Z")
    lag = timedelta(minutes=5)
    exported: dict[str, dict[str, str]] = {}
    mark = datetime(2024, 1, 1, tzinfo=UTC)
    for run in range(6):
        # Between runs: inserts, updates, a delete, and a row stamped before the next window's end
        # that reaches the index 5 minutes late, shortly before the run (within the lag).
        tenant.insert("Account", {"Id": f"R{run}", "Name": "new"})
        if run:
            tenant.update("Account", f"R{run - 1}", {"Name": f"changed in run {run}"})
        if run == 3:
            tenant.delete("Account", "R0")
        tenant.clock.advance(3200)
        tenant.insert("Account", {"Id": f"L{run}", "Name": "late"}, index_delay=300)
        tenant.clock.advance(400)
        end = tenant.clock.now() - lag
        query = window_query(mark.isoformat(), end.isoformat())
        # During the run: a write that lands after the window's end.
        tenant.insert("Account", {"Id": f"D{run}", "Name": "during"})
        body = job_body(query)
        body["queries"][0]["deleted"] = {"column": "IsDeleted", "format": "Numeric", "forceExport": True}
        job, (records,) = client.export_body(body)
        assert job["status"] == "completed"
        for record in records:
            if record.pop("Account.IsDeleted") == "1":
                exported.pop(record["Id"], None)
            else:
                exported[record["Id"]] = record
        mark = end
    below_mark = [row for row in tenant.rows("Account") if row["UpdatedDate"] < mark]
    assert sorted(exported) == sorted(row["Id"] for row in below_mark)
    assert all(exported[row["Id"]]["Name"] == row["Name"] for row in below_mark)
    assert "R0" not in exported and {"L0", "D4"} <= set(exported)


def test_a_row_later_in_the_index_than_the_lag_is_missed(data_sim: AquaSimulator) -> None:
    """The hazard the lag is for: a window exported before a late row reached the index."""
    data_sim.tenant.insert("Account", {"Id": "late"}, index_delay=600)
    data_sim.tenant.clock.advance(300)
    window = window_query(NOW.isoformat(), (NOW + timedelta(seconds=1)).isoformat(), fields="Id")
    client = Client(data_sim.base_url)
    assert client.export(window)[1] == [[]]
    data_sim.tenant.clock.advance(300)
    assert client.export(window)[1] == [[{"Id": "late"}]]


def test_deleted_rows_come_with_the_deleted_column(data_sim: AquaSimulator) -> None:
    tenant, client = data_sim.tenant, Client(data_sim.base_url)
    tenant.insert_many("Account", [{"Id": "keep"}, {"Id": "drop"}])
    tenant.delete("Account", "drop")
    query = "select Id from Account"
    for deleted_format, marks in (("Numeric", ("0", "1")), ("Boolean", ("false", "true"))):
        deleted = {"column": "WasDeleted", "format": deleted_format, "forceExport": True}
        body = job_body(query)
        body["queries"][0]["deleted"] = deleted
        _, (records,) = client.export_body(body)
        assert records == [
            {"Id": "drop", "Account.WasDeleted": marks[1]},
            {"Id": "keep", "Account.WasDeleted": marks[0]},
        ]
    _, (plain,) = client.export(query)
    assert plain == [{"Id": "keep"}]


def test_the_deleted_column_comes_first_named_after_the_object(data_sim: AquaSimulator) -> None:
    """Zuora's own example file starts ``Account.MyDeleted,Account: ID,...`` (and ``0,...`` rows)."""
    data_sim.tenant.insert("Account", {"Id": "A1", "Name": "Acme"})
    client = Client(data_sim.base_url)
    body = job_body("select Id, Name from account")
    body["queries"][0]["deleted"] = {"column": "MyDeleted", "format": "Numeric", "forceExport": True}
    job = client.wait_for(client.submit_job(body)["id"], "completed")
    assert client.file(job["batches"][0]["fileId"]).text.splitlines() == ["Account.MyDeleted,Id,Name", "0,A1,Acme"]


def test_a_file_over_the_size_cap_answers_403(make_sim: SimFactory) -> None:
    sim = make_sim(job_seconds=0.2, max_file_bytes=1000)
    sim.tenant.insert_many(
        "Account", [{"Id": f"A{i:04d}", "Name": "x" * 20, "UpdatedDate": DAY[0]} for i in range(100)]
    )
    client = Client(sim.base_url)
    small = client.submit_job(job_body(window_query(DAY[0], "2024-01-01T00:00:00Z")))
    big = client.submit_job(job_body(window_query(*DAY)))
    big_file = client.wait_for(big["id"], "completed")["batches"][0]["fileId"]
    refused = client.file(big_file)
    assert refused.status_code == 403
    assert refused.text == "<security:max-object-size>1MB</security:max-object-size>"
    small_file = client.wait_for(small["id"], "completed")["batches"][0]["fileId"]
    assert client.file(small_file).status_code == 200


def test_the_query_time_limit_aborts_the_batch_and_the_job(make_sim: SimFactory) -> None:
    sim = make_sim(job_seconds=0.3, max_query_rows=5)
    sim.tenant.insert_many("Account", [{"Id": f"A{i}", "UpdatedDate": DAY[0]} for i in range(6)])
    sim.tenant.insert_many("Invoice", [{"Id": f"I{i}", "UpdatedDate": DAY[0]} for i in range(5)])
    client = Client(sim.base_url)
    fits = window_query(*DAY, table="Invoice", fields="Id")
    too_long = window_query(*DAY, fields="Id")
    job, files = client.export(fits, too_long, fits)
    assert job["status"] == "aborted" and "endTime" in job
    first, second, third = job["batches"]
    assert (first["status"], first["recordCount"], len(files[0])) == ("completed", 5, 5)
    assert (second["status"], second["message"], second["recordCount"]) == ("aborted", QUERY_TIME_LIMIT_MESSAGE, 0)
    assert "fileId" not in second
    assert (third["status"], third["message"]) == ("aborted", "")


def test_a_snapshot_is_taken_at_submit(make_sim: SimFactory) -> None:
    sim = make_sim(job_seconds=0.5)
    client = Client(sim.base_url)
    sim.tenant.insert("Account", {"Id": "A1"})
    job = client.submit_job(job_body("select Id from Account"))
    sim.tenant.insert("Account", {"Id": "A2"})
    done = client.wait_for(job["id"], "completed")
    assert csv_records(client.file(done["batches"][0]["fileId"]).content) == [{"Id": "A1"}]


def test_a_stateful_session_exports_everything_then_what_changed(data_sim: AquaSimulator) -> None:
    tenant, client = data_sim.tenant, Client(data_sim.base_url)
    tenant.insert_many("Account", [{"Id": "A1"}, {"Id": "A2"}, {"Id": "A3"}])
    tenant.delete("Account", "A3")
    body = stateful_body("select Id from Account")
    body["queries"][0]["deleted"] = {"column": "IsDeleted", "format": "Boolean"}
    first, (full,) = client.export_body(body)
    assert first["batches"][0]["full"] is True
    assert full == [
        {"Id": "A1", "Account.IsDeleted": "false"},
        {"Id": "A2", "Account.IsDeleted": "false"},
    ]  # none deleted
    tenant.clock.advance(60)
    tenant.update("Account", "A1", {"Name": "changed"})
    tenant.delete("Account", "A2")
    tenant.insert("Account", {"Id": "A4"})
    second, (increment,) = client.export_body(body)
    assert second["batches"][0]["full"] is False
    assert increment == [
        {"Id": "A1", "Account.IsDeleted": "false"},
        {"Id": "A2", "Account.IsDeleted": "true"},
        {"Id": "A4", "Account.IsDeleted": "false"},
    ]


# The control API


def _control(sim: AquaSimulator, method: str, path: str, **kwargs: object) -> requests.Response:
    return requests.request(method, f"{sim.base_url}/_simulator/{path}", timeout=TIMEOUT, **kwargs)


def test_tenant_over_the_control_api(data_sim: AquaSimulator) -> None:
    sim = data_sim
    assert _control(sim, "POST", "tenant/clock", json={"now": "2024-01-01T00:00:00Z"}).json() == {
        "now": "2024-01-01T00:00:00Z",
        "frozen": True,
    }
    inserted = _control(sim, "POST", "tables/Account/rows", json={"rows": [{"Id": "A1", "Balance": 5}]})
    assert inserted.json() == [
        {"Id": "A1", "Balance": 5, "CreatedDate": "2024-01-01T00:00:00Z", "UpdatedDate": "2024-01-01T00:00:00Z"}
    ]
    late = _control(sim, "POST", "tables/Account/rows", json={"row": {"Id": "A2"}, "index_delay": 60})
    assert late.status_code == 200
    assert [row["Id"] for row in _control(sim, "GET", "tables/Account/rows?visible=true").json()] == ["A1"]
    assert _control(sim, "POST", "tenant/clock", json={"advance": 60}).json()["now"] == "2024-01-01T00:01:00Z"
    assert [row["Id"] for row in _control(sim, "GET", "tables/Account/rows?visible=1").json()] == ["A1", "A2"]
    patched = _control(sim, "PATCH", "tables/Account/rows/A1", json={"changes": {"Balance": 0}})
    assert patched.json()["Balance"] == 0 and patched.json()["UpdatedDate"] == "2024-01-01T00:01:00Z"
    assert _control(sim, "DELETE", "tables/Account/rows/A2").json()["Id"] == "A2"
    rows = _control(sim, "GET", "tables/Account/rows", params={"deleted": "true"}).json()
    assert [(row["Id"], row["IsDeleted"]) for row in rows] == [("A1", False), ("A2", True)]
    assert _control(sim, "POST", "tables/Invoice").status_code == 200
    state = _control(sim, "GET", "tenant").json()
    assert state["tables"] == {"Account": 1, "Invoice": 0} and state["time_zone"] == "America/Los_Angeles"
    assert _control(sim, "POST", "tenant/clock", json={"now": None}).json()["frozen"] is False


@pytest.mark.parametrize(
    ("method", "path", "payload", "status"),
    [
        ("GET", "tables/Nope/rows", None, 404),
        ("PATCH", "tables/Account/rows/nope", {"changes": {}}, 404),
        ("DELETE", "tables/Account/rows/nope", None, 404),
        ("POST", "tables/Account/rows", {"rows": [{"Id": "A1"}]}, 400),  # exists
        ("POST", "tables/Account/rows", {"rows": "A2"}, 400),
        ("POST", "tables/Account/rows", {"row": {"Id": "A2"}, "index_delay": "soon"}, 400),
        ("POST", "tables/Account/rows", {"row": {"Id": "A2"}, "bogus": 1}, 400),
        ("PATCH", "tables/Account/rows/A1", {"changes": []}, 400),
        ("POST", "tenant/clock", {"now": "noon"}, 400),
        ("POST", "tables/bad-name", None, 400),
    ],
)
def test_control_api_refusals(data_sim: AquaSimulator, method: str, path: str, payload: object, status: int) -> None:
    data_sim.tenant.insert("Account", {"Id": "A1"})
    response = _control(data_sim, method, path, json=payload)
    assert response.status_code == status and response.json()["error"]


def test_query_labels_name_table_columns_by_object_and_api_name(data_sim: AquaSimulator) -> None:
    """Zuora: useQueryLabels "will use object and field API names for the CSV header output"."""
    data_sim.tenant.insert("Subscription", {"Id": "S1", "Name": "A-S00000001", "Account.Name": "Acme"})
    client = Client(data_sim.base_url)
    body = job_body("select Id, Name, Account.Name from Subscription", useQueryLabels=True)
    body["queries"][0]["deleted"] = {"column": "IsDeleted", "format": "Boolean", "forceExport": True}
    job = client.wait_for(client.submit_job(body)["id"], "completed")
    assert client.file(job["batches"][0]["fileId"]).text.splitlines() == [
        "Subscription.IsDeleted,Subscription.Id,Subscription.Name,Account.Name",
        "false,S1,A-S00000001,Acme",
    ]
