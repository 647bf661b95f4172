"""Connection defaults and Zuora environments.

Free of imports on purpose: ``get_provider_info`` reads it while Airflow discovers providers.
"""

from __future__ import annotations

#: Documented ``environment`` extra → REST base URL (from ``zuora_sdk.zuora_client.ZuoraEnvironment``).
ENVIRONMENTS: dict[str, str] = {
    "us-production": "https://rest.zuora.com",
    "us-cloud-production": "https://rest.na.zuora.com",
    "eu-production": "https://rest.eu.zuora.com",
    "ap-production": "https://rest.ap.zuora.com",
    "us-api-sandbox": "https://rest.apisandbox.zuora.com",
    "us-cloud-api-sandbox": "https://rest.sandbox.na.zuora.com",
    "eu-api-sandbox": "https://rest.sandbox.eu.zuora.com",
    "us-central-sandbox": "https://rest.test.zuora.com",
    "eu-central-sandbox": "https://rest.test.eu.zuora.com",
    "ap-central-sandbox": "https://rest.test.ap.zuora.com",
}
#: The names Zuora's own SDK uses for the same environments, accepted too.
SDK_ENVIRONMENT_ALIASES: dict[str, str] = {
    "prod": "us-production",
    "prod_na": "us-cloud-production",
    "prod_eu": "eu-production",
    "prod_ap": "ap-production",
    "sbx": "us-api-sandbox",
    "sbx_na": "us-cloud-api-sandbox",
    "sbx_eu": "eu-api-sandbox",
    "csbx": "us-central-sandbox",
    "csbx_eu": "eu-central-sandbox",
    "csbx_ap": "ap-central-sandbox",
}

DEFAULT_TIMEOUT = 60.0
DEFAULT_MAX_RETRIES = 5
DEFAULT_RETRY_BACKOFF = 1.0
DEFAULT_RETRY_MAX_SECONDS = 120.0
#: Longest wait between two attempts of a call: the cap of the backoff and of a ``Retry-After``
#: (a refused submit then waits at most the 60 s between attempts that docs/deployment.md promises).
MAX_RETRY_WAIT_SECONDS = 30.0
