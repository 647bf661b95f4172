"""The Airflow API server (UI) in a fresh home, and headless Chromium driven by selenium.

Chromium comes from Debian (``bash .ci/browser-deps``): no browser download at run time. When it
is missing the browser tests fail in CI (``CI=true``) and are skipped elsewhere.
"""

from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

from airflow_provider_zuora_aqua.testing.airflow_env import AirflowHome, free_port, stop_process_group, wait_for
from tests.support.browser import ARTIFACTS

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_OPTIONS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--window-size=1400,1600",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


def _require_browser() -> None:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if not missing:
        return
    message = f"browser test needs {', '.join(missing)}: run `bash .ci/browser-deps`"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Keep each phase's report on the test item, so fixtures can tell a failed test."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, AirflowHome]]:
    """``airflow api-server`` on loopback with every user an admin and connection tests enabled."""
    _require_browser()  # before spending ~20 s on a server nobody can look at
    root = tmp_path_factory.mktemp("airflow-ui")
    dags = root / "dags"
    dags.mkdir()
    home = AirflowHome(
        root / "home",
        dags,
        {
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
        },
    )
    home.migrate()
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    process = home.spawn(
        "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1", log_name="api-server.out"
    )
    try:
        wait_for(
            lambda: _healthy(base_url) or process.poll() is not None, timeout=120, interval=0.5, what="the API server"
        )
        assert process.poll() is None, home.read_log("api-server.out")[-3000:]
        yield base_url, home
    finally:
        stop_process_group(process)
        if ARTIFACTS.is_dir():
            shutil.copy(home.root / "api-server.out", ARTIFACTS / "api-server.log")


def _healthy(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/api/v2/monitor/health", timeout=2):
            return True
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture
def browser(request: pytest.FixtureRequest):
    """Headless Chromium; on a failed test its screenshot and page source land in the artifacts."""
    _require_browser()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    options = Options()
    options.binary_location = CHROMIUM
    for argument in CHROMIUM_OPTIONS:
        options.add_argument(argument)
    driver = webdriver.Chrome(
        service=Service(CHROMEDRIVER, log_output=str(ARTIFACTS / "chromedriver.log")), options=options
    )
    try:
        yield driver
    finally:
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            name = request.node.name
            driver.save_screenshot(str(ARTIFACTS / f"{name}-FAILED.png"))
            (ARTIFACTS / f"{name}-FAILED.html").write_text(driver.page_source)
        driver.quit()
