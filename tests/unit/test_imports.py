"""
Where the HTTP clients may be imported: only in the client package, and never at DAG parse.

DAG files import our operators at every parse: the HTTP clients must not come with them. And
only ``airflow_provider_zuora_aqua.client`` may import them at all, so that one room holds
every transport rule. The simulator and the testing harness speak HTTP with the standard
library (``http.server``, ``urllib.request``): they are checked like any other module.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import airflow_provider_zuora_aqua

HEAVY = ("aiohttp", "requests", "urllib3")
PACKAGE = Path(airflow_provider_zuora_aqua.__file__).parent
CLIENT = PACKAGE / "client"

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


def http_client_imports(source: str) -> list[str]:
    """
    Every import of an HTTP client in ``source``, wherever it stands (module top, function
    body, ``if TYPE_CHECKING``), and every ``import_module``/``__import__`` of one by name.
    """
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            called = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            names = [str(node.args[0].value)] if called in ("import_module", "__import__") else []
        else:
            continue
        found += [f"line {node.lineno}: {name}" for name in names if name.partition(".")[0] in HEAVY]
    return found


def modules_outside_the_client() -> list[Path]:
    modules = [path for path in sorted(PACKAGE.rglob("*.py")) if CLIENT not in path.parents]
    assert PACKAGE / "simulator" / "server.py" in modules and PACKAGE / "testing" / "airflow_env.py" in modules
    return modules


@pytest.mark.parametrize("path", modules_outside_the_client(), ids=lambda path: str(path.relative_to(PACKAGE)))
def test_only_the_client_package_imports_http_clients(path: Path) -> None:
    assert http_client_imports(path.read_text()) == [], f"{path.relative_to(PACKAGE)} imports an HTTP client"


def test_the_client_package_is_where_they_are_imported() -> None:
    """The scan sees the imports that are there (all three, some inside functions)."""
    found = {
        item.rpartition(" ")[2].partition(".")[0]
        for path in CLIENT.glob("*.py")
        for item in http_client_imports(path.read_text())
    }
    assert found == set(HEAVY)


@pytest.mark.parametrize(
    "source",
    [
        "import requests",
        "import urllib3.exceptions",
        "from aiohttp import ClientSession",
        "if TYPE_CHECKING:\n    import requests",
        "def f():\n    from requests.adapters import HTTPAdapter",
        "importlib.import_module('aiohttp')",
        "__import__('urllib3')",
    ],
)
def test_the_scan_catches_every_form(source: str) -> None:
    assert http_client_imports(source)


def test_the_scan_leaves_the_standard_library_alone() -> None:
    assert (
        http_client_imports("import urllib.request\nfrom http.server import HTTPServer\nfrom . import requests") == []
    )
