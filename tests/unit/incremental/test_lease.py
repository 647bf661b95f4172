"""One writer per destination and query: the lease file in a query's folder, on a local disk."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

from airflow_provider_zuora_aqua.exceptions import AquaConfigurationError, AquaDestinationBusyError
from airflow_provider_zuora_aqua.incremental import lease as lease_module
from airflow_provider_zuora_aqua.incremental import lease_stores
from airflow_provider_zuora_aqua.incremental.lease import (
    DEFAULT_LEASE_TTL,
    LEASE_NAME,
    DestinationLease,
    LeaseHolder,
    utc_now,
)
from airflow_provider_zuora_aqua.incremental.ledger import published_windows, window_folder
from airflow_provider_zuora_aqua.incremental.windows import UTC, Window
from airflow_provider_zuora_aqua.results.destination import Destination, resolve_destination
from tests.support.leases import holder, race, two_hours_ago


@pytest.fixture
def folder(tmp_path: Path) -> Destination:
    return resolve_destination(tmp_path / "exports").child("Account")


def lease_file(folder: Destination) -> Path:
    assert folder.local is not None
    return folder.local / LEASE_NAME


def on_disk(folder: Destination) -> dict:
    return json.loads(lease_file(folder).read_text())


def age(path: Path, seconds: float) -> None:
    """Make ``path`` look last changed ``seconds`` ago."""
    then = time.time() - seconds
    os.utime(path, (then, then), follow_symlinks=False)


class TestOneWriter:
    def test_a_second_writer_fails_naming_the_holder_and_the_expiry(self, folder):
        with DestinationLease.acquire(folder, holder("a"), renew=False) as first:
            with pytest.raises(AquaDestinationBusyError) as raised:
                DestinationLease.acquire(folder, holder("b", try_number=2), renew=False)

            message = str(raised.value)
            for part in ("dag 'dag_a'", "task 'export'", "run 'manual__a'", "try 1", "host 'host-a'", LEASE_NAME):
                assert part in message
            assert raised.value.expires is not None and raised.value.expires in message
            assert raised.value.holder == holder("a").to_json()
            assert "retry" in message and "its own destination" in message
            assert on_disk(folder)["token"] == first.token  # the loser wrote nothing
            first.check()

    def test_the_file_says_who_holds_it_and_until_when(self, folder):
        with DestinationLease.acquire(folder, holder("a"), renew=False) as lease:
            written = on_disk(folder)
        assert written["holder"] == {
            "dag_id": "dag_a",
            "task_id": "export",
            "run_id": "manual__a",
            "try_number": 1,
            "map_index": -1,
            "host": "host-a",
        }
        assert written["token"] == lease.token and len(lease.token) == 32
        expires = datetime.fromisoformat(written["expires"].replace("Z", "+00:00"))
        acquired = datetime.fromisoformat(written["acquired"].replace("Z", "+00:00"))
        assert expires - acquired == DEFAULT_LEASE_TTL

    def test_a_released_lease_can_be_taken_at_once(self, folder):
        first = DestinationLease.acquire(folder, holder("a"))
        first.release()
        assert not lease_file(folder).exists()
        with pytest.raises(AquaDestinationBusyError, match="released"):
            first.check()  # nothing may be published after the release

        with DestinationLease.acquire(folder, holder("b")) as second:
            assert on_disk(folder)["holder"]["dag_id"] == "dag_b"
            second.check()
        assert not lease_file(folder).exists()

    def test_a_release_leaves_the_lease_of_another_holder_alone(self, folder):
        first = DestinationLease.acquire(folder, holder("a"), clock=two_hours_ago, renew=False)
        second = DestinationLease.acquire(folder, holder("b"), renew=False)  # took the expired lease over
        first.release()
        assert on_disk(folder)["token"] == second.token
        second.release()

    def test_one_lease_per_query_folder(self, tmp_path):
        destination = resolve_destination(tmp_path)
        with DestinationLease.acquire(destination.child("Account"), holder("a"), renew=False):
            with DestinationLease.acquire(destination.child("Invoice"), holder("b"), renew=False):
                pass

    def test_the_window_reader_ignores_the_lease(self, tmp_path):
        destination = resolve_destination(tmp_path)
        window = Window(datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 2, tzinfo=UTC))
        published = window_folder(destination, "Account", window).local
        published.mkdir(parents=True)
        manifest = {"query": "Account", "window": window.to_json("UpdatedDate"), "files": []}
        (published / "_manifest.json").write_text(json.dumps(manifest))
        with DestinationLease.acquire(destination.child("Account"), holder("a"), renew=False):
            assert published_windows(destination, "Account", "UpdatedDate") == [window]


class TestTakeOver:
    def test_an_expired_lease_is_taken_over_and_its_old_holder_finds_out(self, folder):
        dead = DestinationLease.acquire(folder, holder("dead"), clock=two_hours_ago, renew=False)

        with DestinationLease.acquire(folder, holder("b"), renew=False) as taker:
            assert on_disk(folder)["token"] == taker.token
            with pytest.raises(AquaDestinationBusyError) as raised:
                dead.check()
            assert "lost" in str(raised.value) and "dag 'dag_b'" in str(raised.value)
            assert raised.value.holder == holder("b").to_json()
            taker.check()
        assert dead.lost
        assert sorted(path.name for path in folder.local.iterdir()) == []  # nothing left aside

    def test_two_takers_racing_for_an_expired_lease_one_wins(self, tmp_path):
        for round_ in range(20):
            folder = resolve_destination(tmp_path / str(round_)).child("Account")
            DestinationLease.acquire(folder, holder("dead"), clock=two_hours_ago, renew=False)
            outcomes = race(folder, 2)

            winners = [outcome for outcome in outcomes if isinstance(outcome, DestinationLease)]
            assert len(winners) == 1, f"round {round_}: {outcomes}"
            assert all(isinstance(outcome, AquaDestinationBusyError) for outcome in outcomes if outcome not in winners)
            assert on_disk(folder)["token"] == winners[0].token
            winners[0].check()
            assert [path.name for path in folder.local.iterdir()] == [LEASE_NAME]

    def test_a_taker_that_judged_the_lease_expired_before_another_took_it_over_loses(self, folder, monkeypatch):
        """The race's worst order, made certain: B takes the lease over between A's judgement and A's replace."""
        DestinationLease.acquire(folder, holder("dead"), clock=two_hours_ago, renew=False)
        other = interleave_a_taker(monkeypatch, folder)

        with pytest.raises(AquaDestinationBusyError, match="dag 'dag_b'"):
            DestinationLease.acquire(folder, holder("a"), renew=False)
        assert isinstance(other[0], DestinationLease)
        assert on_disk(folder)["token"] == other[0].token
        other[0].check()
        assert [path.name for path in folder.local.iterdir()] == [LEASE_NAME]

    def test_writers_racing_for_a_free_folder_one_wins(self, tmp_path):
        for round_ in range(20):
            folder = resolve_destination(tmp_path / str(round_)).child("Account")
            outcomes = race(folder, 3)
            winners = [outcome for outcome in outcomes if isinstance(outcome, DestinationLease)]
            assert len(winners) == 1, f"round {round_}: {outcomes}"
            assert on_disk(folder)["token"] == winners[0].token
            # The losers read the winner's whole lease, never a half-written one.
            losers = [outcome for outcome in outcomes if outcome is not winners[0]]
            assert all(loser.holder == winners[0].holder.to_json() for loser in losers), losers
            assert [path.name for path in folder.local.iterdir()] == [LEASE_NAME]


def interleave_a_taker(monkeypatch: pytest.MonkeyPatch, folder: Destination) -> list[DestinationLease]:
    """Once the next writer has judged the lease expired, writer B takes it over before that writer goes on."""
    judge = lease_module.judge
    taken: list[DestinationLease] = []

    def judge_then_let_b_in(found, ttl):
        state = judge(found, ttl)
        if not taken and state.expires < utc_now():
            monkeypatch.setattr(lease_module, "judge", judge)
            taken.append(DestinationLease.acquire(folder, holder("b"), renew=False))
        return state

    monkeypatch.setattr(lease_module, "judge", judge_then_let_b_in)
    return taken


class TestWithoutHardLinks:
    def test_an_exclusive_create_makes_the_lease(self, folder, monkeypatch):
        def no_links(*args: object, **kwargs: object) -> None:
            raise PermissionError(1, "Operation not permitted")

        monkeypatch.setattr(lease_stores.os, "link", no_links)
        with DestinationLease.acquire(folder, holder("a"), renew=False) as first:
            with pytest.raises(AquaDestinationBusyError, match="dag 'dag_a'"):
                DestinationLease.acquire(folder, holder("b"), renew=False)
            first.renew()
            first.check()
        DestinationLease.acquire(folder, holder("dead"), clock=two_hours_ago, renew=False)
        with DestinationLease.acquire(folder, holder("b"), renew=False) as taker:
            assert on_disk(folder)["token"] == taker.token
        assert list(folder.local.iterdir()) == []


class TestRenewal:
    def test_renewal_keeps_a_short_lease_alive_past_its_ttl(self, folder):
        ttl = timedelta(seconds=1)
        with DestinationLease.acquire(folder, holder("a"), ttl=ttl) as lease:
            first = on_disk(folder)
            time.sleep(2.2)
            with pytest.raises(AquaDestinationBusyError, match="dag 'dag_a'"):
                DestinationLease.acquire(folder, holder("b"), ttl=ttl, renew=False)
            lease.check()
            renewed = on_disk(folder)
            assert renewed["token"] == lease.token
            assert renewed["acquired"] == first["acquired"]
            assert renewed["expires"] > first["expires"]
        assert not lease_file(folder).exists()

    def test_without_renewal_a_short_lease_is_lost(self, folder):
        lease = DestinationLease.acquire(folder, holder("a"), ttl=timedelta(seconds=1), renew=False)
        time.sleep(1.1)
        with pytest.raises(AquaDestinationBusyError, match="not renewed within its TTL"):
            lease.check()
        DestinationLease.acquire(folder, holder("b"), renew=False).release()

    def test_the_renewer_finds_its_lease_taken_over(self, folder, caplog):
        # A holder whose clock is two hours behind writes leases that are already expired.
        late = DestinationLease.acquire(folder, holder("late"), ttl=timedelta(seconds=1), clock=two_hours_ago)
        taker = DestinationLease.acquire(folder, holder("b"), renew=False)
        deadline = time.monotonic() + 5
        while not late.lost:
            assert time.monotonic() < deadline, "the renewer did not notice"
            time.sleep(0.05)
        with pytest.raises(AquaDestinationBusyError, match="now held by dag 'dag_b'"):
            late.check()
        late.release()
        assert on_disk(folder)["token"] == taker.token  # the renewer never wrote over the taker's lease
        taker.release()

    def test_a_removed_lease_is_lost(self, folder):
        lease = DestinationLease.acquire(folder, holder("a"), renew=False)
        lease_file(folder).unlink()
        with pytest.raises(AquaDestinationBusyError, match="removed"):
            lease.check()
        with pytest.raises(AquaDestinationBusyError, match="removed"):
            lease.renew()


class TestWaiting:
    def test_a_writer_waits_for_the_lease_to_be_released(self, folder):
        first = DestinationLease.acquire(folder, holder("a"), renew=False)
        threading.Timer(0.5, first.release).start()
        started = time.monotonic()
        with DestinationLease.acquire(folder, holder("b"), wait_seconds=5, renew=False) as second:
            assert 0.4 < time.monotonic() - started < 3
            second.check()

    def test_waiting_ends_at_wait_seconds_or_at_stop(self, folder):
        DestinationLease.acquire(folder, holder("a"), renew=False)
        started = time.monotonic()
        with pytest.raises(AquaDestinationBusyError, match="dag 'dag_a'"):
            DestinationLease.acquire(folder, holder("b"), wait_seconds=1.2, renew=False)
        assert 1.1 < time.monotonic() - started < 3

        stop = threading.Event()
        threading.Timer(0.3, stop.set).start()
        started = time.monotonic()
        with pytest.raises(AquaDestinationBusyError):
            DestinationLease.acquire(folder, holder("b"), wait_seconds=30, stop=stop, renew=False)
        assert time.monotonic() - started < 2


FAR_FUTURE = {
    "format": 1,
    "holder": holder("forged").to_json(),
    "token": "f" * 32,
    "acquired": "2024-01-01T00:00:00Z",
    "expires": "9999-01-01T00:00:00Z",
}


class TestUnreadableLease:
    @pytest.mark.parametrize(
        "content, why",
        [
            (b"", "not JSON"),
            (b"{not json", "not JSON"),
            (b"\xff\xfe\x00garbage", "not JSON"),
            (b"[" * 60_000, "not JSON"),
            (b"x" * (1024 * 1024), "over 65536 bytes"),
            (b"[1, 2]", "not a JSON object"),
            (json.dumps({**FAR_FUTURE, "token": 7}).encode(), "no token"),
            (json.dumps({**FAR_FUTURE, "holder": ["a"]}).encode(), "holder is not a JSON object"),
            (json.dumps({**FAR_FUTURE, "expires": "tomorrow"}).encode(), "not an ISO 8601 time"),
            (json.dumps({**FAR_FUTURE, "expires": "2030-01-01T00:00:00"}).encode(), "no time zone"),
        ],
    )
    def test_held_until_its_last_change_plus_the_ttl_then_taken_over(self, folder, content, why):
        folder.local.mkdir(parents=True)
        lease_file(folder).write_bytes(content)

        with pytest.raises(AquaDestinationBusyError) as raised:
            DestinationLease.acquire(folder, holder("b"), renew=False)
        assert "not a lease this provider can read" in str(raised.value) and why in str(raised.value)
        assert raised.value.holder is None and raised.value.expires is not None

        age(lease_file(folder), DEFAULT_LEASE_TTL.total_seconds() + 5)
        with DestinationLease.acquire(folder, holder("b"), renew=False) as taker:
            assert on_disk(folder)["token"] == taker.token
        assert list(folder.local.iterdir()) == []

    def test_a_far_off_expiry_is_trusted_for_an_hour_at_most(self, folder):
        folder.local.mkdir(parents=True)
        lease_file(folder).write_text(json.dumps(FAR_FUTURE))
        with pytest.raises(AquaDestinationBusyError, match="dag 'dag_forged'"):
            DestinationLease.acquire(folder, holder("b"), renew=False)
        age(lease_file(folder), 3601)
        DestinationLease.acquire(folder, holder("b"), renew=False).release()

    def test_a_folder_in_its_place(self, folder):
        lease_file(folder).mkdir(parents=True)
        with pytest.raises(AquaDestinationBusyError, match="not a regular file"):
            DestinationLease.acquire(folder, holder("b"), renew=False)
        age(lease_file(folder), DEFAULT_LEASE_TTL.total_seconds() + 5)
        with DestinationLease.acquire(folder, holder("b"), renew=False):
            assert lease_file(folder).is_file()

    def test_a_symbolic_link_in_its_place(self, folder, tmp_path):
        folder.local.mkdir(parents=True)
        target = tmp_path / "elsewhere.json"
        target.write_text(json.dumps({**FAR_FUTURE, "expires": "2099-01-01T00:00:00Z"}))
        lease_file(folder).symlink_to(target)
        with pytest.raises(AquaDestinationBusyError, match="cannot be opened"):
            DestinationLease.acquire(folder, holder("b"), renew=False)
        age(lease_file(folder), DEFAULT_LEASE_TTL.total_seconds() + 5)
        DestinationLease.acquire(folder, holder("b"), renew=False).release()
        assert target.exists()  # the link was removed, not what it pointed to


class TestArguments:
    @pytest.mark.parametrize("ttl", [timedelta(0), timedelta(milliseconds=500), timedelta(hours=2), 300])
    def test_ttl_is_a_timedelta_within_bounds(self, folder, ttl):
        with pytest.raises(AquaConfigurationError, match="lease ttl"):
            DestinationLease.acquire(folder, holder("a"), ttl=ttl)

    @pytest.mark.parametrize("wait", [-1, float("nan"), "5", True])
    def test_wait_seconds_is_a_number(self, folder, wait):
        with pytest.raises(AquaConfigurationError, match="wait_seconds"):
            DestinationLease.acquire(folder, holder("a"), wait_seconds=wait)

    def test_a_file_where_the_folder_should_be(self, tmp_path):
        (tmp_path / "Account").write_text("not a folder")
        with pytest.raises(AquaConfigurationError, match="folder cannot be made"):
            DestinationLease.acquire(resolve_destination(tmp_path).child("Account"), holder("a"))

    def test_the_holder_of_a_task_instance(self):
        ti = SimpleNamespace(dag_id="d", task_id="t", run_id="r", try_number=3, map_index=None)
        got = LeaseHolder.of_task_instance(ti)
        assert (got.dag_id, got.task_id, got.run_id, got.try_number, got.map_index) == ("d", "t", "r", 3, -1)
        assert got.host
        mapped = LeaseHolder.of_task_instance(SimpleNamespace(**{**vars(ti), "map_index": 4}))
        assert "map index 4" in mapped.describe()


class TestStoresWithoutConditionalWrites:
    def test_an_object_store_without_them_says_it_cannot_guarantee_one_writer(self, caplog):
        from airflow.sdk import ObjectStoragePath
        from airflow.sdk.io import attach
        from fsspec.implementations.memory import MemoryFileSystem

        attach("memory", fs=MemoryFileSystem())
        folder = Destination(remote=ObjectStoragePath(f"memory://leases-{time.monotonic_ns()}/exports/Account"))
        with caplog.at_level(logging.WARNING):
            lease = DestinationLease.acquire(folder, holder("a"), renew=False)
        assert not lease.one_writer
        assert "cannot guarantee one writer" in caplog.text
        with pytest.raises(AquaDestinationBusyError, match="dag 'dag_a'"):
            DestinationLease.acquire(folder, holder("b"), renew=False)
        lease.renew()
        lease.check()
        lease.release()
        DestinationLease.acquire(folder, holder("b"), renew=False).release()


def test_a_later_try_of_the_same_task_instance_takes_over_at_once(folder):
    """A SIGKILLed try leaves its lease; Airflow starts try 2 only once try 1 ended: no 5-minute wait."""
    DestinationLease.acquire(folder, holder("a", try_number=1), renew=False)  # never released: killed

    with pytest.raises(AquaDestinationBusyError):  # another task instance still waits for the expiry
        DestinationLease.acquire(folder, holder("b", try_number=2), renew=False)
    retry = DestinationLease.acquire(folder, holder("a", try_number=2), renew=False)

    assert on_disk(folder)["holder"]["try_number"] == 2
    retry.release()
    with pytest.raises(AquaDestinationBusyError):  # an earlier try never takes a later one's lease
        first = DestinationLease.acquire(folder, holder("a", try_number=3), renew=False)
        DestinationLease.acquire(folder, holder("a", try_number=1), renew=False)
    first.release()
