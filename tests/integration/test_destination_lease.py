"""One writer per destination and query on S3: the lease object, against moto's S3 server on loopback."""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import datetime, timedelta
from typing import Any

import botocore.exceptions
import pytest

from airflow_provider_zuora_aqua.exceptions import AquaDestinationBusyError
from airflow_provider_zuora_aqua.incremental import lease as lease_module
from airflow_provider_zuora_aqua.incremental import lease_stores
from airflow_provider_zuora_aqua.incremental.lease import (
    DEFAULT_LEASE_TTL,
    LEASE_NAME,
    DestinationLease,
    utc_now,
)
from airflow_provider_zuora_aqua.results.destination import Destination, resolve_destination
from tests.support.leases import holder, race, two_hours_ago
from tests.support.s3 import fresh_bucket


@pytest.fixture
def s3_bucket(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A fresh bucket, and the Airflow connection ``aws_moto`` (type aws) pointing at the server."""
    return fresh_bucket(s3_server, monkeypatch, "leases")


def after_the_ttl() -> datetime:
    """A reader's clock past the TTL of anything written now."""
    return utc_now() + DEFAULT_LEASE_TTL + timedelta(minutes=1)


def query_folder(bucket: Any, prefix: str = "exports") -> Destination:
    return resolve_destination(f"s3://aws_moto@{bucket.bucket_name}/{prefix}").child("Account")


def stored(bucket: Any, prefix: str = "exports") -> dict | None:
    try:
        body = bucket.get_object(Bucket=bucket.bucket_name, Key=f"{prefix}/Account/{LEASE_NAME}")["Body"].read()
    except bucket.exceptions.NoSuchKey:
        return None
    return json.loads(body)


def test_moto_honours_conditional_writes(s3_bucket):
    """What the S3 lease relies on: If-None-Match: * and If-Match on PutObject, If-Match on DeleteObject."""
    bucket, key = s3_bucket.bucket_name, "probe.json"
    etag = s3_bucket.put_object(Bucket=bucket, Key=key, Body=b"1", IfNoneMatch="*")["ETag"]
    with pytest.raises(botocore.exceptions.ClientError, match="PreconditionFailed"):
        s3_bucket.put_object(Bucket=bucket, Key=key, Body=b"2", IfNoneMatch="*")
    with pytest.raises(botocore.exceptions.ClientError, match="PreconditionFailed"):
        s3_bucket.put_object(Bucket=bucket, Key=key, Body=b"2", IfMatch='"0123"')
    etag = s3_bucket.put_object(Bucket=bucket, Key=key, Body=b"2", IfMatch=etag)["ETag"]
    with pytest.raises(botocore.exceptions.ClientError, match="PreconditionFailed"):
        s3_bucket.delete_object(Bucket=bucket, Key=key, IfMatch='"0123"')
    s3_bucket.delete_object(Bucket=bucket, Key=key, IfMatch=etag)


class TestOneWriterOnS3:
    def test_a_second_writer_fails_naming_the_holder(self, s3_bucket):
        folder = query_folder(s3_bucket)
        with DestinationLease.acquire(folder, holder("a"), renew=False) as first:
            assert first.one_writer
            assert first.uri == f"s3://{s3_bucket.bucket_name}/exports/Account/{LEASE_NAME}"
            with pytest.raises(AquaDestinationBusyError) as raised:
                DestinationLease.acquire(folder, holder("b"), renew=False)
            for part in ("dag 'dag_a'", "task 'export'", "run 'manual__a'", "try 1", "host 'host-a'"):
                assert part in str(raised.value)
            assert raised.value.expires in str(raised.value)
            assert stored(s3_bucket)["token"] == first.token
            first.check()
        assert stored(s3_bucket) is None

    def test_released_then_taken_by_another(self, s3_bucket):
        folder = query_folder(s3_bucket)
        DestinationLease.acquire(folder, holder("a")).release()
        with DestinationLease.acquire(folder, holder("b")) as second:
            assert stored(s3_bucket)["holder"]["dag_id"] == "dag_b"
            second.check()

    def test_an_expired_lease_is_taken_over_and_its_old_holder_finds_out(self, s3_bucket):
        folder = query_folder(s3_bucket)
        dead = DestinationLease.acquire(folder, holder("dead"), clock=two_hours_ago, renew=False)
        taker = DestinationLease.acquire(folder, holder("b"), renew=False)
        assert stored(s3_bucket)["token"] == taker.token
        with pytest.raises(AquaDestinationBusyError, match="now held by dag 'dag_b'"):
            dead.check()
        dead.release()
        assert stored(s3_bucket)["token"] == taker.token  # the old holder's release removed nothing
        taker.release()
        assert stored(s3_bucket) is None

    def test_two_takers_racing_for_an_expired_lease_one_wins(self, s3_bucket):
        for round_ in range(20):
            folder = query_folder(s3_bucket, f"race-{round_}")
            DestinationLease.acquire(folder, holder("dead"), clock=two_hours_ago, renew=False)
            outcomes = race(folder, 2)
            winners = [outcome for outcome in outcomes if isinstance(outcome, DestinationLease)]
            assert len(winners) == 1, f"round {round_}: {outcomes}"
            assert all(isinstance(outcome, AquaDestinationBusyError) for outcome in outcomes if outcome not in winners)
            assert stored(s3_bucket, f"race-{round_}")["token"] == winners[0].token
            winners[0].check()

    def test_a_taker_that_judged_the_lease_expired_before_another_took_it_over_loses(self, s3_bucket, monkeypatch):
        """The race's worst order, made certain: B takes the lease over between A's judgement and A's put."""
        folder = query_folder(s3_bucket)
        DestinationLease.acquire(folder, holder("dead"), clock=two_hours_ago, renew=False)
        judge = lease_module.judge
        taken: list[DestinationLease] = []

        def judge_then_let_b_in(found: Any, ttl: timedelta) -> Any:
            state = judge(found, ttl)
            if not taken and state.expires < utc_now():
                monkeypatch.setattr(lease_module, "judge", judge)
                taken.append(DestinationLease.acquire(folder, holder("b"), renew=False))
            return state

        monkeypatch.setattr(lease_module, "judge", judge_then_let_b_in)
        with pytest.raises(AquaDestinationBusyError, match="dag 'dag_b'"):
            DestinationLease.acquire(folder, holder("a"), renew=False)
        assert stored(s3_bucket)["token"] == taken[0].token
        taken[0].check()

    def test_writers_racing_for_a_free_prefix_one_wins(self, s3_bucket):
        for round_ in range(10):
            folder = query_folder(s3_bucket, f"free-{round_}")
            outcomes = race(folder, 3)
            winners = [outcome for outcome in outcomes if isinstance(outcome, DestinationLease)]
            assert len(winners) == 1, f"round {round_}: {outcomes}"
            assert stored(s3_bucket, f"free-{round_}")["token"] == winners[0].token

    def test_renewal_keeps_a_short_lease_alive_past_its_ttl(self, s3_bucket):
        folder = query_folder(s3_bucket)
        ttl = timedelta(seconds=1)
        with DestinationLease.acquire(folder, holder("a"), ttl=ttl) as lease:
            first = stored(s3_bucket)
            time.sleep(2.2)
            with pytest.raises(AquaDestinationBusyError, match="dag 'dag_a'"):
                DestinationLease.acquire(folder, holder("b"), ttl=ttl, renew=False)
            lease.check()
            assert stored(s3_bucket)["expires"] > first["expires"]
        assert stored(s3_bucket) is None

    def test_the_renewer_finds_its_lease_taken_over(self, s3_bucket):
        folder = query_folder(s3_bucket)
        late = DestinationLease.acquire(folder, holder("late"), ttl=timedelta(seconds=1), clock=two_hours_ago)
        taker = DestinationLease.acquire(folder, holder("b"), renew=False)
        deadline = time.monotonic() + 5
        while not late.lost:
            assert time.monotonic() < deadline, "the renewer did not notice"
            time.sleep(0.05)
        with pytest.raises(AquaDestinationBusyError, match="lost"):
            late.check()
        assert stored(s3_bucket)["token"] == taker.token
        taker.release()


class TestUnreadableLeaseOnS3:
    @pytest.mark.parametrize("content", [b"{garbage", b"x" * (256 * 1024), b"[" * 50_000, b""])
    def test_held_until_its_last_change_plus_the_ttl_then_taken_over(self, s3_bucket, content):
        folder = query_folder(s3_bucket)
        s3_bucket.put_object(Bucket=s3_bucket.bucket_name, Key=f"exports/Account/{LEASE_NAME}", Body=content)
        with pytest.raises(AquaDestinationBusyError, match="not a lease this provider can read"):
            DestinationLease.acquire(folder, holder("b"), renew=False)
        with DestinationLease.acquire(folder, holder("b"), clock=after_the_ttl, renew=False) as taker:
            assert stored(s3_bucket)["token"] == taker.token


class TestStoreRefusingConditionalWrites:
    def test_falls_back_to_reading_back_and_says_it_cannot_guarantee_one_writer(self, s3_bucket, monkeypatch, caplog):
        put = lease_stores._S3Store._put

        def refusing(self: Any, data: bytes, **condition: str) -> str:
            if condition:
                error = botocore.exceptions.ClientError(
                    {"Error": {"Code": "NotImplemented", "Message": "no conditional writes"}}, "PutObject"
                )
                raise OSError(38, "no conditional writes") from error
            return put(self, data)

        monkeypatch.setattr(lease_stores._S3Store, "_put", refusing)
        folder = query_folder(s3_bucket)
        with caplog.at_level(logging.WARNING):
            first = DestinationLease.acquire(folder, holder("a"), renew=False)
        assert "cannot guarantee one writer" in caplog.text
        assert not first.one_writer
        assert stored(s3_bucket)["token"] == first.token
        with pytest.raises(AquaDestinationBusyError, match="dag 'dag_a'"):
            DestinationLease.acquire(folder, holder("b"), renew=False)
        first.renew()
        first.check()
        first.release()
        assert stored(s3_bucket) is None


def test_two_exports_writing_one_s3_destination_at_once_never_double_a_record(s3_bucket, tmp_path, monkeypatch):
    """Two DAGs export one query into one s3:// prefix at once: the second waits for the lease, then goes on."""
    import csv
    import io

    from airflow_provider_zuora_aqua.operators.aqua import AquaIncrementalExportOperator
    from airflow_provider_zuora_aqua.simulator import AquaSimulator
    from tests.support.credentials import CLIENT_ID, CLIENT_SECRET, CONN_ID, connection_json
    from tests.support.fakes import FakeTaskInstance, context

    bucket = s3_bucket.bucket_name
    with AquaSimulator(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, job_seconds=1) as sim:
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", connection_json(sim.base_url))
        now = sim.tenant.clock.now()
        for index in range(6):
            sim.tenant.insert(
                "Account", {"Id": f"A{index}", "Name": "x", "UpdatedDate": now - timedelta(hours=index + 1)}
            )
        errors: list[BaseException] = []

        def run(dag_id: str) -> None:
            operator = AquaIncrementalExportOperator(
                task_id="zuora_changes",
                queries={"Account": "select Id, Name, UpdatedDate from Account"},
                destination=f"s3://{bucket}/exports",
                destination_conn_id="aws_moto",
                start=(now - timedelta(days=1)).replace(microsecond=0).isoformat(),
                lag=timedelta(minutes=10),
                poll_interval=0.2,
            )
            try:
                operator.execute(context(FakeTaskInstance("zuora_changes", dag_id=dag_id)))
            except BaseException as exc:  # noqa: BLE001  (asserted below)
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(dag_id,)) for dag_id in ("dag_a", "dag_b")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)

    assert errors == []
    keys = [item["Key"] for item in s3_bucket.list_objects_v2(Bucket=bucket).get("Contents", [])]
    windows = sorted(key.split("/")[2].split("_") for key in keys if key.endswith("_manifest.json"))
    # The second writer planned from the first's mark: its window starts where the first ended.
    assert windows and all(left[1] == right[0] for left, right in zip(windows, windows[1:]))
    assert not any(key.endswith("_lease.json") for key in keys)
    ids = []
    for key in keys:
        if key.endswith(".csv"):
            body = s3_bucket.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
            ids += [row["Id"] for row in csv.DictReader(io.StringIO(body))]
    assert sorted(ids) == [f"A{index}" for index in range(6)]
