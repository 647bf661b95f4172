"""The token cache and secret scrubbing."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from airflow_provider_zuora_aqua.client.auth import TokenCache


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


class TestForkSafety:
    """a child forked while another thread holds the token lock does not hang."""

    def test_child_after_fork_gets_a_token_while_a_parent_thread_holds_the_lock(self):
        """a real os.fork() while a thread is inside the cache's fetch (holding its lock)."""
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
