"""``ZuoraAquaHook.test_connection`` (the UI's Test action and ``airflow connections test``), and the
README's connections for the simulator, over real HTTP."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from airflow.models.connection import Connection as StoredConnection
from airflow.sdk import Connection

from airflow_provider_zuora_aqua.client.settings import AquaConnectionSettings
from airflow_provider_zuora_aqua.hooks.aqua import ZuoraAquaHook
from airflow_provider_zuora_aqua.simulator import AquaSimulator
from tests.readme import README_SIMULATOR_PORT, connection_lines
from tests.support.credentials import CLIENT_ID, CLIENT_SECRET, connection_json

README_CLIENT_ID = "my-id"
README_CLIENT_SECRET = "my-secret-value"


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port nothing listens on: connecting is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture
def readme_simulator() -> Iterator[AquaSimulator]:
    """The simulator as the README starts it (its credentials), on a free port."""
    with AquaSimulator(client_id=README_CLIENT_ID, client_secret=README_CLIENT_SECRET) as sim:
        yield sim


class TestTestConnection:
    def test_good_connection_passes_and_fetches_a_new_token(self, simulator, aqua_conn):
        hook = ZuoraAquaHook(aqua_conn)
        hook.get_access_token()  # a cached token must not stand in for a real test

        assert hook.test_connection() == (True, f"Connected to {simulator.base_url}: Zuora issued an OAuth token.")
        assert simulator.tokens_issued == 2

    # The bound only keeps a regression from hanging the suite (it took 32-36 s with retries).
    @pytest.mark.timeout(30)
    def test_unreachable_host_fails_fast_naming_the_host(self, monkeypatch, closed_port):
        host = f"http://127.0.0.1:{closed_port}"
        # Default retry settings, as a connection made in the UI has them.
        monkeypatch.setenv("AIRFLOW_CONN_DOWN", connection_json(host, max_retries=5, retry_backoff=1))

        ok, message = ZuoraAquaHook("down").test_connection()

        assert not ok
        assert host in message and "could not connect" in message

    def test_one_attempt_only(self, simulator, monkeypatch):
        monkeypatch.setenv("AIRFLOW_CONN_FLAKY", connection_json(simulator.base_url, max_retries=5))
        simulator.add_fault("token", "503")

        ok, message = ZuoraAquaHook("flaky").test_connection()

        assert not ok
        assert "503" in message
        assert len(simulator.requests_for("token")) == 1  # a task would have retried 5 times

    @pytest.mark.timeout(60)
    def test_slow_answer_is_cut_short(self, simulator, monkeypatch):
        # The connection allows 60 s per request; a test waits at most 10 s.
        monkeypatch.setenv("AIRFLOW_CONN_SLOW", connection_json(simulator.base_url, timeout=60))
        simulator.add_fault("token", "slow", delay=25, count=1)

        ok, message = ZuoraAquaHook("slow").test_connection()

        assert not ok
        assert "timed out waiting for the answer" in message and simulator.base_url in message

    def test_refused_credentials_name_the_fields(self, simulator, monkeypatch):
        monkeypatch.setenv("AIRFLOW_CONN_BAD", connection_json(simulator.base_url).replace(CLIENT_SECRET, "not-it-42"))
        ok, message = ZuoraAquaHook("bad").test_connection()
        assert not ok
        assert "Client ID and Client Secret" in message and "not-it-42" not in message

    def test_invalid_connection_is_reported_not_raised(self, monkeypatch):
        monkeypatch.setenv("AIRFLOW_CONN_EMPTY", '{"conn_type": "zuora_aqua", "login": "id", "password": "secret"}')
        ok, message = ZuoraAquaHook("empty").test_connection()
        assert not ok
        assert "REST base URL (host)" in message


class TestReadmeSimulatorConnections:
    """The README's copy-paste connections for the simulator work as written (but for the port)."""

    def test_the_readme_shows_both_forms(self):
        lines = [line for line in connection_lines("Connection") if f"127.0.0.1:{README_SIMULATOR_PORT}" in line]
        assert len(lines) == 2
        assert lines[0].startswith("{") and lines[1].startswith("zuora-aqua://http://")

    @pytest.mark.parametrize("form", ["json", "uri"])
    def test_readme_connection_passes_the_test(self, readme_simulator, monkeypatch, form):
        lines = [line for line in connection_lines("Connection") if f"127.0.0.1:{README_SIMULATOR_PORT}" in line]
        line = lines[0 if form == "json" else 1]
        port = readme_simulator.base_url.rsplit(":", 1)[1]
        monkeypatch.setenv("AIRFLOW_CONN_ZUORA_AQUA_DEFAULT", line.replace(str(README_SIMULATOR_PORT), port))

        hook = ZuoraAquaHook()
        assert hook.settings.base_url == readme_simulator.base_url
        assert hook.test_connection()[0]
        hook.submit_job(
            {"format": "csv", "version": "1.0", "queries": [{"name": "a", "query": "select Id from Account"}]}
        )
        assert len(readme_simulator.job_ids()) == 1


#: Airflow 3.0's Task SDK ``Connection`` has no ``from_uri`` (3.1 added it).
NEEDS_SDK_FROM_URI = pytest.mark.skipif(not hasattr(Connection, "from_uri"), reason="no Connection.from_uri")


class TestUriForms:
    """Plain http needs the scheme in the host; Airflow's URI carries it in two ways."""

    @pytest.mark.parametrize(
        "uri",
        [
            "zuora-aqua://http://{id}:{secret}@127.0.0.1:{port}",
            "zuora-aqua://{id}:{secret}@http%3A%2F%2F127.0.0.1%3A{port}",
        ],
    )
    @pytest.mark.parametrize(
        "parse", [pytest.param("sdk", marks=NEEDS_SDK_FROM_URI), "stored"], ids=["task-sdk", "metadata-db"]
    )
    def test_uri_reaches_the_simulator(self, simulator, monkeypatch, uri, parse):
        port = simulator.base_url.rsplit(":", 1)[1]
        uri = uri.format(id=CLIENT_ID, secret=CLIENT_SECRET, port=port)
        conn = Connection.from_uri(uri, conn_id="x") if parse == "sdk" else StoredConnection(conn_id="x", uri=uri)
        assert AquaConnectionSettings.from_connection(conn).base_url == simulator.base_url

        # get_uri() is what the API server exports for the UI's Test: it must round-trip.
        monkeypatch.setenv("AIRFLOW_CONN_ROUND_TRIP", conn.get_uri())
        assert ZuoraAquaHook("round_trip").test_connection()[0]

    @NEEDS_SDK_FROM_URI
    def test_uri_without_scheme_means_https(self, simulator):
        port = simulator.base_url.rsplit(":", 1)[1]
        conn = Connection.from_uri(f"zuora-aqua://{CLIENT_ID}:{CLIENT_SECRET}@127.0.0.1:{port}", conn_id="x")
        assert AquaConnectionSettings.from_connection(conn).base_url == f"https://127.0.0.1:{port}"

    def test_port_field_completes_the_host(self, simulator):
        """What the UI form stores when Port is filled in (the Test workaround on Airflow <= 3.3.2)."""
        port = int(simulator.base_url.rsplit(":", 1)[1])
        for host in ("http://127.0.0.1", simulator.base_url):
            conn = Connection(
                conn_id="x", conn_type="zuora_aqua", host=host, port=port, login=CLIENT_ID, password=CLIENT_SECRET
            )
            assert AquaConnectionSettings.from_connection(conn).base_url == simulator.base_url
