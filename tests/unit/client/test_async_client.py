"""The async client's reading of failures, in the terms the sync client uses (see test_session.py)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import aiohttp
import pytest

from airflow_provider_zuora_aqua.client.async_client import _failure
from airflow_provider_zuora_aqua.client.failures import Failure

KEY = SimpleNamespace(host="127.0.0.1", port=9, ssl=True, is_ssl=False)
#: aiohttp 3.10+ tells a connect timeout and a read timeout apart; before (the floor, .ci/floor) both are
#: a ServerTimeoutError, an asyncio.TimeoutError.
SPLIT_TIMEOUTS = hasattr(aiohttp, "ConnectionTimeoutError")
needs_split_timeouts = pytest.mark.skipif(not SPLIT_TIMEOUTS, reason="aiohttp < 3.10 has one timeout error")


@pytest.mark.parametrize(
    ("error", "failure", "detail"),
    [
        (
            aiohttp.ClientConnectorError(KEY, ConnectionRefusedError(111, "Connect call failed")),
            Failure.NOT_CONNECTED,
            "[Errno 111]",
        ),
        (
            aiohttp.ClientProxyConnectionError(KEY, ConnectionRefusedError(111, "refused")),
            Failure.NOT_CONNECTED,
            "refused",
        ),
        pytest.param(
            getattr(aiohttp, "ConnectionTimeoutError", Exception)("Connection timeout to host"),
            Failure.CONNECT_TIMEOUT,
            "",
            marks=needs_split_timeouts,
        ),
        pytest.param(
            getattr(aiohttp, "SocketTimeoutError", Exception)("Timeout on reading data from socket"),
            Failure.READ_TIMEOUT,
            "",
            marks=needs_split_timeouts,
        ),
        (aiohttp.ServerTimeoutError("Timeout on reading data from socket"), Failure.DEADLINE, ""),
        (asyncio.TimeoutError(), Failure.DEADLINE, ""),
        (aiohttp.ServerDisconnectedError(), Failure.BROKEN, "ServerDisconnectedError"),
        (aiohttp.ClientPayloadError("Response payload is not completed"), Failure.BROKEN, "not completed"),
        (ConnectionResetError(104, "Connection reset by peer"), Failure.BROKEN, "reset by peer"),
    ],
)
def test_failures_are_read_into_the_shared_terms(error, failure, detail):
    found, words = _failure(error)
    assert found is failure
    assert detail in words
