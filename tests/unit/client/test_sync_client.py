"""The sync client's exchange bound (one watchdog thread, no thread per exchange) and its reading of failures."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
import requests
import urllib3.exceptions

from airflow_provider_zuora_aqua.client import sync_client
from airflow_provider_zuora_aqua.client.failures import Failure
from airflow_provider_zuora_aqua.client.sync_client import ExchangeDeadline, _failure


@pytest.fixture
def connection() -> Iterator[tuple[SimpleNamespace, socket.socket]]:
    """A stand-in for a urllib3 connection (its ``sock``) and the peer that never answers."""
    ours, peer = socket.socketpair()
    with ours, peer:
        yield SimpleNamespace(sock=ours), peer


class TestExchangeDeadline:
    def test_a_read_that_never_ends_is_ended_at_the_deadline(self, connection):
        conn, _peer = connection
        started = time.monotonic()
        with ExchangeDeadline(0.2) as bound:
            bound.watch(conn)
            assert conn.sock.recv(1) == b""  # shut down under the blocked read
        assert bound.fired and 0.15 < time.monotonic() - started < 2

    def test_no_thread_per_exchange(self):
        with ExchangeDeadline(5):
            pass  # the watchdog is running from here on
        before = threading.active_count()
        for _ in range(50):
            with ExchangeDeadline(5):
                pass
        assert threading.active_count() == before

    def test_a_released_exchange_is_left_alone(self, connection):
        conn, peer = connection
        with ExchangeDeadline(0.1) as bound:
            bound.watch(conn)
            bound.release()
            time.sleep(0.3)
            peer.sendall(b"x")
            assert conn.sock.recv(1) == b"x"
        assert not bound.fired

    def test_a_finished_exchange_is_not_fired_later(self, connection):
        conn, peer = connection
        with ExchangeDeadline(0.1) as bound:
            bound.watch(conn)
        time.sleep(0.3)
        peer.sendall(b"x")
        assert conn.sock.recv(1) == b"x" and not bound.fired

    def test_an_exchange_inside_another_restores_the_outer_bound(self):
        """on_kill's exchange may run inside the one its signal interrupted."""
        with ExchangeDeadline(5) as outer:
            with ExchangeDeadline(5) as inner:
                assert sync_client._local.exchange is inner
            assert sync_client._local.exchange is outer
        assert sync_client._local.exchange is None

    def test_a_forked_child_starts_its_own_watchdog(self):
        watchdog = sync_client._Watchdog()
        exchange = ExchangeDeadline(0.05)
        watchdog.watch(exchange)
        inbox = watchdog._inbox
        watchdog._after_fork()  # what os.register_at_fork runs in the child
        assert watchdog._thread is None and watchdog._inbox is not inbox
        time.sleep(0.2)
        assert exchange.fired  # the parent's watchdog still does its work


def max_retry(reason: Exception) -> urllib3.exceptions.MaxRetryError:
    return urllib3.exceptions.MaxRetryError(None, "http://h/x", reason=reason)


def new_connection_error() -> urllib3.exceptions.NewConnectionError:
    try:
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except OSError as exc:
            raise urllib3.exceptions.NewConnectionError(None, f"Failed to establish a new connection: {exc}") from exc
    except urllib3.exceptions.NewConnectionError as error:
        return error


@pytest.mark.parametrize(
    ("error", "deadline_passed", "failure", "detail"),
    [
        (requests.ConnectionError(max_retry(new_connection_error())), False, Failure.NOT_CONNECTED, "[Errno 111]"),
        (
            requests.exceptions.ProxyError(
                max_retry(urllib3.exceptions.ProxyError("Unable to connect to proxy", new_connection_error()))
            ),
            False,
            Failure.NOT_CONNECTED,
            "Connection refused",
        ),
        (requests.exceptions.ConnectTimeout("connect timed out"), False, Failure.CONNECT_TIMEOUT, ""),
        (requests.exceptions.ReadTimeout("read timed out"), False, Failure.READ_TIMEOUT, ""),
        (
            requests.ConnectionError(urllib3.exceptions.ReadTimeoutError(None, "/x", "read")),
            False,
            Failure.READ_TIMEOUT,
            "",
        ),
        (urllib3.exceptions.ProtocolError("Connection broken"), False, Failure.BROKEN, "ProtocolError"),
        (urllib3.exceptions.ProtocolError("Connection broken"), True, Failure.DEADLINE, ""),
        # A connection never made is told as such, even once the deadline passed.
        (requests.ConnectionError(max_retry(new_connection_error())), True, Failure.NOT_CONNECTED, "[Errno 111]"),
    ],
)
def test_failures_are_read_into_the_shared_terms(error, deadline_passed, failure, detail):
    found, words = _failure(error, deadline_passed=deadline_passed)
    assert found is failure
    assert detail in words
