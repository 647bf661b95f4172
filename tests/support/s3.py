"""moto's S3-compatible server for tests that write to object storage."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_provider_zuora_aqua.testing.airflow_env import free_port

#: The Airflow connection (type aws) that points at the server.
MOTO_CONN_ID = "aws_moto"


@contextmanager
def moto_server() -> Iterator[str]:
    """moto's S3-compatible server, as a separate process on loopback; yields its endpoint URL."""
    port = free_port()
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(endpoint, timeout=1)
                break
            except requests.ConnectionError:
                assert process.poll() is None, "moto_server exited"
                assert time.monotonic() < deadline, "moto_server did not start"
                time.sleep(0.1)
        yield endpoint
    finally:
        process.terminate()
        process.wait(10)


def fresh_bucket(endpoint: str, monkeypatch: pytest.MonkeyPatch, prefix: str) -> Any:
    """A new bucket (its name on the client as ``bucket_name``), and the connection ``aws_moto`` to reach it."""
    import boto3

    monkeypatch.setenv(
        f"AIRFLOW_CONN_{MOTO_CONN_ID.upper()}",
        json.dumps(
            {
                "conn_type": "aws",
                "login": "testing",
                "password": "testing",
                "extra": {"endpoint_url": endpoint, "region_name": "us-east-1"},
            }
        ),
    )
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    name = f"{prefix}-{time.monotonic_ns()}"
    client.create_bucket(Bucket=name)
    client.bucket_name = name
    return client
