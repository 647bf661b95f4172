"""Turn an Airflow connection of type ``zuora_aqua`` into validated client settings."""

from __future__ import annotations

import hashlib
import ipaddress
import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow_provider_zuora_aqua.client.defaults import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_RETRY_BACKOFF,
    DEFAULT_RETRY_MAX_SECONDS,
    DEFAULT_TIMEOUT,
    ENVIRONMENTS,
    SDK_ENVIRONMENT_ALIASES,
)
from airflow_provider_zuora_aqua.exceptions import AquaConfigurationError

if TYPE_CHECKING:
    from airflow.sdk import Connection

CONN_TYPE = "zuora_aqua"
_HOST_FIELD = "REST base URL (host)"
#: ``https:evil.com``: a scheme without ``//`` (but not ``localhost:8080``, a host and a port).
_SCHEME_WITHOUT_SLASHES = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:(?![0-9]+(/|$))")
#: A host (name, IPv4, or IPv6 in brackets) and an optional port, nothing else: every URL parser reads it alike.
_NETLOC = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::(?P<port>[0-9]{1,5}))?")
#: A URL path of RFC 3986 characters (no spaces, backslashes or control characters).
_PATH = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=:@%/-]*")


@dataclass(frozen=True)
class AquaConnectionSettings:
    """Everything a client needs to talk to one Zuora tenant, validated."""

    conn_id: str
    base_url: str
    client_id: str
    client_secret: str = field(repr=False)
    entity_ids: str | None = None
    org_ids: str | None = None
    zuora_version: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    max_retries: int = DEFAULT_MAX_RETRIES
    retry_backoff: float = DEFAULT_RETRY_BACKOFF
    retry_max_seconds: float = DEFAULT_RETRY_MAX_SECONDS

    @property
    def token_cache_key(self) -> tuple[str, str, str]:
        """Identify the token: a rotated secret must not reuse the old secret's token."""
        secret_digest = hashlib.sha256(self.client_secret.encode()).hexdigest()
        return (self.base_url, self.client_id, secret_digest)

    @classmethod
    def from_connection(cls, conn: Connection) -> AquaConnectionSettings:
        """Validate the connection; errors name the field to fix."""
        extras = _Extras(conn.conn_id, conn.extra_dejson)
        if not conn.login:
            raise _field_error(conn.conn_id, "Client ID (login)", "set it to the OAuth client id")
        if not conn.password:
            raise _field_error(conn.conn_id, "Client Secret (password)", "set it to the OAuth client secret")
        return cls(
            conn_id=conn.conn_id,
            base_url=resolve_base_url(conn.conn_id, conn.host, conn.port, extras.string("environment")),
            client_id=conn.login,
            client_secret=conn.password,
            entity_ids=extras.header_value("entity_ids"),
            org_ids=extras.header_value("org_ids"),
            zuora_version=extras.header_value("zuora_version"),
            timeout=extras.number("timeout", DEFAULT_TIMEOUT, minimum=1),
            max_retries=int(extras.number("max_retries", DEFAULT_MAX_RETRIES, minimum=0, integer=True)),
            retry_backoff=extras.number("retry_backoff", DEFAULT_RETRY_BACKOFF, minimum=0),
            retry_max_seconds=extras.number("retry_max_seconds", DEFAULT_RETRY_MAX_SECONDS, minimum=0),
        )


def resolve_base_url(conn_id: str, host: str | None, port: object, environment: str | None) -> str:
    """
    Return the REST base URL from the ``host`` field (and ``port``), or from the ``environment`` extra.

    The port is checked on its own before it joins the URL, and every host rule runs on the
    final URL, so that no field can change the host the client secret is sent to.
    """
    host = (host or "").strip()
    if not host:
        if not environment:
            raise _field_error(
                conn_id,
                _HOST_FIELD,
                "set it (for example https://rest.test.zuora.com) or set the extra 'environment' "
                f"to one of: {', '.join(ENVIRONMENTS)}",
            )
        return _environment_url(conn_id, environment)

    port_number = _port(conn_id, port)
    if "://" not in host and _SCHEME_WITHOUT_SLASHES.match(host):
        raise _field_error(conn_id, _HOST_FIELD, f"{host!r} is not a valid URL; write it as https://<host>[:<port>]")
    url = host if "://" in host else f"https://{host}"
    if port_number is not None:
        scheme, host_text, url_port, path = _split(conn_id, url)
        if url_port is None:  # a port written in the host URL wins, as before
            url = f"{scheme}://{host_text}:{port_number}{path}"
    return _checked_url(conn_id, url)


def _port(conn_id: str, port: object) -> int | None:
    """The ``port`` field as a number 1..65535, or None when empty."""
    if port is None or port == "":
        return None
    if isinstance(port, int) and not isinstance(port, bool):
        number = port
    elif isinstance(port, str) and re.fullmatch(r"[0-9]{1,5}", port):
        number = int(port)
    else:
        number = 0
    if not 1 <= number <= 65535:
        raise _field_error(
            conn_id, "port", f"{port!r} is not a port number; use a whole number from 1 to 65535, or leave it empty"
        )
    return number


def _split(conn_id: str, url: str) -> tuple[str, str, int | None, str]:
    """Scheme, host as written (IPv6 in brackets), port and path of ``url``; our error for anything odd."""
    invalid = f"{url!r} is not a valid URL; use https://<host>[:<port>]"
    try:
        parts = urlsplit(url)
    except ValueError:
        raise _field_error(conn_id, _HOST_FIELD, invalid) from None
    if parts.username is not None or parts.password is not None or parts.query or parts.fragment:
        raise _field_error(
            conn_id,
            _HOST_FIELD,
            "remove credentials, query and fragment from it; put the client id and secret in "
            "the Client ID and Client Secret fields",
        )
    netloc = _NETLOC.fullmatch(parts.netloc)
    if netloc is None or not _PATH.fullmatch(parts.path):
        raise _field_error(conn_id, _HOST_FIELD, invalid)
    port = netloc["port"]
    if port is not None and not 1 <= int(port) <= 65535:
        raise _field_error(conn_id, _HOST_FIELD, f"{url!r} has port {port}; use a port from 1 to 65535")
    return parts.scheme.lower(), netloc["host"], None if port is None else int(port), parts.path


def _checked_url(conn_id: str, url: str) -> str:
    """Apply the host rules to the final URL and return it normalized."""
    scheme, host_text, port, path = _split(conn_id, url)
    if scheme not in ("https", "http"):
        raise _field_error(conn_id, _HOST_FIELD, f"{url!r} is not an http(s) URL; use https://<host>")
    hostname = host_text.strip("[]")
    if scheme == "http" and not is_loopback(hostname):
        raise _field_error(
            conn_id,
            _HOST_FIELD,
            f"plain http:// is refused for {hostname!r} because the client secret and token "
            "would cross the network unencrypted; use https:// (http is allowed only for "
            "loopback hosts such as the local simulator)",
        )
    return f"{scheme}://{host_text}{'' if port is None else f':{port}'}{path.rstrip('/')}"


def is_loopback(hostname: str) -> bool:
    """``localhost``, 127.0.0.0/8 and ::1."""
    if hostname.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname.strip("[]")).is_loopback
    except ValueError:
        return False


def _environment_url(conn_id: str, environment: str) -> str:
    name = environment.strip().lower()
    name = SDK_ENVIRONMENT_ALIASES.get(name, name)
    if name not in ENVIRONMENTS:
        raise _field_error(
            conn_id, "extra 'environment'", f"{environment!r} is unknown; use one of: {', '.join(ENVIRONMENTS)}"
        )
    return ENVIRONMENTS[name]


def _field_error(conn_id: str, field_name: str, fix: str) -> AquaConfigurationError:
    return AquaConfigurationError(f"Zuora AQuA connection {conn_id!r}: {field_name}: {fix}.")


class _Extras:
    """Read extras as the UI stores them, plain or ``extra__zuora_aqua__`` prefixed, typed."""

    def __init__(self, conn_id: str, extras: dict[str, Any]) -> None:
        self._conn_id = conn_id
        self._extras = extras

    def raw(self, name: str) -> Any:
        value = self._extras.get(name)
        if value in (None, ""):
            value = self._extras.get(f"extra__{CONN_TYPE}__{name}")
        return None if value in (None, "") else value

    def string(self, name: str) -> str | None:
        value = self.raw(name)
        if isinstance(value, (list, tuple)):
            value = ",".join(str(item).strip() for item in value)
        return None if value is None else str(value).strip() or None

    def header_value(self, name: str) -> str | None:
        value = self.string(name)
        if value is not None and any(ord(char) < 32 or ord(char) > 126 for char in value):
            raise _field_error(
                self._conn_id, f"extra {name!r}", "use printable US-ASCII only (it is sent as an HTTP header)"
            )
        return value

    def number(self, name: str, default: float, *, minimum: float, integer: bool = False) -> float:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if math.isnan(number) or number < minimum or (integer and not number.is_integer()):
            kind = "a whole number" if integer else "a number"
            raise _field_error(self._conn_id, f"extra {name!r}", f"{value!r} is invalid; use {kind} >= {minimum:g}")
        return number
