"""The simulator against Zuora's own Python SDK: its pydantic models and its client.

The SDK's ``from_dict`` does not validate in zuora-sdk 3.x: its models override
``__init__`` with ``construct()``, and pydantic routes ``model_validate`` through that
``__init__``. So the answers are validated against strict twins of the SDK models, built
from the SDK models' own field annotations (``StrictStr``, ``StrictInt``...), and also read
with ``from_dict`` to see which fields the SDK has no attribute for.
"""

from __future__ import annotations

import csv
import functools
import io
import types
import typing
from collections.abc import Callable
from typing import Any, Union

import pydantic
import pytest
import requests

from airflow_provider_zuora_aqua.simulator import AquaSimulator
from tests.support.sim_client import (
    ACCOUNT_QUERY,
    CLIENT_ID,
    CLIENT_SECRET,
    INVOICE_QUERY,
    TIMEOUT,
    Client,
    SimFactory,
    job_body,
    token_form,
)

# zuora-sdk caps urllib3 < 2.1: it lives in its own venv (.ci/sdk), not in the test extra.
zuora_sdk = pytest.importorskip("zuora_sdk", reason="zuora-sdk runs in its own venv: bash .ci/sdk")
from zuora_sdk.models import (  # noqa: E402 (after the skip)
    CreateBatchQueryJobRequest,
    CreateBatchQueryJobResponse,
    CreateBatchQueryRequest,
    DeleteBatchQueryJobResponse,
    DeletedRecord,
    GetBatchQueryJobResponse,
    TokenResponse,
)

# Fields the simulator sends that a model has no attribute for (they land in additional_properties).
JOB_EXTRAS = {"sourceData", "useQueryLabels", "dateTimeUtc", "startTime", "endTime", "incrementalTime", "notifyUrl"}
# Keys of the job and batches in Zuora's DELETE sample (DELETE_BatchQueryJob.txt).
SAMPLE_JOB_KEYS = {"batches", "encrypted", "format", "id", "name", "sourceData", "status", "version"}
SAMPLE_BATCH_KEYS = {"batchId", "batchType", "fileId", "message", "name", "query", "recordCount", "status"}


@functools.cache
def strict_twin(model: type[pydantic.BaseModel]) -> type[pydantic.BaseModel]:
    """``model``'s fields and types, validated strictly (unknown keys go to ``model_extra``)."""
    fields: dict[str, Any] = {
        name: (_strict_type(info.annotation), pydantic.Field(default=None, alias=info.alias))
        for name, info in model.model_fields.items()
        if name != "additional_properties"
    }
    config = pydantic.ConfigDict(extra="allow", populate_by_name=True)
    return pydantic.create_model(f"Strict{model.__name__}", __config__=config, **fields)


def _strict_type(annotation: Any) -> Any:
    # Swap nested SDK models for their strict twins; leave every other type as the SDK has it.
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return strict_twin(annotation)
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        return Union[tuple(_strict_type(arg) for arg in args)]  # noqa: UP007 - built from a tuple at runtime
    if origin is list:
        return list[_strict_type(args[0])]
    return annotation


def validate(model: type[pydantic.BaseModel], body: dict[str, Any]) -> pydantic.BaseModel:
    """Validate ``body`` strictly as ``model``, and check the SDK itself reads it back."""
    strict = strict_twin(model).model_validate(body)
    assert model.from_dict(body).to_dict() == body  # nothing lost or renamed by the SDK
    return strict


def extras(model: pydantic.BaseModel) -> set[str]:
    """The keys the SDK model has no field for."""
    return set(model.model_extra or {})


def rich_body(**fields: object) -> dict:
    """A job using every optional field the simulator echoes."""
    body = job_body(ACCOUNT_QUERY, INVOICE_QUERY, useQueryLabels=True, dateTimeUtc=True, **fields)
    body["queries"][0]["apiVersion"] = "127.0"
    return body


def stateful_body() -> dict:
    body = rich_body(version="1.1", partner="acme", project="p1", incrementalTime="2026-01-01 00:00:00", offset=60)
    body["queries"][1]["deleted"] = {"column": "IsDeleted", "format": "Numeric", "forceExport": True}
    body["notifyUrl"] = "https://example.invalid/aqua/${JOBID}/${STATUS}"
    return body


def test_strict_twins_reject_what_the_sdk_lets_through() -> None:
    loose = {"batches": [{"recordCount": "12", "full": "true"}], "status": 5}
    assert GetBatchQueryJobResponse.from_dict(loose).status == 5  # the SDK itself checks nothing
    with pytest.raises(pydantic.ValidationError) as caught:
        strict_twin(GetBatchQueryJobResponse).model_validate(loose)
    assert caught.value.error_count() == 4  # recordCount (int or float), full, status
    with pytest.raises(pydantic.ValidationError):
        strict_twin(TokenResponse).model_validate({"expires_in": "3599"})


def test_token_response_validates(sim: AquaSimulator) -> None:
    body = requests.post(f"{sim.base_url}/oauth/token", data=token_form(), timeout=TIMEOUT).json()
    token = validate(TokenResponse, body)
    assert token.access_token == body["access_token"] and token.token_type == "bearer"
    assert token.expires_in == 3599
    assert extras(token) == set()


@pytest.mark.parametrize("body_factory", [rich_body, stateful_body], ids=["stateless", "stateful"])
def test_job_responses_validate(make_sim: SimFactory, body_factory: Callable[[], dict]) -> None:
    sim = make_sim(job_seconds=30)
    client = Client(sim.base_url)
    submitted = client.submit_job(body_factory())
    created = validate(CreateBatchQueryJobResponse, submitted)
    assert created.id == submitted["id"] and created.status == "submitted" and created.error_code is None
    assert extras(created) <= JOB_EXTRAS
    for batch in created.batches:
        assert batch.record_count == 0 and batch.status == "pending"
        assert extras(batch) == set()

    client.wait_for(submitted["id"], "executing")
    fetched = validate(GetBatchQueryJobResponse, client.get_job(submitted["id"]).json())
    assert fetched.status == "executing" and fetched.start_time
    assert extras(fetched) <= JOB_EXTRAS
    for batch in fetched.batches:
        assert extras(batch) == set()

    cancelled_json = client.delete_job(submitted["id"]).json()
    cancelled = validate(DeleteBatchQueryJobResponse, cancelled_json)
    assert cancelled.status == "cancelled" and cancelled.id == submitted["id"]
    assert extras(cancelled) <= JOB_EXTRAS | {"project"}
    for batch in cancelled.batches:
        assert batch.status == "cancelled"
        assert extras(batch) <= {"apiVersion", "full", "deleted"}
    assert set(cancelled_json) >= SAMPLE_JOB_KEYS
    assert SAMPLE_BATCH_KEYS - {"fileId"} <= set(cancelled_json["batches"][0])


def test_completed_job_validates_and_has_the_sample_keys(make_sim: SimFactory) -> None:
    sim = make_sim(job_seconds=0)
    client = Client(sim.base_url)
    job_json = client.wait_for(client.submit_job(rich_body())["id"], "completed")
    job = validate(GetBatchQueryJobResponse, job_json)
    assert job.status == "completed"
    for batch in job.batches:
        assert isinstance(batch.record_count, int) and batch.record_count > 0 and batch.file_id
        assert extras(batch) == set()
    assert set(job_json) >= SAMPLE_JOB_KEYS
    assert set(job_json["batches"][0]) >= SAMPLE_BATCH_KEYS


def test_error_bodies_validate(make_sim: SimFactory) -> None:
    client = Client(make_sim(errors_as_200=True).base_url)
    refusal = validate(CreateBatchQueryJobResponse, client.submit(job_body("select from")).json())
    assert refusal.error_code == "90005" and refusal.id is None
    missing = validate(GetBatchQueryJobResponse, client.get_job("0" * 32).json())
    assert (missing.error_code, missing.message) == ("90002", "Invalid Job Id.")
    refused = validate(DeleteBatchQueryJobResponse, client.delete_job("0" * 32).json())
    assert refused.error_code == "90003"


def sdk_request(*queries: str) -> CreateBatchQueryJobRequest:
    return CreateBatchQueryJobRequest(
        format="csv",
        version="1.0",
        name="sdk-job",
        encrypted="none",
        use_query_labels=True,
        date_time_utc=True,
        queries=[
            CreateBatchQueryRequest(name=f"Q{index}", query=query, type="zoqlexport", api_version="127.0")
            for index, query in enumerate(queries)
        ],
    )


def test_zuora_sdk_client_end_to_end(make_sim: SimFactory) -> None:
    sim = make_sim(job_seconds=30)
    with zuora_sdk.ApiClient(zuora_sdk.Configuration(host=sim.base_url)) as api_client:
        token = zuora_sdk.OAuthApi(api_client).create_token(
            client_id=CLIENT_ID, client_secret=CLIENT_SECRET, grant_type="client_credentials"
        )
        assert isinstance(token, TokenResponse) and token.token_type == "bearer"
        api_client.set_default_header("Authorization", f"Bearer {token.access_token}")
        queries = zuora_sdk.AggregateQueriesApi(api_client)

        created = queries.create_batch_query(sdk_request(ACCOUNT_QUERY, INVOICE_QUERY), zuora_track_id="sdk-track")
        assert isinstance(created, CreateBatchQueryJobResponse)
        assert created.status == "submitted" and created.error_code is None and len(created.batches) == 2

        fetched = queries.get_batch_query_job(created.id)
        assert isinstance(fetched, GetBatchQueryJobResponse) and fetched.id == created.id
        assert fetched.status in ("submitted", "executing")

        cancelled = queries.delete_batch_query_job(created.id)
        assert isinstance(cancelled, DeleteBatchQueryJobResponse) and cancelled.status == "cancelled"

        with pytest.raises(zuora_sdk.ApiException) as refused:
            queries.delete_batch_query_job(created.id)
        assert refused.value.status == 400 and "90003" in refused.value.body
        with pytest.raises(zuora_sdk.ApiException) as missing:
            queries.get_batch_query_job("0" * 32)
        assert missing.value.status == 404

        # A job that completes on Zuora's side, then downloaded through the SDK's files API.
        done = queries.create_batch_query(sdk_request(ACCOUNT_QUERY))
        sim.finish_job(done.id, "completed")
        [batch] = queries.get_batch_query_job(done.id).batches
        content = zuora_sdk.FilesApi(api_client).get_files(batch.file_id)
        rows = list(csv.reader(io.StringIO(bytes(content).decode())))
        assert rows[0] == ["Account.Id", "Account.Name", "Account.Id"]  # useQueryLabels=True
        assert len(rows) - 1 == batch.record_count

    # What the SDK sent was understood as sent: booleans, JSON content type, its headers.
    submit = sim.requests_for("submit")[0]
    assert submit.json["useQueryLabels"] is True and submit.json["dateTimeUtc"] is True
    assert submit.headers["Content-Type"] == "application/json"
    assert submit.headers["Zuora-Version"] and submit.headers["User-Agent"].startswith("zuora-py-sdk")
    assert submit.headers["Zuora-Track-Id"] == "sdk-track"
    assert [r.route for r in sim.requests] == [
        "token", "submit", "get_job", "delete_job", "delete_job", "get_job", "submit", "get_job", "file",
    ]  # fmt: skip


def test_sdk_deleted_record_model_is_accepted(make_sim: SimFactory) -> None:
    sim = make_sim(job_seconds=30)
    with zuora_sdk.ApiClient(zuora_sdk.Configuration(host=sim.base_url)) as api_client:
        token = zuora_sdk.OAuthApi(api_client).create_token(
            client_id=CLIENT_ID, client_secret=CLIENT_SECRET, grant_type="client_credentials"
        )
        api_client.set_default_header("Authorization", f"Bearer {token.access_token}")
        request = sdk_request(ACCOUNT_QUERY)
        request.version, request.partner, request.project = "1.1", "acme", "p1"
        request.queries[0].deleted = DeletedRecord(column="IsDeleted", format="Boolean")
        created = zuora_sdk.AggregateQueriesApi(api_client).create_batch_query(request)
        assert created.partner == "acme" and created.batches[0].full is True
        assert created.batches[0].deleted.column == "IsDeleted"


def sdk_client(sim: AquaSimulator) -> zuora_sdk.ApiClient:
    api_client = zuora_sdk.ApiClient(zuora_sdk.Configuration(host=sim.base_url))
    token = zuora_sdk.OAuthApi(api_client).create_token(
        client_id=CLIENT_ID, client_secret=CLIENT_SECRET, grant_type="client_credentials"
    )
    api_client.set_default_header("Authorization", f"Bearer {token.access_token}")
    return api_client


def test_segmented_job_validates_and_the_sdk_downloads_every_segment(make_sim: SimFactory) -> None:
    sim = make_sim(job_seconds=0, file_rows=300, segment_rows=120, file_transport_gzip=True)
    client = Client(sim.base_url)
    job_json = client.wait_for(client.submit_job(stateful_body())["id"], "completed")
    job = validate(GetBatchQueryJobResponse, job_json)
    assert extras(job) <= JOB_EXTRAS | {"segmented"}
    for batch in job.batches:
        assert batch.file_id is None and len(batch.segments) == 3 and batch.record_count == 300
    batch = job.batches[0]
    assert all(client.file(segment).headers["Content-Encoding"] == "gzip" for segment in batch.segments)
    sim.clear_requests()
    with sdk_client(sim) as api_client:
        files = zuora_sdk.FilesApi(api_client)
        records = []
        for segment_id in batch.segments:
            # The SDK asks for transport gzip and hands back the decoded bytes.
            content = files.get_files(segment_id, accept_encoding="gzip")
            rows = list(csv.reader(io.StringIO(bytes(content).decode(), newline="")))
            assert rows[0] == ["Account.Id", "Account.Name", "Account.Id"]
            records.extend(rows[1:])
    assert len(records) == batch.record_count
    assert records[6][1] == 'a "quoted", multi-line\nvalue'
    assert [r.headers.get("Accept-Encoding") for r in sim.requests_for("file")] == ["gzip"] * 3


def test_sdk_sees_403_max_object_size(make_sim: SimFactory) -> None:
    sim = make_sim(job_seconds=0, file_rows=100, max_file_bytes=100)
    client = Client(sim.base_url)
    file_id = client.wait_for(client.submit_job()["id"], "completed")["batches"][0]["fileId"]
    with sdk_client(sim) as api_client, pytest.raises(zuora_sdk.ApiException) as refused:
        zuora_sdk.FilesApi(api_client).get_files(file_id)
    assert refused.value.status == 403 and "max-object-size" in refused.value.body
