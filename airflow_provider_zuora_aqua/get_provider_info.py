"""Provider metadata read by Airflow through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any

from airflow_provider_zuora_aqua import __version__
from airflow_provider_zuora_aqua.client.defaults import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_RETRY_BACKOFF,
    DEFAULT_RETRY_MAX_SECONDS,
    DEFAULT_TIMEOUT,
    ENVIRONMENTS,
)

INTEGRATION = "Zuora AQuA"


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-provider-zuora-aqua",
        "name": INTEGRATION,
        "description": "Run, watch and cancel Zuora AQuA (Aggregate Query API) bulk exports.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": INTEGRATION,
                "external-doc-url": "https://developer.zuora.com/v1-api-reference/api/tag/Aggregate-Queries/",
                "tags": ["service"],
            }
        ],
        "operators": [
            {"integration-name": INTEGRATION, "python-modules": ["airflow_provider_zuora_aqua.operators.aqua"]}
        ],
        "sensors": [{"integration-name": INTEGRATION, "python-modules": ["airflow_provider_zuora_aqua.sensors.aqua"]}],
        "hooks": [{"integration-name": INTEGRATION, "python-modules": ["airflow_provider_zuora_aqua.hooks.aqua"]}],
        "triggers": [
            {"integration-name": INTEGRATION, "python-modules": ["airflow_provider_zuora_aqua.triggers.aqua"]}
        ],
        "connection-types": [
            {
                "hook-class-name": "airflow_provider_zuora_aqua.hooks.aqua.ZuoraAquaHook",
                "hook-name": "Zuora AQuA",
                "connection-type": "zuora_aqua",
                "ui-field-behaviour": {
                    # Port stays visible: on Airflow <= 3.3.2 the UI's Test action refuses any
                    # connection stored without a port (apache/airflow#73298).
                    "hidden-fields": ["schema", "extra"],
                    "relabeling": {
                        "host": "REST base URL",
                        "login": "Client ID",
                        "password": "Client Secret",
                    },
                    "placeholders": {
                        "host": "https://rest.test.zuora.com (leave empty to use Environment)",
                        "port": "443 (optional; lets the Test action work on Airflow <= 3.3.2)",
                        "login": "OAuth client id",
                        "password": "OAuth client secret",
                    },
                },
                "conn-fields": _conn_fields(),
            }
        ],
    }


def _conn_fields() -> dict[str, Any]:
    def text(label: str, description: str) -> dict[str, Any]:
        return {"label": label, "description": description, "schema": {"type": ["string", "null"]}}

    def number(
        label: str, description: str, default: float, kind: str = "number", minimum: float = 0
    ) -> dict[str, Any]:
        schema = {"type": [kind, "null"], "default": default, "minimum": minimum}
        return {"label": label, "description": description, "schema": schema}

    return {
        "environment": {
            "label": "Environment",
            "description": "Used when REST base URL is empty: the Zuora environment to call.",
            # No null in the enum: the UI would list it as the literal option "null". Empty is
            # the unset value already (the select is clearable).
            "schema": {
                "type": ["string", "null"],
                "enum": list(ENVIRONMENTS),
                "values_display": {
                    name: f"{name} ({url.removeprefix('https://')})" for name, url in ENVIRONMENTS.items()
                },
            },
        },
        "entity_ids": text("Entity ID", "Sent as Zuora-Entity-Ids (multi-entity tenants only)."),
        "org_ids": text("Org IDs", "Comma-separated, sent as Zuora-Org-Ids (multi-org tenants only)."),
        "zuora_version": text("Zuora API minor version", "Sent as Zuora-Version, for example 2025-08-20."),
        "timeout": number("Request timeout (seconds)", "Timeout of each HTTP request.", DEFAULT_TIMEOUT, minimum=1),
        "max_retries": number(
            "Max retries",
            "Retries of a call after connection errors, 429 and 5xx answers.",
            DEFAULT_MAX_RETRIES,
            kind="integer",
        ),
        "retry_backoff": number(
            "Retry backoff (seconds)", "First wait between retries; it doubles, with jitter.", DEFAULT_RETRY_BACKOFF
        ),
        "retry_max_seconds": number(
            "Retry time budget (seconds)", "No retry starts after this long.", DEFAULT_RETRY_MAX_SECONDS
        ),
    }
