"""POST /oauth/token, and bearer-token checks on the other routes."""

from __future__ import annotations

import time

import pytest
import requests

from airflow_provider_zuora_aqua.simulator import AquaSimulator
from tests.support.sim_client import CLIENT_ID, CLIENT_SECRET, TIMEOUT, Client, SimFactory, token_form

UNAUTHORIZED = {"message": "Authentication error"}


def post_token(sim: AquaSimulator, **kwargs: object) -> requests.Response:
    return requests.post(f"{sim.base_url}/oauth/token", timeout=TIMEOUT, **kwargs)


def test_token_success(sim: AquaSimulator) -> None:
    response = post_token(sim, data=token_form())
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    assert response.headers["Cache-Control"] == "no-store"
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope", "jti"}
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 3599 and isinstance(body["expires_in"], int)
    assert body["access_token"] and body["jti"] and body["access_token"] != body["jti"]
    assert sim.tokens_issued == 1
    assert post_token(sim, data=token_form()).json()["access_token"] != body["access_token"]
    assert sim.tokens_issued == 2


def test_token_with_trailing_slash_and_basic_auth(sim: AquaSimulator) -> None:
    response = requests.post(
        f"{sim.base_url}/oauth/token/",
        data={"grant_type": "client_credentials"},
        auth=(CLIENT_ID, CLIENT_SECRET),
        timeout=TIMEOUT,
    )
    assert response.status_code == 200, response.text
    assert response.json()["token_type"] == "bearer"


@pytest.mark.parametrize(
    "form",
    [
        token_form(client_secret="wrong-secret"),
        token_form(client_id="wrong-id"),
        {"grant_type": "client_credentials"},
    ],
    ids=["wrong-secret", "wrong-id", "no-credentials"],
)
def test_token_bad_credentials(sim: AquaSimulator, form: dict[str, str]) -> None:
    response = post_token(sim, data=form)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert response.json()["error_description"]
    assert sim.tokens_issued == 0


@pytest.mark.parametrize("grant_type", ["password", None])
def test_token_bad_grant_type(sim: AquaSimulator, grant_type: str | None) -> None:
    form = token_form(grant_type=grant_type) if grant_type else {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    response = post_token(sim, data=form)
    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_grant_type"


@pytest.mark.parametrize("authorization", [None, "Bearer not-a-token", "Basic abc", "Bearer "])
def test_routes_need_a_valid_bearer_token(sim: AquaSimulator, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = requests.get(f"{sim.base_url}/v1/batch-query/jobs/{'0' * 32}", headers=headers, timeout=TIMEOUT)
    assert response.status_code == 401
    assert response.json() == UNAUTHORIZED
    assert response.headers["Zuora-Request-Id"]


def test_token_expires_after_token_seconds(make_sim: SimFactory) -> None:
    sim = make_sim(token_seconds=0.3)
    client = Client(sim.base_url)
    assert client.get_job("0" * 32).status_code == 404  # authenticated: the job is just unknown
    time.sleep(0.4)
    response = client.get_job("0" * 32)
    assert response.status_code == 401
    assert response.json() == UNAUTHORIZED


def test_expire_tokens_revokes_every_issued_token(sim: AquaSimulator) -> None:
    first, second = Client(sim.base_url), Client(sim.base_url)
    assert sim.expire_tokens() == 2
    assert first.get_job("0" * 32).status_code == 401
    assert second.get_job("0" * 32).status_code == 401
    fresh = Client(sim.base_url)
    assert fresh.get_job("0" * 32).status_code == 404
    assert sim.tokens_issued == 3
