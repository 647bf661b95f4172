"""
Pure units of the hardening work (issue 10): inputs refused up front, fork safety of the token cache.

The HTTP-facing points are in ``tests/integration/test_hostile_server.py``; each test here
names the point it covers.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from types import SimpleNamespace

import pytest

from airflow_provider_zuora_aqua.client.auth import TokenCache
from airflow_provider_zuora_aqua.client.settings import AquaConnectionSettings, resolve_base_url
from airflow_provider_zuora_aqua.client.wire import validate_track_id
from airflow_provider_zuora_aqua.exceptions import AquaConfigurationError
from airflow_provider_zuora_aqua.sensors.aqua import AquaJobSensor
from airflow_provider_zuora_aqua.triggers.aqua import AquaJobTrigger

JOB_ID = "e20b07474688ad5001468daf10e501de"


def conn(**fields: object) -> SimpleNamespace:
    defaults = {"conn_id": "c", "host": "http://127.0.0.1", "port": None, "login": "id", "password": "s3cret"}
    return SimpleNamespace(**{"extra_dejson": {}, **defaults, **fields})


class TestPoint3Port:
    """Point 3: the port field is an int 1..65535, checked before it joins the URL."""

    @pytest.mark.parametrize("port", ["1@127.0.0.2:80", "80/evil", "abc", 0, 70000, -1, True, 8080.5, "8080 "])
    def test_bad_ports_are_refused_naming_the_field(self, port):
        """Point 3: anything but a whole number 1..65535 is refused, naming 'port'."""
        with pytest.raises(AquaConfigurationError, match="port"):
            AquaConnectionSettings.from_connection(conn(port=port))

    @pytest.mark.parametrize("port", [8080, "8080"])
    def test_good_ports_are_kept(self, port):
        """Point 3: a port as int or digit string joins the URL."""
        assert AquaConnectionSettings.from_connection(conn(port=port)).base_url == "http://127.0.0.1:8080"

    def test_the_url_port_wins_over_the_field(self):
        """Point 3: a port already in the host URL is kept, as before."""
        assert resolve_base_url("c", "http://127.0.0.1:9000/", 8080, None) == "http://127.0.0.1:9000"

    def test_plain_http_to_a_remote_host_is_still_refused(self):
        """Point 3: the host checks apply to the final URL."""
        with pytest.raises(AquaConfigurationError, match="plain http"):
            resolve_base_url("c", "http://rest.test.zuora.com", 80, None)


class TestPoint8ForkSafety:
    """Point 8: a child forked while another thread holds the token lock does not hang."""

    def test_child_after_fork_gets_a_token_while_a_parent_thread_holds_the_lock(self):
        """Point 8: a real os.fork() while a thread is inside the cache's fetch (holding its lock)."""
        cache = TokenCache()
        key = ("https://rest.test.zuora.com", "id", "digest")
        inside, release = threading.Event(), threading.Event()

        def slow_fetch() -> tuple[str, float]:
            inside.set()
            release.wait(30)
            return "parent-token", 3599.0

        holder = threading.Thread(target=cache.get, args=(key, slow_fetch), daemon=True)
        holder.start()
        assert inside.wait(10)
        pid = os.fork()
        if pid == 0:  # the child: must get its own token promptly, never wait for the parent's thread
            code = 1
            try:
                code = 0 if cache.get(key, lambda: ("child-token", 3599.0)) == "child-token" else 2
            finally:
                os._exit(code)
        try:
            deadline = time.monotonic() + 15
            status = None
            while time.monotonic() < deadline:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    break
                time.sleep(0.05)
            else:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail("the forked child hung on the token lock held by a thread of its parent")
            assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        finally:
            release.set()
            holder.join(10)
        assert cache.peek(key) == "parent-token"  # the parent is unaffected


class TestPoint10Intervals:
    """Point 10: intervals <= 0 are refused when the trigger or the sensor is built."""

    @pytest.mark.parametrize("interval", [0, -1, 0.0, float("nan")])
    def test_trigger_refuses_a_non_positive_poll_interval(self, interval):
        """Point 10: AquaJobTrigger(poll_interval<=0) raises, naming poll_interval."""
        with pytest.raises(AquaConfigurationError, match="poll_interval"):
            AquaJobTrigger(job_id=JOB_ID, poll_interval=interval)

    @pytest.mark.parametrize("interval", [0, 0.0])
    def test_sensor_refuses_a_non_positive_poke_interval(self, interval):
        """Point 10: AquaJobSensor(poke_interval<=0) raises, naming poke_interval."""
        with pytest.raises(AquaConfigurationError, match="poke_interval"):
            AquaJobSensor(task_id="wait", job_id=JOB_ID, poke_interval=interval)

    def test_positive_intervals_are_kept(self):
        """Point 10: ordinary values pass."""
        assert AquaJobTrigger(job_id=JOB_ID, poll_interval=0.1).poll_interval == 0.1
        assert AquaJobSensor(task_id="wait", job_id=JOB_ID, poke_interval=5).poke_interval == 5


class TestPoint11Inputs:
    """Point 11: Track-Ids and hosts that used to slip through, or raise a raw ValueError."""

    @pytest.mark.parametrize("track_id", [" lead", "trail ", " both ", "\ttab", "line\n"])
    def test_track_id_with_surrounding_whitespace_is_refused(self, track_id):
        """Point 11: leading or trailing whitespace is refused, naming track_id."""
        with pytest.raises(AquaConfigurationError, match="track_id"):
            validate_track_id(track_id)

    @pytest.mark.parametrize(
        "host", ["http://[::1", "https://host:abc", "https://host:99999", "https:evil.com", "http:evil.com", "https:/x"]
    )
    def test_malformed_hosts_raise_our_error_naming_the_field(self, host):
        """Point 11: malformed hosts are an AquaConfigurationError naming the host field, never a raw ValueError."""
        with pytest.raises(AquaConfigurationError, match=r"REST base URL \(host\)"):
            resolve_base_url("c", host, None, None)

    def test_scheme_without_slashes_is_not_turned_into_a_host(self):
        """Point 11: 'https:evil.com' is refused, never rewritten to 'https://https:evil.com'."""
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
        """Point 11: the usual spellings keep working."""
        assert resolve_base_url("c", host, None, None) == url
