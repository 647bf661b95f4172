"""
The package's rooms keep their walls: the callback needs no operator, the job rules no HTTP
client package, and no module grows past 600 lines.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import airflow_provider_zuora_aqua

PACKAGE = Path(airflow_provider_zuora_aqua.__file__).parent
NAME = airflow_provider_zuora_aqua.__name__
MAX_MODULE_LINES = 600
#: Modules allowed over the limit, with why (none today).
OVER_THE_LIMIT: dict[str, str] = {}

CHILD = """
import importlib, json, sys
importlib.import_module("airflow_provider_zuora_aqua.callbacks")
after_callbacks = sorted(sys.modules)
importlib.import_module("airflow_provider_zuora_aqua.operators.aqua")
print(json.dumps({"callbacks": after_callbacks, "operators": sorted(sys.modules)}))
"""


def test_the_callback_imports_no_operator():
    out = subprocess.run(
        [sys.executable, "-c", CHILD], check=True, capture_output=True, text=True, timeout=120, cwd=PACKAGE.parent
    ).stdout
    loaded = json.loads(out.strip().splitlines()[-1])
    operators = f"{NAME}.operators"

    assert f"{NAME}.callbacks" in loaded["callbacks"]
    assert [name for name in loaded["callbacks"] if name == operators or name.startswith(operators + ".")] == []
    # The probe sees an operator module when one is imported.
    assert f"{NAME}.operators.aqua" in loaded["operators"]


def imported_modules(source: str, module: str) -> list[str]:
    """Every module ``source`` (the text of ``module``) imports, wherever the import stands, relative ones resolved."""
    package = module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                stem = f"{base}.{node.module}" if node.module else base
            else:
                stem = node.module or ""
            found.append(stem)
            found += [f"{stem}.{alias.name}" for alias in node.names]
    return found


def from_the_client(source: str, module: str) -> list[str]:
    client = f"{NAME}.client"
    return [name for name in imported_modules(source, module) if name == client or name.startswith(client + ".")]


JOBS = sorted((PACKAGE / "jobs").glob("*.py"))


@pytest.mark.parametrize("path", JOBS, ids=lambda path: path.name)
def test_the_job_rules_import_nothing_from_the_client(path):
    assert from_the_client(path.read_text(), f"{NAME}.jobs.{path.stem}") == []


def test_the_jobs_package_is_where_it_is_looked_for():
    assert {path.name for path in JOBS} >= {"__init__.py", "status.py", "slots.py", "request.py", "event.py"}


@pytest.mark.parametrize(
    "source",
    [
        "from airflow_provider_zuora_aqua.client.wire import validate_track_id",
        "import airflow_provider_zuora_aqua.client.session",
        "from airflow_provider_zuora_aqua import client",
        "from ..client import wire",
        "from ..client.retry import backoff",
        "if TYPE_CHECKING:\n    from airflow_provider_zuora_aqua.client.settings import AquaConnectionSettings",
        "def f():\n    from airflow_provider_zuora_aqua.client.asession import shared_client_session",
    ],
)
def test_the_scan_sees_every_form_of_import_from_the_client(source):
    assert from_the_client(source, f"{NAME}.jobs.status")


def test_the_scan_leaves_other_imports_alone():
    source = (
        "from airflow_provider_zuora_aqua.exceptions import AquaError\nfrom .status import JobWatch\nimport clientlib"
    )
    assert from_the_client(source, f"{NAME}.jobs.slots") == []


def package_modules() -> list:
    params = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        reason = OVER_THE_LIMIT.get(relative)
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        params.append(pytest.param(path, id=relative, marks=marks))
    return params


@pytest.mark.parametrize("path", package_modules())
def test_no_module_is_over_600_lines(path):
    assert len(path.read_text().splitlines()) <= MAX_MODULE_LINES
