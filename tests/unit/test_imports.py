"""DAG files import our operators at every parse: the HTTP clients must not come with them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("aiohttp", "requests", "urllib3")

CHILD = """
import importlib, json, sys
import airflow.sdk
before = set(sys.modules)
importlib.import_module(sys.argv[1])
print(json.dumps({"before": sorted(before), "after": sorted(sys.modules)}))
"""


def modules_after_import(module: str) -> tuple[set[str], set[str]]:
    """``sys.modules`` of a fresh process after ``import airflow.sdk``, then after ``module``."""
    out = subprocess.run(
        [sys.executable, "-c", CHILD, module], check=True, capture_output=True, text=True, timeout=120
    ).stdout
    loaded = json.loads(out.strip().splitlines()[-1])
    return set(loaded["before"]), set(loaded["after"])


def top_level(names: set[str]) -> set[str]:
    return {name.partition(".")[0] for name in names}


@pytest.mark.parametrize(
    "module",
    [
        "airflow_provider_zuora_aqua.operators.aqua",
        "airflow_provider_zuora_aqua.sensors.aqua",
        "airflow_provider_zuora_aqua.triggers.aqua",
        "airflow_provider_zuora_aqua.hooks.aqua",
    ],
)
def test_module_leaves_http_clients_unimported(module: str) -> None:
    before, after = modules_after_import(module)
    assert module in after
    # Only what we add counts: were Airflow to import one of them itself, we could not help it.
    added = top_level(after - before) - top_level(before)
    assert not added & set(HEAVY), f"importing {module} imports {sorted(added & set(HEAVY))}"


@pytest.mark.parametrize(
    "module", ["airflow_provider_zuora_aqua.operators.aqua", "airflow_provider_zuora_aqua.sensors.aqua"]
)
def test_operators_leave_the_trigger_module_unimported(module: str) -> None:
    """The trigger (and ``airflow.triggers.base``) is imported only when a task defers."""
    _, after = modules_after_import(module)
    assert "airflow_provider_zuora_aqua.triggers.aqua" not in after


def test_the_check_sees_an_http_client_when_one_is_imported() -> None:
    """The probe itself works: a module that does import requests is caught."""
    before, after = modules_after_import("requests")
    assert "requests" in top_level(after - before) - top_level(before)
