"""
The hook, the trigger and the operator's ``on_kill`` against a hostile local HTTP server.

The server
(:mod:`tests.support.hostile_server`) runs on 127.0.0.1 and answers what each test scripts: huge or
gzip-bomb bodies, bytes dripped slowly, echoes of the request, odd JSON shapes, held answers.
Where the point is a wall-clock bound, the test checks that bound with a wide margin against
a server that would otherwise keep the call busy several times longer.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from urllib.parse import quote, quote_plus

import pytest

from airflow_provider_zuora_aqua.client.defaults import MAX_RETRY_WAIT_SECONDS
from airflow_provider_zuora_aqua.exceptions import (
    AquaAuthenticationError,
    AquaConfigurationError,
    AquaError,
    AquaJobNotFoundError,
    AquaRateLimitError,
    AquaTransportError,
)
from airflow_provider_zuora_aqua.hooks.aqua import ZuoraAquaHook
from airflow_provider_zuora_aqua.jobs.status import check_job_succeeded
from airflow_provider_zuora_aqua.operators.aqua import AquaSubmitJobOperator
from airflow_provider_zuora_aqua.triggers.aqua import AquaJobTrigger
from tests.support.hostile_server import (
    JOB_ID,
    HostileServer,
    Reply,
    gzip_bomb,
    gzipped,
    job_json,
    json_body,
)

CONN_ID = "hostile"
#: A secret whose raw, URL-encoded and repr forms all differ.
SECRET = 'p@ss w/rd+&x=1\\q"é-7c41'
QUERY = {"format": "csv", "version": "1.0", "queries": [{"name": "a", "query": "select Id from Account"}]}
MB = 1024 * 1024


def connection(base_url: str, **extra: object) -> str:
    extras = {"retry_backoff": 0.05, "max_retries": 1, "timeout": 5, **extra}
    return json.dumps(
        {"conn_type": "zuora_aqua", "host": base_url, "login": "hostile-client", "password": SECRET, "extra": extras}
    )


def forms(secret: str) -> list[str]:
    """The forms in which a secret can leak: raw, URL-encoded, repr and JSON-escaped."""
    return [secret, quote(secret), quote(secret, safe=""), quote_plus(secret), repr(secret)[1:-1], json.dumps(secret)]


def assert_no_leak(text: str, *secrets: str) -> None:
    for secret in secrets:
        for form in forms(secret):
            assert form not in text, f"{form!r} leaked"


@pytest.fixture
def server() -> Iterator[HostileServer]:
    with HostileServer() as hostile:
        yield hostile


@pytest.fixture
def use_conn(server: HostileServer, monkeypatch: pytest.MonkeyPatch):
    """Point connection ``hostile`` at the server with the given extras; returns a new hook."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)

    def use(**extra: object) -> ZuoraAquaHook:
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", connection(server.base_url, **extra))
        return ZuoraAquaHook(CONN_ID)

    return use


async def collect(trigger: AquaJobTrigger, timeout: float = 30) -> list[dict]:
    async def run() -> list[dict]:
        return [event.payload async for event in trigger.run()]

    return await asyncio.wait_for(run(), timeout)


JOB_PATH = f"/v1/batch-query/jobs/{JOB_ID}"


class TestBoundedAnswers:
    """answers are capped (10 MB decoded), gzip is decoded with a bound, sync and async."""

    def test_gzip_bomb_is_refused_sync(self, server, use_conn):
        """a 0.05 MB gzip answer that decodes to 40 MB raises our error instead of being decoded."""
        bomb = gzip_bomb(40 * MB)
        assert len(bomb) < 0.1 * MB
        server.on("GET", JOB_PATH, Reply(body=bomb, headers={"Content-Encoding": "gzip"}))
        with pytest.raises(AquaError, match="larger than"):
            use_conn(max_retries=0).get_job(JOB_ID)

    def test_huge_plain_answer_is_refused_sync(self, server, use_conn):
        """a 12 MB plain answer raises our error."""
        server.on("GET", JOB_PATH, Reply(body=b'{"id": "' + JOB_ID.encode() + b'", "pad": "' + b" " * 12 * MB + b'"}'))
        with pytest.raises(AquaError, match="larger than"):
            use_conn(max_retries=0).get_job(JOB_ID)

    async def test_gzip_bomb_is_refused_async(self, server, use_conn):
        """the trigger's path applies the same cap to the decoded answer."""
        server.on("GET", JOB_PATH, Reply(body=gzip_bomb(40 * MB), headers={"Content-Encoding": "gzip"}))
        with pytest.raises(AquaError, match="larger than"):
            await use_conn(max_retries=0).aget_job(JOB_ID)

    async def test_huge_plain_answer_is_refused_async(self, server, use_conn):
        """a 12 MB plain answer raises our error on the async path too."""
        server.on("GET", JOB_PATH, Reply(body=b'{"id": "' + JOB_ID.encode() + b'", "pad": "' + b" " * 12 * MB + b'"}'))
        with pytest.raises(AquaError, match="larger than"):
            await use_conn(max_retries=0).aget_job(JOB_ID)

    @pytest.mark.parametrize("path", ["sync", "async"])
    async def test_gzipped_answers_below_the_cap_are_decoded(self, server, use_conn, path):
        """the cap does not change ordinary gzip answers (Zuora gzips answers over 1,000 bytes)."""
        server.on("GET", JOB_PATH, gzipped(Reply(body=json_body(job_json(name="x" * 5000)))))
        hook = use_conn()
        job = hook.get_job(JOB_ID) if path == "sync" else await hook.aget_job(JOB_ID)
        assert job["name"] == "x" * 5000


class TestWallClockDeadlines:
    """every exchange ends at a wall-clock deadline, not a per-read timeout."""

    # 40 bytes dripped one every 0.5 s: 20 s for one answer.
    DRIP = Reply(body=json_body(job_json())[:40], drip_seconds=0.5, headers={"Content-Length": "200"})

    def test_dripped_body_ends_at_the_connection_timeout(self, server, use_conn):
        """with timeout=2 and no retries, get_job gives up near 2 s, not after the 20 s drip."""
        server.on("GET", JOB_PATH, self.DRIP)
        hook = use_conn(timeout=2, max_retries=0)
        hook.get_access_token()
        started = time.monotonic()
        with pytest.raises(AquaTransportError):
            hook.get_job(JOB_ID)
        assert time.monotonic() - started < 10

    def test_dripped_headers_end_at_the_connection_timeout(self, server, use_conn):
        """the status line and headers dripped byte by byte are bounded too."""
        server.on("GET", JOB_PATH, Reply(body=json_body(job_json()), drip_seconds=0.5, drip_everything=True))
        hook = use_conn(timeout=2, max_retries=0)
        hook.get_access_token()
        started = time.monotonic()
        with pytest.raises(AquaTransportError):
            hook.get_job(JOB_ID)
        assert time.monotonic() - started < 10

    @pytest.mark.parametrize(
        ("method", "call"),
        [
            ("DELETE", lambda hook: hook.cancel_job_if_running(JOB_ID, max_seconds=3)),
            ("GET", lambda hook: hook.get_job(JOB_ID, max_seconds=3)),  # the failure callback's read
        ],
        ids=["cancel_job_if_running", "get_job"],
    )
    def test_max_seconds_holds_in_total(self, server, use_conn, method, call):
        """A call given max_seconds=3 ends near 3 s although each try would drip 20 s."""
        server.on(method, JOB_PATH, self.DRIP)
        hook = use_conn(timeout=10, max_retries=3)
        hook.get_access_token()
        started = time.monotonic()
        with pytest.raises(AquaTransportError):
            call(hook)
        assert time.monotonic() - started < 8

    def test_a_dripped_token_answer_is_bounded_by_max_seconds(self, server, use_conn):
        """the token fetch inside a bounded call shares its deadline."""
        token = json_body({"access_token": "tok-drip-1234", "expires_in": 3599})
        server.on("POST", "/oauth/token", Reply(body=token, drip_seconds=0.5))
        hook = use_conn(timeout=10, max_retries=3)
        started = time.monotonic()
        with pytest.raises(AquaTransportError):
            hook.cancel_job_if_running(JOB_ID, max_seconds=3)
        assert time.monotonic() - started < 8

    async def test_dripped_body_ends_at_the_connection_timeout_async(self, server, use_conn):
        """the async path has the same wall-clock bound."""
        server.on("GET", JOB_PATH, self.DRIP)
        hook = use_conn(timeout=2, max_retries=0)
        started = time.monotonic()
        with pytest.raises(AquaTransportError):
            await hook.aget_job(JOB_ID)
        assert time.monotonic() - started < 10


def rate_limited(retry_after: str) -> Reply:
    return Reply(status=429, body=json_body({"message": "slow down"}), headers={"Retry-After": retry_after})


#: Retry-After values no server means: not a number or an HTTP date, negative, or more than a day away.
UNBELIEVABLE = ["100000", "inf", "nan", "-5", "1e400", "soon", "Fri, 31 Dec 9999 23:59:59 GMT"]


class TestRetryAfter:
    """A 429's ``Retry-After`` is believed within bounds: no value parks a call, none crashes its wait."""

    @pytest.mark.parametrize("value", UNBELIEVABLE)
    def test_an_unbelievable_retry_after_is_treated_as_absent(self, server, use_conn, value):
        server.on("GET", JOB_PATH, rate_limited(value))
        hook = use_conn(max_retries=2)  # retry_backoff 0.05 s
        started = time.monotonic()

        with pytest.raises(AquaRateLimitError) as raised:
            hook.get_job(JOB_ID)

        assert raised.value.retry_after is None
        assert len(server.requests_to("GET", JOB_PATH)) == 3  # resent after the connection's own backoff
        assert time.monotonic() - started < 30

    async def test_an_unbelievable_retry_after_is_treated_as_absent_async(self, server, use_conn):
        server.on("GET", JOB_PATH, rate_limited("inf"))

        with pytest.raises(AquaRateLimitError) as raised:
            await asyncio.wait_for(use_conn(max_retries=2).aget_job(JOB_ID), 30)

        assert raised.value.retry_after is None
        assert len(server.requests_to("GET", JOB_PATH)) == 3

    def test_a_long_retry_after_is_capped_and_never_waited_past_the_budget(self, server, use_conn):
        """An hour, capped to the longest wait (30 s), does not fit in a 5 s budget: the call ends at once."""
        server.on("GET", JOB_PATH, rate_limited("3600"))
        hook = use_conn(max_retries=3, retry_max_seconds=5)
        started = time.monotonic()

        with pytest.raises(AquaRateLimitError) as raised:
            hook.get_job(JOB_ID)

        assert raised.value.retry_after == MAX_RETRY_WAIT_SECONDS
        assert len(server.requests_to("GET", JOB_PATH)) == 1
        assert time.monotonic() - started < 5

    def test_a_short_retry_after_is_waited(self, server, use_conn):
        server.on("GET", JOB_PATH, [rate_limited("1"), Reply(body=json_body(job_json()))])

        assert use_conn(max_retries=1).get_job(JOB_ID)["id"] == JOB_ID

        first, second = server.requests_to("GET", JOB_PATH)
        assert second.at - first.at >= 0.95


class TestPort:
    """the port field is validated before it joins the URL; it can never change the host."""

    def test_port_cannot_smuggle_another_host(self, server, monkeypatch):
        """
        port='1@127.0.0.1:<server port>' on host 127.0.0.9 is refused; nothing reaches the server.

        A secrets backend that builds ``Connection`` objects directly can hand over such a port.
        """
        from airflow.sdk import Connection

        smuggling = Connection(
            conn_id=CONN_ID,
            conn_type="zuora_aqua",
            host="http://127.0.0.9",
            port=f"1@127.0.0.1:{server.port}",  # type: ignore[arg-type]
            login="hostile-client",
            password=SECRET,
            extra=json.dumps({"max_retries": 0, "timeout": 2}),
        )
        monkeypatch.setattr(ZuoraAquaHook, "get_connection", classmethod(lambda cls, conn_id: smuggling))
        with pytest.raises(AquaConfigurationError, match="port"):
            ZuoraAquaHook(CONN_ID).get_access_token()
        assert server.requests == []


class TestProxy:
    """proxies from the environment never see a loopback exchange; both paths agree."""

    @pytest.fixture
    def proxy(self, monkeypatch) -> Iterator[HostileServer]:
        with HostileServer() as proxy:
            for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
                monkeypatch.setenv(name, proxy.base_url)
            for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
                monkeypatch.delenv(name, raising=False)
            yield proxy

    def test_loopback_token_exchange_skips_the_proxy_sync(self, server, use_conn, proxy):
        """HTTP_PROXY set: the http://127.0.0.1 token POST (secret inside) goes direct."""
        use_conn().get_access_token()
        assert proxy.requests == []
        assert len(server.requests_to("POST", "/oauth/token")) == 1

    async def test_loopback_token_exchange_skips_the_proxy_async(self, server, use_conn, proxy):
        """the same on the trigger's path."""
        await use_conn().aget_job(JOB_ID)
        assert proxy.requests == []
        assert len(server.requests_to("POST", "/oauth/token")) == 1

    @pytest.mark.parametrize("path", ["sync", "async"])
    async def test_remote_hosts_use_the_environment_proxy_on_both_paths(self, monkeypatch, proxy, path):
        """for a remote https host, sync and async both go through HTTPS_PROXY (as requests does)."""
        monkeypatch.setenv(
            f"AIRFLOW_CONN_{CONN_ID.upper()}", connection("https://rest.test.zuora.com", max_retries=0, timeout=3)
        )
        hook = ZuoraAquaHook(CONN_ID)
        with pytest.raises(AquaTransportError):
            if path == "sync":
                hook.get_access_token()
            else:
                await hook.aget_job(JOB_ID)
        assert [(r.method, r.path) for r in proxy.requests] == [("CONNECT", "rest.test.zuora.com:443")]


class TestScrubbing:
    """secret and token never reach exception text or trigger events, in any form."""

    def test_echoed_form_body_is_scrubbed(self, server, use_conn):
        """a token endpoint echoing the URL-encoded form body leaks no form of the secret."""
        server.on(
            "POST",
            "/oauth/token",
            lambda request: Reply(
                status=401,
                body=json_body({"error": "invalid_client", "error_description": f"bad: {request.body.decode()}"}),
            ),
        )
        with pytest.raises(AquaAuthenticationError) as raised:
            use_conn().get_access_token()
        assert "client_secret=" in str(raised.value)  # the echo is there, scrubbed
        assert_no_leak(str(raised.value), SECRET)
        assert_no_leak(repr(raised.value.args), SECRET)

    def test_echoed_token_in_an_error_body_is_scrubbed(self, server, use_conn):
        """an error body echoing the Authorization header leaks no form of the token."""
        server.on(
            "GET",
            JOB_PATH,
            lambda request: Reply(
                status=404, body=json_body({"message": f"not found for {request.headers['Authorization']}"})
            ),
        )
        with pytest.raises(AquaJobNotFoundError) as raised:
            use_conn().get_job(JOB_ID)
        assert_no_leak(str(raised.value), server.token, SECRET)

    def test_echoed_token_in_the_job_json_is_scrubbed(self, server, use_conn):
        """the job JSON (XCom, events) carries no echo of the token."""
        server.on(
            "GET",
            JOB_PATH,
            lambda request: Reply(body=json_body(job_json(name=request.headers["Authorization"]))),
        )
        job = use_conn().get_job(JOB_ID)
        assert_no_leak(json.dumps(job), server.token)

    async def test_echoed_token_never_reaches_the_trigger_event(self, server, use_conn):
        """a poll_failed event (stored by Airflow) carries no form of the token."""
        server.on(
            "GET",
            JOB_PATH,
            lambda request: Reply(
                status=400, body=json_body({"errorCode": request.headers["Authorization"], "message": "refused"})
            ),
        )
        use_conn()
        [event] = await collect(AquaJobTrigger(job_id=JOB_ID, zuora_conn_id=CONN_ID, poll_interval=0.1))
        assert event["status"] == "poll_failed"
        assert_no_leak(json.dumps(event), server.token, SECRET)

    def test_token_with_a_trailing_newline_is_stripped(self, server, use_conn):
        """a token answered as 'tok\\n' is used stripped; no header error carries it."""
        server.on("POST", "/oauth/token", Reply(body=json_body({"access_token": "tok-nl-4c2e9a\n", "expires_in": 60})))
        assert use_conn().get_job(JOB_ID)["id"] == JOB_ID
        assert server.requests_to("GET")[0].headers["Authorization"] == "Bearer tok-nl-4c2e9a"

    def test_token_with_control_characters_is_refused_without_quoting_it(self, server, use_conn):
        """a token with a control character inside is refused; the error does not contain it."""
        token = "tok-ctl\x01-8b3f"
        server.on("POST", "/oauth/token", Reply(body=json_body({"access_token": token, "expires_in": 60})))
        with pytest.raises(AquaError) as raised:
            use_conn().get_job(JOB_ID)
        assert_no_leak(str(raised.value), token, "tok-ctl")
        assert server.requests_to("GET") == []


ODD_ERROR_BODIES = {
    "reasons-int": {"success": False, "reasons": 5},
    "reasons-dict": {"success": False, "reasons": {"a": 1}},
    "reasons-strings": {"success": False, "reasons": ["x"]},
    "reasons-code-dict": {"success": False, "reasons": [{"code": {"a": 1}, "message": ["m"]}]},
    "error-not-string": {"error": {"a": 1}, "error_description": 5},
    "message-dict": {"message": {"a": 1}},
}


class TestOddShapes:
    """odd JSON shapes raise our own errors, and the trigger waits through them."""

    @pytest.mark.parametrize("body", list(ODD_ERROR_BODIES.values()), ids=list(ODD_ERROR_BODIES))
    @pytest.mark.parametrize("status", [200, 400])
    def test_odd_error_bodies_raise_aqua_errors(self, server, use_conn, body, status):
        """'reasons' 5, {'a': 1} and friends raise an AquaError, not TypeError/KeyError."""
        server.on("GET", JOB_PATH, Reply(status=status, body=json_body(body)))
        with pytest.raises(AquaError):
            use_conn(max_retries=0).get_job(JOB_ID)

    @pytest.mark.parametrize("path", ["sync", "async"])
    async def test_deeply_nested_json_raises_an_aqua_error(self, server, use_conn, path):
        """JSON nested 100k deep is our error, not a RecursionError."""
        server.on("GET", JOB_PATH, Reply(body=b"[" * 100_000 + b"]" * 100_000))
        hook = use_conn(max_retries=0)
        with pytest.raises(AquaError):
            if path == "sync":
                hook.get_job(JOB_ID)
            else:
                await hook.aget_job(JOB_ID)

    def test_huge_error_code_is_truncated(self, server, use_conn):
        """a 1 MB errorCode is cut short in the error."""
        server.on("GET", JOB_PATH, Reply(status=400, body=json_body({"errorCode": "9" * MB, "message": "m"})))
        with pytest.raises(AquaError) as raised:
            use_conn(max_retries=0).get_job(JOB_ID)
        assert len(raised.value.error_code or "") <= 100
        assert len(str(raised.value)) < 2000

    @pytest.mark.parametrize("expires_in", ["abc", [1], "nan", "inf", 1e400, -5, {"a": 1}, True])
    def test_odd_token_lifetimes_fall_back_to_a_safe_default(self, server, use_conn, expires_in):
        """expires_in 'abc', [1], 'nan', 'inf'... give a usable token with a finite lifetime."""
        body = json.dumps({"access_token": "tok-life-91ab", "expires_in": expires_in}).replace("Infinity", "1e400")
        server.on("POST", "/oauth/token", Reply(body=body.encode()))
        hook = use_conn(max_retries=0)
        assert hook.get_access_token() == "tok-life-91ab"
        _, lifetime = hook._client.fetch_token()
        assert 0 < lifetime < 100_000

    @pytest.mark.parametrize("batches", [{"a": 1}, ["x", "y"], 5, [None]])
    def test_odd_batches_never_raise_outside_aqua_errors(self, server, use_conn, batches):
        """'batches' as a dict or a list of strings: reading the result raises only AquaErrors."""
        server.on("GET", JOB_PATH, Reply(body=json_body(job_json("error", batches=batches))))
        job = use_conn().get_job(JOB_ID)
        with pytest.raises(AquaError):
            check_job_succeeded(job)

    async def test_trigger_waits_through_an_odd_answer(self, server, use_conn):
        """the trigger tolerates unreadable answers like a transient fault and keeps waiting."""
        deep = Reply(body=b"[" * 100_000 + b"]" * 100_000)
        server.on("GET", JOB_PATH, [deep, deep, Reply(body=json_body(job_json("completed")))])
        use_conn(max_retries=0)
        [event] = await collect(AquaJobTrigger(job_id=JOB_ID, zuora_conn_id=CONN_ID, poll_interval=0.1))
        assert event["status"] == "completed"

    async def test_trigger_waits_through_odd_error_bodies(self, server, use_conn):
        """an error body of an unreadable shape does not end (or crash) the trigger either."""
        odd = Reply(body=json_body({"success": False, "reasons": 5}))
        server.on("GET", JOB_PATH, [odd, Reply(body=json_body(job_json("completed")))])
        use_conn(max_retries=0)
        [event] = await collect(AquaJobTrigger(job_id=JOB_ID, zuora_conn_id=CONN_ID, poll_interval=0.1))
        assert event["status"] == "completed"


class TestOnKill:
    """on_kill never waits on the token lock of the interrupted thread, nor looks anything up."""

    def test_on_kill_cancels_while_the_main_thread_refreshes_the_token(self, server, use_conn):
        """the main thread is stuck in a slow token fetch; the on_kill DELETE still goes out."""
        release = threading.Event()
        token = json_body({"access_token": "tok-kill-77aa", "expires_in": 3599})
        server.on("POST", "/oauth/token", [Reply(body=token, hold=release), Reply(body=token)])
        use_conn(timeout=30)
        operator = AquaSubmitJobOperator(
            task_id="export", queries={"a": "select Id from Account"}, zuora_conn_id=CONN_ID
        )
        operator.job_id = JOB_ID
        main = threading.Thread(target=operator.hook.get_job, args=(JOB_ID,), daemon=True)
        main.start()
        try:
            deadline = time.monotonic() + 5
            while not server.requests_to("POST", "/oauth/token") and time.monotonic() < deadline:
                time.sleep(0.02)
            operator.on_kill()
            assert [r.path for r in server.requests_to("DELETE")] == [JOB_PATH]
        finally:
            release.set()
            main.join(10)

    def test_with_new_session_does_not_look_the_connection_up(self, server, use_conn, monkeypatch):
        """in the signal handler, with_new_session() must not read the connection."""
        hook = use_conn()
        lookups: list[str] = []
        real_lookup = ZuoraAquaHook.get_connection

        def counting_lookup(conn_id: str):
            lookups.append(conn_id)
            return real_lookup(conn_id)

        monkeypatch.setattr(ZuoraAquaHook, "get_connection", staticmethod(counting_lookup))
        fresh = hook.with_new_session()
        assert lookups == []
        assert fresh.get_job(JOB_ID)["id"] == JOB_ID  # the lookup happens where the call runs
        assert lookups == [CONN_ID]


class TestJobIds:
    """every job JSON the hook returns has a valid id."""

    def test_invalid_id_in_a_submit_answer_is_refused(self, server, use_conn):
        """'../../v1/x' in a submit answer raises before submit_job returns it."""
        server.on("POST", "/v1/batch-query/", Reply(body=json_body(job_json("submitted", job_id="../../v1/x"))))
        with pytest.raises(AquaError, match="job id"):
            use_conn().submit_job(QUERY)
        assert len(server.requests_to("POST", "/v1/batch-query/")) == 1  # not resent

    @pytest.mark.parametrize("bad_id", ["../../v1/x", 12345, "", None, ["x"]])
    @pytest.mark.parametrize("path", ["get", "cancel", "aget"])
    async def test_invalid_or_other_id_in_a_job_answer_is_refused(self, server, use_conn, bad_id, path):
        """get_job, cancel_job and aget_job refuse an answer whose id is invalid."""
        server.on("GET", JOB_PATH, Reply(body=json_body(job_json("cancelled", job_id=bad_id))))
        server.on("DELETE", JOB_PATH, Reply(body=json_body(job_json("cancelled", job_id=bad_id))))
        hook = use_conn(max_retries=0)
        with pytest.raises(AquaError):
            if path == "get":
                hook.get_job(JOB_ID)
            elif path == "cancel":
                hook.cancel_job(JOB_ID)
            else:
                await hook.aget_job(JOB_ID)

    def test_an_answer_about_another_job_is_refused(self, server, use_conn):
        """GET job A answered with job B's JSON is not returned as job A."""
        server.on("GET", JOB_PATH, Reply(body=json_body(job_json("completed", job_id="b" * 32))))
        with pytest.raises(AquaError, match="job id"):
            use_conn(max_retries=0).get_job(JOB_ID)


class TestSmallerInputs:
    """odd Track-Ids and hosts are refused before any request, with our error."""

    @pytest.mark.parametrize("track_id", [" lead", "trail ", "\ttab"])
    def test_track_id_with_surrounding_space_is_refused_before_sending(self, server, use_conn, track_id):
        """the submit is refused up front, not reported as possibly sent."""
        with pytest.raises(AquaConfigurationError, match="track_id"):
            use_conn().submit_job(QUERY, track_id=track_id)
        assert server.requests == []


class TestHostileFileAnswers:
    """Result downloads: error bodies bounded raw and decoded, and scrubbed of the secret."""

    FILE_PATH = "/v1/files/f1"

    def test_a_gzip_bomb_error_body_is_read_within_a_bound(self, server, use_conn, tmp_path):
        server.on(
            "GET", self.FILE_PATH, Reply(status=403, body=gzip_bomb(200 * MB), headers={"Content-Encoding": "gzip"})
        )
        hook = use_conn(max_retries=0)
        tracemalloc.start()
        try:
            with pytest.raises(AquaError, match="f1") as raised:
                hook.download_file("f1", str(tmp_path / "f1.csv"))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 8 * MB  # 64 KB of this bomb decode to about 64 MB when read unbounded
        assert len(str(raised.value)) < 2000
        assert list(tmp_path.iterdir()) == []

    def test_an_echoed_secret_in_a_file_error_is_scrubbed(self, server, use_conn, tmp_path):
        hook = use_conn(max_retries=0)
        echo = json.dumps({"message": f"denied for {hook.settings.client_secret}"}).encode()
        server.on("GET", self.FILE_PATH, Reply(status=403, body=echo, headers={"Content-Type": "application/json"}))
        with pytest.raises(AquaError) as raised:
            hook.download_file("f1", str(tmp_path / "f1.csv"))
        assert hook.settings.client_secret not in str(raised.value)


class TestNewcomerErrors:
    """a newcomer's first mistakes get errors that say what to change."""

    def test_https_to_a_loopback_server_that_speaks_http_says_use_http(self, server, monkeypatch):
        monkeypatch.setenv(
            f"AIRFLOW_CONN_{CONN_ID.upper()}",
            connection(server.base_url.replace("http://", "https://"), max_retries=0),
        )
        with pytest.raises(AquaTransportError) as raised:
            ZuoraAquaHook(CONN_ID).get_job(JOB_ID)
        assert "TLS handshake failed" in str(raised.value)
        assert f"write the connection's host as {server.base_url}" in str(raised.value)
        assert raised.value.request_sent is False  # no request left before the handshake

    async def test_https_to_a_loopback_server_says_use_http_async(self, server, monkeypatch):
        monkeypatch.setenv(
            f"AIRFLOW_CONN_{CONN_ID.upper()}",
            connection(server.base_url.replace("http://", "https://"), max_retries=0),
        )
        with pytest.raises(AquaTransportError, match=f"write the connection's host as {server.base_url}"):
            await ZuoraAquaHook(CONN_ID).aget_job(JOB_ID)

    @pytest.mark.parametrize("path", ["sync", "async"])
    async def test_an_unknown_connection_id_names_the_default_and_the_variable(self, path):
        hook = ZuoraAquaHook("zuora_prod")
        with pytest.raises(AquaConfigurationError) as raised:
            hook.get_job(JOB_ID) if path == "sync" else await hook.aget_job(JOB_ID)
        message = str(raised.value)
        assert "no connection 'zuora_prod'" in message
        assert "AIRFLOW_CONN_ZUORA_PROD" in message and "'zuora_aqua_default'" in message

    def test_a_zoql_error_names_the_batch_and_quotes_its_query(self, server, use_conn):
        refusal = {
            "errorCode": "90011",
            "message": "There is a syntax error in one of the queries in the AQuA input. Query 2: line 1:10 "
            "mismatched input 'frm'.",
        }
        server.on("POST", "/v1/batch-query/", Reply(body=json_body(refusal)))
        body = {
            "format": "csv",
            "version": "1.0",
            "queries": [
                {"name": "accounts", "query": "select Id from Account"},
                {"name": "invoices", "query": "select Id frm Invoice"},
            ],
        }
        with pytest.raises(AquaError) as raised:
            use_conn(max_retries=0).submit_job(body)
        assert "batch 'invoices' (query 2 of 2: 'select Id frm Invoice')" in str(raised.value)
        assert raised.value.error_code == "90011"


class TestThreatModelPromises:
    def test_a_json_answer_dripped_under_the_read_timeout_ends_at_the_connection_timeout(self, server, use_conn):
        """one byte per 0.5 s with timeout=2: the exchange is shut at 2 s, after about 4 of the 200 bytes."""
        drip = Reply(body=json_body(job_json(name="x" * 200))[:200], drip_seconds=0.5)
        server.on("GET", JOB_PATH, drip)
        hook = use_conn(timeout=2, max_retries=0)
        hook.get_access_token()

        with pytest.raises(AquaTransportError, match="did not arrive in time|none complete within 2 s"):
            hook.get_job(JOB_ID)

        assert drip.sent <= 8  # a per-read timeout would have let all 200 bytes through (100 s)

    def test_a_json_bomb_on_the_sync_path_stays_within_its_cap_in_memory(self, server, use_conn):
        """0.3 MB of gzip inflating to 300 MB: refused at the 10 MB cap, never inflated further."""
        bomb = gzip_bomb(300 * MB)
        assert len(bomb) < 0.35 * MB
        server.on("GET", JOB_PATH, Reply(body=bomb, headers={"Content-Encoding": "gzip"}))
        hook = use_conn(max_retries=0)
        hook.get_access_token()
        tracemalloc.start()
        try:
            with pytest.raises(AquaError, match="larger than 10 MB"):
                hook.get_job(JOB_ID)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 32 * MB

    def test_a_child_forked_during_a_token_fetch_gets_its_own_token(self, server, use_conn):
        """another thread holds the token lock in a slow fetch at fork(): the child must not wait on it."""
        release = threading.Event()
        token = json_body({"access_token": "tok-fork-91cc", "expires_in": 3599})
        server.on("POST", "/oauth/token", [Reply(body=token, hold=release), Reply(body=token)])
        hook = use_conn(timeout=30)
        fetching = threading.Thread(target=hook.get_access_token, daemon=True)
        fetching.start()
        try:
            while not server.requests_to("POST", "/oauth/token"):
                time.sleep(0.02)
            child = os.fork()
            if child == 0:  # the child: a new hook, the shared cache, the lock the parent's thread holds
                code = 1
                try:
                    code = 0 if ZuoraAquaHook(CONN_ID).get_access_token() == "tok-fork-91cc" else 2
                finally:
                    os._exit(code)
            waited = 0.0
            while (done := os.waitpid(child, os.WNOHANG)) == (0, 0) and waited < 60:
                time.sleep(0.05)
                waited += 0.05
            if done == (0, 0):
                os.kill(child, signal.SIGKILL)
                os.waitpid(child, 0)
                pytest.fail("the forked child hung in get_access_token()")
            assert os.waitstatus_to_exitcode(done[1]) == 0
        finally:
            release.set()
            fetching.join(10)

    def test_a_child_forked_during_a_first_use_in_a_thread_builds_its_own_client(self, server, use_conn, monkeypatch):
        """
        Another thread is inside its hook's first use of the client (its connection lookup, from
        a slow secrets backend) at fork(): the child's first use must not wait on that thread.
        """
        entered, release = threading.Event(), threading.Event()
        hook = use_conn(timeout=30)
        lookup = ZuoraAquaHook.get_connection

        def slow_in_the_thread(cls, conn_id):
            if threading.current_thread().name == "first-use":
                entered.set()
                release.wait(30)
            return lookup(conn_id)

        monkeypatch.setattr(ZuoraAquaHook, "get_connection", classmethod(slow_in_the_thread))
        first_use = threading.Thread(target=hook.get_access_token, name="first-use", daemon=True)
        first_use.start()
        try:
            assert entered.wait(10)
            assert run_in_a_child(lambda: ZuoraAquaHook(CONN_ID).get_access_token() == server.token)
        finally:
            release.set()
            first_use.join(10)

    def test_a_forked_child_does_not_share_the_parents_client(self, server, use_conn):
        """A hook used before fork() builds a new client (its own connections) in the child."""
        hook = use_conn()
        parents = hook.get_conn()

        assert run_in_a_child(lambda: hook.get_conn() is not parents and hook.get_access_token() == server.token)

    def test_a_child_forked_while_a_thread_imports_the_client_does_not_hang(self, server, use_conn, tmp_path):
        """
        In a fresh interpreter, a thread's first use imports the client's module (slowly here) when
        the main thread forks: the child would wait forever on that module's import lock.
        """
        use_conn(timeout=30)
        script = tmp_path / "fork_during_import.py"
        script.write_text(FORK_DURING_IMPORT)

        done = subprocess.run(
            [sys.executable, str(script), CONN_ID, server.token],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )

        assert done.stdout.split()[-1:] == ["child-ok"], done.stdout + done.stderr


#: Run by the test above in its own interpreter, so that the client module is not imported yet.
FORK_DURING_IMPORT = """
import importlib.abc
import importlib.util
import os
import signal
import sys
import threading
import time

from airflow_provider_zuora_aqua.hooks.aqua import ZuoraAquaHook

CLIENT = "airflow_provider_zuora_aqua.client.sync_client"
importing = threading.Event()
assert CLIENT not in sys.modules


class SlowClientImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != CLIENT or threading.current_thread().name != "first-use":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        load = spec.loader.exec_module

        def exec_module(module):
            importing.set()
            time.sleep(2)
            load(module)

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, SlowClientImport())
conn_id, token = sys.argv[1], sys.argv[2]
threading.Thread(target=ZuoraAquaHook(conn_id).get_access_token, name="first-use", daemon=True).start()
assert importing.wait(30)
child = os.fork()
if child == 0:
    code = 1
    try:
        code = 0 if ZuoraAquaHook(conn_id).get_access_token() == token else 2
    finally:
        os._exit(code)
deadline = time.monotonic() + 30
while (done := os.waitpid(child, os.WNOHANG)) == (0, 0) and time.monotonic() < deadline:
    time.sleep(0.05)
if done == (0, 0):
    os.kill(child, signal.SIGKILL)
    print("child-hung")
else:
    print("child-ok" if os.waitstatus_to_exitcode(done[1]) == 0 else f"child-failed-{done[1]}")
"""


def run_in_a_child(check: Callable[[], bool], seconds: float = 30) -> bool:
    """Whether ``check()`` is true in a forked child; the child is killed (and the test fails) if it hangs."""
    child = os.fork()
    if child == 0:
        code = 1
        try:
            code = 0 if check() else 2
        finally:
            os._exit(code)
    deadline = time.monotonic() + seconds
    while (done := os.waitpid(child, os.WNOHANG)) == (0, 0) and time.monotonic() < deadline:
        time.sleep(0.05)
    if done == (0, 0):
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        pytest.fail("the forked child hung")
    return os.waitstatus_to_exitcode(done[1]) == 0


class TestCostOfACall:
    """what a call does besides its exchange (no timing here: benchmarks/cancel_latency.py --one-call times it)."""

    def test_the_environment_is_read_once_per_hook_not_per_call(self, server, use_conn, monkeypatch):
        import requests.utils

        reads = {"proxies": 0, "netrc": 0}
        environ_proxies, netrc_auth = requests.utils.get_environ_proxies, requests.utils.get_netrc_auth

        def counted(name, function):
            def call(*args, **kwargs):
                reads[name] += 1
                return function(*args, **kwargs)

            return call

        monkeypatch.setattr(requests.utils, "get_environ_proxies", counted("proxies", environ_proxies))
        monkeypatch.setattr(requests.utils, "get_netrc_auth", counted("netrc", netrc_auth))
        monkeypatch.setattr("requests.sessions.get_environ_proxies", requests.utils.get_environ_proxies, raising=False)
        monkeypatch.setattr("requests.sessions.get_netrc_auth", requests.utils.get_netrc_auth)
        hook = use_conn()

        for _ in range(5):
            hook.cancel_job(JOB_ID)

        assert reads == {"proxies": 0, "netrc": 0}  # a loopback host: no proxy to look up, and ~/.netrc never
