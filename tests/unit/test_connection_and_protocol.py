"""Small pieces: connection parsing, wire rules, retry predicate, token cache, job request."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from airflow_provider_zuora_aqua.client.auth import TokenCache
from airflow_provider_zuora_aqua.client.defaults import ENVIRONMENTS
from airflow_provider_zuora_aqua.client.retry import is_retryable
from airflow_provider_zuora_aqua.client.settings import AquaConnectionSettings, resolve_base_url
from airflow_provider_zuora_aqua.client.wire import (
    HttpAnswer,
    make_track_id,
    parse_answer,
    parse_retry_after,
    validate_track_id,
)
from airflow_provider_zuora_aqua.exceptions import (
    AquaApiError,
    AquaAuthenticationError,
    AquaConfigurationError,
    AquaInvalidAnswerError,
    AquaJobNotFoundError,
    AquaRateLimitError,
    AquaServerError,
    AquaTransportError,
)
from airflow_provider_zuora_aqua.jobs.request import build_job_request
from airflow_provider_zuora_aqua.tasks.record import task_track_id


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


class TestTrackId:
    def test_made_track_ids_are_valid_and_unique(self):
        run_id = "manual__2026-11-25T13:52:00.123456+00:00"
        first = make_track_id("airflow", "a_long_dag_id_for_exports", "export_invoices", run_id, 1)
        second = make_track_id("airflow", "a_long_dag_id_for_exports", "export_invoices", run_id, 2)
        assert validate_track_id(first) == first
        assert len(first) <= 64 and first != second

    def test_task_track_id_names_the_try(self):
        ti = SimpleNamespace(
            dag_id="d", task_id="t", run_id="manual__2026-01-01T00:00:00+00:00", try_number=3, map_index=2
        )
        assert task_track_id(ti) == "airflow.d.t[2].manual__2026-01-01T00-00-00+00-00.3"


class TestParseAnswer:
    def answer(self, status, body, **headers):
        return HttpAnswer(status, {"Zuora-Request-Id": "rid-1", **headers}, body.encode())

    def test_success(self):
        assert parse_answer(self.answer(200, '{"id": "j1"}'), what="GET", required_key="id") == {"id": "j1"}

    @pytest.mark.parametrize(
        ("status", "body", "error", "code"),
        [
            (200, '{"errorCode": "90005", "message": "syntax"}', AquaApiError, "90005"),
            (200, '{"success": false, "reasons": [{"code": 50000040, "message": "bad"}]}', AquaApiError, "50000040"),
            (200, '{"status": "submitted"}', AquaApiError, None),
            # An unreadable 2xx answer is treated like a server fault (retried, tolerated by waits).
            (200, "<html>proxy</html>", AquaInvalidAnswerError, None),
            (401, '{"message": "Authentication error"}', AquaAuthenticationError, None),
            (429, "{}", AquaRateLimitError, None),
            (200, '{"errorCode": "90028", "message": "limit"}', AquaRateLimitError, "90028"),
            (503, "", AquaServerError, None),
            (404, '{"errorCode": "90002", "message": "Invalid Job Id."}', AquaJobNotFoundError, "90002"),
            (200, '{"errorCode": "90002", "message": "Invalid Job Id."}', AquaJobNotFoundError, "90002"),
            (400, '{"errorCode": "90003", "message": "Invalid Job Id for job cancellation."}', AquaApiError, "90003"),
        ],
    )
    def test_errors(self, status, body, error, code):
        with pytest.raises(error) as raised:
            parse_answer(self.answer(status, body), what="GET job j1", required_key="id", job_id="j1")
        assert type(raised.value) is error
        assert raised.value.error_code == code
        assert raised.value.status_code == status
        assert raised.value.request_id == "rid-1"

    def test_retry_after(self):
        with pytest.raises(AquaRateLimitError) as raised:
            parse_answer(self.answer(429, "{}", **{"Retry-After": "7"}), what="GET", required_key="id")
        assert raised.value.retry_after == 7
        assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0
        assert parse_retry_after("soon") is None


class TestRetryable:
    @pytest.mark.parametrize(
        ("error", "idempotent", "expected"),
        [
            (AquaTransportError("x", request_sent=True), True, True),
            (AquaTransportError("x", request_sent=True), False, False),
            (AquaTransportError("x", request_sent=False), False, True),
            (AquaRateLimitError("x", status_code=429), False, True),
            (AquaServerError("x", status_code=500), True, True),
            (AquaServerError("x", status_code=500), False, False),
            (AquaServerError("x", status_code=503), False, True),
            (AquaApiError("x", status_code=400), True, False),
            (AquaAuthenticationError("x", status_code=401), True, False),
        ],
    )
    def test_policy(self, error, idempotent, expected):
        assert is_retryable(error, idempotent=idempotent) is expected


class TestTokenCache:
    def test_refreshed_shortly_before_expiry_and_fetched_once(self):
        now = [1000.0]
        cache = TokenCache(clock=lambda: now[0])
        fetched = []

        def fetch():
            fetched.append(1)
            return f"token-{len(fetched)}", 3600.0

        key = ("url", "id", "digest")
        assert cache.get(key, fetch) == "token-1"
        now[0] += 3500
        assert cache.get(key, fetch) == "token-1"
        now[0] += 50  # within the 60 s refresh margin
        assert cache.get(key, fetch) == "token-2"
        assert len(fetched) == 2

    def test_invalidate_only_drops_the_failed_token(self):
        cache = TokenCache()
        key = ("url", "id", "digest")
        cache.store(key, "new", 3600)
        cache.invalidate(key, "old")
        assert cache.peek(key) == "new"
        cache.invalidate(key, "new")
        assert cache.peek(key) is None


class TestJobRequest:
    def build(self, **overrides):
        arguments = {
            "queries": {"accounts": "select Id from Account"},
            "job_name": None,
            "format": "csv",
            "version": "1.0",
            "partner": None,
            "project": None,
            "use_query_labels": None,
            "date_time_utc": None,
            "job_options": None,
        }
        return build_job_request(**{**arguments, **overrides})

    def test_mapping_of_queries(self):
        body = self.build(job_name="nightly", use_query_labels=True)
        assert body == {
            "format": "csv",
            "version": "1.0",
            "encrypted": "none",
            "name": "nightly",
            "useQueryLabels": True,
            "queries": [{"name": "accounts", "query": "select Id from Account", "type": "zoqlexport"}],
        }

    @pytest.mark.parametrize(
        ("overrides", "argument"),
        [
            ({"queries": {}}, "queries"),
            ({"queries": [{"query": f"select Id from Account where Id = '{i}'"} for i in range(51)]}, "queries"),
            ({"queries": "select Id from Account"}, "queries"),
            ({"queries": [{"name": "a"}]}, "queries\\[0\\]"),
            ({"queries": [{"name": "a", "query": "q"}, {"name": "a", "query": "q"}]}, "queries\\[1\\]"),
            ({"format": "parquet"}, "format"),
            ({"version": "2.0"}, "version"),
            ({"version": "1.1", "partner": "p"}, "partner/project"),
            ({"job_name": "x" * 33}, "job_name"),
            ({"job_options": {"format": "zip"}}, "job_options"),
        ],
    )
    def test_invalid_arguments_are_named(self, overrides, argument):
        with pytest.raises(AquaConfigurationError, match=f"argument {argument}"):
            self.build(**overrides)

    def test_stateful(self):
        body = self.build(version="1.1", partner="salesforce", project="00170000011K3Ub", format="GZIP")
        assert (body["partner"], body["project"], body["format"]) == ("salesforce", "00170000011K3Ub", "gzip")


def test_poll_delays_back_off_to_the_interval_with_jitter():
    from itertools import islice

    from airflow_provider_zuora_aqua.jobs.status import poll_delays

    delays = list(islice(poll_delays(30), 400))
    for delay, base in zip(delays, [2, 4, 8, 16, 30, 30]):
        assert 0.9 * base <= delay <= 1.1 * base
    steady = delays[4:]
    assert len(set(steady)) > 1  # spread, not lockstep
    assert abs(sum(steady) / len(steady) - 30) < 1
