"""The provider as Airflow sees it: entry point, provider info, connection form."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from airflow import __version__ as airflow_version
from packaging.version import Version

from airflow_provider_zuora_aqua import __version__
from airflow_provider_zuora_aqua.client.defaults import ENVIRONMENTS
from airflow_provider_zuora_aqua.get_provider_info import get_provider_info
from airflow_provider_zuora_aqua.hooks.aqua import ZuoraAquaHook


def test_connection_type_in_provider_info():
    info = get_provider_info()
    [connection] = info["connection-types"]
    assert connection["connection-type"] == ZuoraAquaHook.conn_type == "zuora_aqua"
    assert connection["hook-class-name"] == "airflow_provider_zuora_aqua.hooks.aqua.ZuoraAquaHook"
    behaviour = connection["ui-field-behaviour"]
    assert behaviour["relabeling"] == {"host": "REST base URL", "login": "Client ID", "password": "Client Secret"}
    assert "schema" in behaviour["hidden-fields"]
    # Visible: a stored port is the workaround for the UI's Test action on Airflow <= 3.3.2.
    assert "port" not in behaviour["hidden-fields"]
    assert set(connection["conn-fields"]) == {
        "environment",
        "entity_ids",
        "org_ids",
        "zuora_version",
        "timeout",
        "max_retries",
        "retry_backoff",
        "retry_max_seconds",
    }
    environment = connection["conn-fields"]["environment"]["schema"]
    assert environment["enum"] == list(ENVIRONMENTS)  # no None: the UI would show it as "null"
    assert environment["values_display"]["us-central-sandbox"] == "us-central-sandbox (rest.test.zuora.com)"
    assert info["versions"] == [__version__]


@pytest.mark.skipif(Version(airflow_version) < Version("3.2"), reason="Airflow < 3.2: no conn-fields form")
def test_providers_manager_builds_the_connection_form():
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    assert "airflow-provider-zuora-aqua" in manager.providers
    widgets = manager.connection_form_widgets
    assert widgets["extra__zuora_aqua__environment"].field["schema"]["title"] == "Environment"
    assert widgets["extra__zuora_aqua__timeout"].field["value"] == 60.0
    behaviour = manager.field_behaviours["zuora_aqua"]
    assert behaviour["relabeling"]["password"] == "Client Secret"


def test_airflow_providers_list_shows_the_provider(tmp_path: Path):
    env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW")}
    env["AIRFLOW_HOME"] = str(tmp_path)
    airflow = str(Path(sys.executable).with_name("airflow"))
    result = subprocess.run(
        [airflow, "providers", "list"], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    line = next(line for line in result.stdout.splitlines() if "airflow-provider-zuora-aqua" in line)
    assert __version__ in line
