"""Connection -> settings: base URL, environments, extras."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from airflow_provider_zuora_aqua.client.defaults import ENVIRONMENTS
from airflow_provider_zuora_aqua.client.request import validate_track_id
from airflow_provider_zuora_aqua.client.settings import AquaConnectionSettings, resolve_base_url
from airflow_provider_zuora_aqua.exceptions import (
    AquaConfigurationError,
)


def conn(**fields):
    defaults = {
        "conn_id": "c",
        "host": "rest.test.zuora.com",
        "port": None,
        "login": "id",
        "password": "secret-1",
        "extra_dejson": {},
    }
    return SimpleNamespace(**{**defaults, **fields})


class TestBaseUrl:
    def test_bare_host_gets_https(self):
        assert resolve_base_url("c", "rest.test.zuora.com", None, None) == "https://rest.test.zuora.com"

    def test_trailing_slash_and_port(self):
        assert resolve_base_url("c", "https://rest.eu.zuora.com/", None, None) == "https://rest.eu.zuora.com"
        assert resolve_base_url("c", "http://127.0.0.1", 8080, None) == "http://127.0.0.1:8080"

    @pytest.mark.parametrize("name", list(ENVIRONMENTS))
    def test_every_documented_environment(self, name):
        assert resolve_base_url("c", None, None, name) == ENVIRONMENTS[name]

    def test_sdk_environment_names(self):
        assert resolve_base_url("c", "", None, "CSBX") == "https://rest.test.zuora.com"
        assert resolve_base_url("c", "", None, "PROD_EU") == "https://rest.eu.zuora.com"

    def test_host_wins_over_environment(self):
        assert resolve_base_url("c", "rest.zuora.com", None, "eu-production") == "https://rest.zuora.com"

    def test_unknown_environment_lists_the_names(self):
        with pytest.raises(AquaConfigurationError, match="us-central-sandbox"):
            resolve_base_url("c", None, None, "moon-production")

    def test_nothing_set(self):
        with pytest.raises(AquaConfigurationError, match="REST base URL"):
            resolve_base_url("c", None, None, None)

    def test_credentials_in_url_refused(self):
        with pytest.raises(AquaConfigurationError, match="Client ID"):
            resolve_base_url("c", "https://user:pw@rest.zuora.com", None, None)


class TestSettings:
    def test_extras_typed_and_prefixed_form_read(self):
        settings = AquaConnectionSettings.from_connection(
            conn(extra_dejson={"timeout": "12.5", "extra__zuora_aqua__max_retries": "2", "org_ids": ["a", "b"]})
        )
        assert settings.timeout == 12.5
        assert settings.max_retries == 2
        assert settings.org_ids == "a,b"

    @pytest.mark.parametrize(
        ("extra", "field"),
        [
            ({"timeout": "soon"}, "timeout"),
            ({"max_retries": 1.5}, "max_retries"),
            ({"retry_backoff": -1}, "retry_backoff"),
            ({"entity_ids": "a\r\nb"}, "entity_ids"),
        ],
    )
    def test_bad_extras_name_the_field(self, extra, field):
        with pytest.raises(AquaConfigurationError, match=field):
            AquaConnectionSettings.from_connection(conn(extra_dejson=extra))

    def test_missing_credentials(self):
        with pytest.raises(AquaConfigurationError, match="Client ID"):
            AquaConnectionSettings.from_connection(conn(login=None))
        with pytest.raises(AquaConfigurationError, match="Client Secret"):
            AquaConnectionSettings.from_connection(conn(password=""))

    def test_secret_not_in_repr_and_token_key(self):
        settings = AquaConnectionSettings.from_connection(conn())
        assert "secret-1" not in repr(settings)
        assert "secret-1" not in "".join(settings.token_cache_key)
        rotated = AquaConnectionSettings.from_connection(conn(password="secret-2"))
        assert rotated.token_cache_key != settings.token_cache_key


def loopback_conn(**fields: object) -> SimpleNamespace:
    defaults = {"conn_id": "c", "host": "http://127.0.0.1", "port": None, "login": "id", "password": "s3cret"}
    return SimpleNamespace(**{"extra_dejson": {}, **defaults, **fields})


class TestPort:
    """the port field is an int 1..65535, checked before it joins the URL."""

    @pytest.mark.parametrize("port", ["1@127.0.0.2:80", "80/evil", "abc", 0, 70000, -1, True, 8080.5, "8080 "])
    def test_bad_ports_are_refused_naming_the_field(self, port):
        """anything but a whole number 1..65535 is refused, naming 'port'."""
        with pytest.raises(AquaConfigurationError, match="port"):
            AquaConnectionSettings.from_connection(loopback_conn(port=port))

    @pytest.mark.parametrize("port", [8080, "8080"])
    def test_good_ports_are_kept(self, port):
        """a port as int or digit string joins the URL."""
        assert AquaConnectionSettings.from_connection(loopback_conn(port=port)).base_url == "http://127.0.0.1:8080"

    def test_the_url_port_wins_over_the_field(self):
        """a port already in the host URL is kept, as before."""
        assert resolve_base_url("c", "http://127.0.0.1:9000/", 8080, None) == "http://127.0.0.1:9000"

    def test_plain_http_to_a_remote_host_is_still_refused(self):
        """the host checks apply to the final URL."""
        with pytest.raises(AquaConfigurationError, match="plain http"):
            resolve_base_url("c", "http://rest.test.zuora.com", 80, None)


class TestInputs:
    """Track-Ids and hosts that used to slip through, or raise a raw ValueError."""

    @pytest.mark.parametrize("track_id", [" lead", "trail ", " both ", "\ttab", "line\n"])
    def test_track_id_with_surrounding_whitespace_is_refused(self, track_id):
        """leading or trailing whitespace is refused, naming track_id."""
        with pytest.raises(AquaConfigurationError, match="track_id"):
            validate_track_id(track_id)

    @pytest.mark.parametrize(
        "host", ["http://[::1", "https://host:abc", "https://host:99999", "https:evil.com", "http:evil.com", "https:/x"]
    )
    def test_malformed_hosts_raise_our_error_naming_the_field(self, host):
        """malformed hosts are an AquaConfigurationError naming the host field, never a raw ValueError."""
        with pytest.raises(AquaConfigurationError, match=r"REST base URL \(host\)"):
            resolve_base_url("c", host, None, None)

    def test_scheme_without_slashes_is_not_turned_into_a_host(self):
        """'https:evil.com' is refused, never rewritten to 'https://https:evil.com'."""
        with pytest.raises(AquaConfigurationError, match="https://"):
            resolve_base_url("c", "https:evil.com", None, None)

    @pytest.mark.parametrize(
        ("host", "url"),
        [
            ("rest.test.zuora.com", "https://rest.test.zuora.com"),
            ("rest.test.zuora.com:8443", "https://rest.test.zuora.com:8443"),
            ("localhost:8080", "https://localhost:8080"),
            ("http://[::1]:8080/", "http://[::1]:8080"),
            ("HTTPS://REST.zuora.com/base/", "https://REST.zuora.com/base"),
        ],
    )
    def test_ordinary_hosts_still_resolve(self, host, url):
        """the usual spellings keep working."""
        assert resolve_base_url("c", host, None, None) == url
