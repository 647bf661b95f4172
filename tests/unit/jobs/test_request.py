"""The submit request built from operator arguments."""

from __future__ import annotations

import pytest

from airflow_provider_zuora_aqua.exceptions import (
    AquaApiError,
    AquaAuthenticationError,
    AquaConfigurationError,
    AquaIdempotencyKeyReusedError,
    AquaRateLimitError,
    AquaServerError,
    AquaSubmitInProgressError,
    AquaTransportError,
)
from airflow_provider_zuora_aqua.jobs.request import build_job_request, submit_refused


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


@pytest.mark.parametrize(
    ("error", "refused"),
    [
        (AquaConfigurationError("bad key"), True),  # never sent
        (AquaApiError("ZOQL error", status_code=200, error_code="90005"), True),
        (AquaAuthenticationError("refused credentials", status_code=401), True),
        (AquaIdempotencyKeyReusedError("422", status_code=422), True),
        (AquaServerError("500", status_code=500), False),  # a lost answer may hide a job
        # The tenant's job limit refused it: no job, and Zuora replays a refused key's answer.
        (AquaRateLimitError("429", status_code=429), True),
        (AquaRateLimitError("job limit", status_code=200, error_code="90028"), True),
        (AquaSubmitInProgressError("409", status_code=409), False),
        (AquaTransportError("reset", request_sent=True), False),
    ],
)
def test_only_a_refusal_means_the_submit_created_no_job(error, refused):
    assert submit_refused(error) is refused


@pytest.mark.parametrize(
    ("error", "refused"),
    [
        # A 429 comes before Zuora looks at the key: an earlier send of it may have made the job.
        (AquaRateLimitError("429", status_code=429), False),
        (AquaRateLimitError("job limit", status_code=429, error_code="90028"), False),
        # An answer Zuora kept under the key: the key's first request made no job.
        (AquaRateLimitError("job limit", status_code=200, error_code="90028"), True),
        (AquaApiError("ZOQL error", status_code=200, error_code="90005"), True),
        (AquaApiError("invalid request", status_code=400), True),
        (AquaIdempotencyKeyReusedError("422", status_code=422), True),
        # As a 429, these can come before Zuora looks at the key (a gateway).
        (AquaAuthenticationError("401", status_code=401), False),
        (AquaApiError("403", status_code=403), False),
        (AquaApiError("404", status_code=404), False),
        (AquaServerError("500", status_code=500), False),
    ],
)
def test_for_a_key_that_may_name_a_job_only_an_answer_kept_under_the_key_is_a_refusal(error, refused):
    assert submit_refused(error, key_may_name_a_job=True) is refused
