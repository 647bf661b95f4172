"""
Exchanges that got no (complete) answer: the one wording of their errors, and the one rule of
whether the request may have reached Zuora, for both clients.
"""

from __future__ import annotations

import time
from enum import Enum
from urllib.parse import urlsplit

from airflow_provider_zuora_aqua.exceptions import AquaTransportError

#: Longest wait for a connection to open (within the bound of the exchange).
CONNECT_SECONDS = 10.0


class Failure(Enum):
    """Where an exchange failed without an answer, as its HTTP client tells it."""

    #: No connection was made (refused, unreachable, name not found).
    NOT_CONNECTED = "not connected"
    #: The connection did not open in time.
    CONNECT_TIMEOUT = "connect timeout"
    #: Connected, but the TLS handshake failed: the request was never sent.
    TLS_HANDSHAKE = "tls handshake"
    #: Connected, then no byte came within the read timeout.
    READ_TIMEOUT = "read timeout"
    #: Connected, then the exchange passed its wall-clock bound.
    DEADLINE = "deadline"
    #: Connected, then the connection broke (reset, closed mid-answer, a malformed answer).
    BROKEN = "broken"

    @property
    def request_may_have_arrived(self) -> bool:
        """False only when no connection was made: then Zuora cannot have seen the request."""
        return self not in (Failure.NOT_CONNECTED, Failure.CONNECT_TIMEOUT, Failure.TLS_HANDSHAKE)


def exchange_seconds(timeout: float, deadline: float | None) -> float:
    """Wall-clock bound of one exchange: the connection's ``timeout``, within the call's ``deadline``."""
    if deadline is None:
        return timeout
    return max(0.1, min(timeout, deadline - time.monotonic()))


def transport_error(
    what: str,
    base_url: str,
    failure: Failure,
    detail: str = "",
    *,
    seconds: float | None = None,
    received: int | None = None,
) -> AquaTransportError:
    """
    The error of an exchange that got no (complete) answer; both clients raise this one.

    :param what: the call, e.g. ``"GET /v1/batch-query/jobs/..."``.
    :param failure: where the client saw it fail.
    :param detail: the client's own words for a failure to connect or a broken connection.
    :param seconds: the exchange's bound, for :attr:`Failure.DEADLINE`.
    :param received: bytes of a file already received when the connection broke.
    """
    reasons = {
        Failure.NOT_CONNECTED: f"could not connect: {detail}",
        Failure.CONNECT_TIMEOUT: "timed out while connecting",
        Failure.TLS_HANDSHAKE: f"the TLS handshake failed: {detail}{_plain_http_hint(base_url)}",
        Failure.READ_TIMEOUT: "timed out waiting for the answer",
        Failure.DEADLINE: f"timed out waiting for the answer (none complete within {seconds or 0:g} s)",
        Failure.BROKEN: detail,
    }
    where = f"{what} to {base_url} failed" if received is None else f"{what} broke off after {received} bytes"
    return AquaTransportError(f"{where}: {reasons[failure]}", request_sent=failure.request_may_have_arrived)


def _plain_http_hint(base_url: str) -> str:
    """For ``https://`` to a loopback host (where the local simulator speaks plain HTTP): say to use ``http://``."""
    from airflow_provider_zuora_aqua.client.settings import is_loopback

    parts = urlsplit(base_url)
    if parts.scheme != "https" or not is_loopback(parts.hostname or ""):
        return ""
    return (
        f". {parts.hostname} is a loopback host, where a local server such as the AQuA simulator speaks plain "
        f"HTTP: write the connection's host as {parts._replace(scheme='http').geturl()}"
    )
