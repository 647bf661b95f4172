"""The baseline: a bare ``requests`` script that, on SIGTERM, fetches a token and cancels a job.

Usage: python bare_cancel.py BASE_URL CLIENT_ID CLIENT_SECRET JOB_ID (prints "ready", waits).
"""

from __future__ import annotations

import signal
import sys

import requests

base_url, client_id, client_secret, job_id = sys.argv[1:5]
# Block SIGTERM before saying "ready", so that a signal sent right after is not lost.
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
print("ready", flush=True)
signal.sigwait({signal.SIGTERM})
token = requests.post(
    f"{base_url}/oauth/token",
    data={"client_id": client_id, "client_secret": client_secret, "grant_type": "client_credentials"},
    timeout=10,
).json()["access_token"]
requests.delete(f"{base_url}/v1/batch-query/jobs/{job_id}", headers={"Authorization": f"Bearer {token}"}, timeout=10)
