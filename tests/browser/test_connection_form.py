"""The Zuora AQuA connection form in the real Airflow UI: add a connection, save it, run its Test.

Screenshots of every step go to ``BROWSER_ARTIFACTS`` (default ``tests/browser/artifacts/``).
"""

from __future__ import annotations

import json
import socket
import urllib.request
from collections.abc import Iterator
from typing import Any, Literal

import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from airflow_provider_zuora_aqua.get_provider_info import get_provider_info
from airflow_provider_zuora_aqua.simulator import AquaSimulator
from tests.support.browser import ARTIFACTS
from tests.support.credentials import CLIENT_ID, CLIENT_SECRET

# A real API server too: `-m "not airflow_e2e"` skips it along with the other real-Airflow tests.
pytestmark = [pytest.mark.browser, pytest.mark.airflow_e2e, pytest.mark.timeout(300)]

DIALOG = "//*[@role='dialog']"
TOAST = "//*[@data-scope='toast' and @data-part='root']"
WAIT_SECONDS = 60


@pytest.fixture(scope="module")
def connection_type() -> dict[str, Any]:
    [connection_type] = get_provider_info()["connection-types"]
    return connection_type


@pytest.fixture
def simulator() -> Iterator[AquaSimulator]:
    with AquaSimulator(client_id=CLIENT_ID, client_secret=CLIENT_SECRET) as sim:
        yield sim


class ConnectionsPage:
    """The connection list and its Add Connection dialog, found by what a user sees."""

    def __init__(self, driver: WebDriver, base_url: str, test_name: str) -> None:
        self.driver = driver
        self.base_url = base_url
        self.test_name = test_name
        self.wait = WebDriverWait(driver, WAIT_SECONDS, poll_frequency=0.1)
        self._shots = 0

    def shot(self, step: str) -> None:
        self._shots += 1
        self.driver.save_screenshot(str(ARTIFACTS / f"{self.test_name}-{self._shots:02d}-{step}.png"))

    def visible(self, xpath: str) -> WebElement:
        return self.wait.until(ec.visibility_of_element_located((By.XPATH, xpath)))

    def click(self, xpath: str) -> None:
        self.wait.until(ec.element_to_be_clickable((By.XPATH, xpath))).click()

    def gone(self, xpath: str) -> None:
        self.wait.until(ec.invisibility_of_element_located((By.XPATH, xpath)))

    def field(self, name: str) -> WebElement:
        return self.visible(f"{DIALOG}//*[@name='{name}']")

    def field_group(self, label: str) -> WebElement:
        """The form row (label, input, description) whose label is ``label``."""
        return self.visible(f"{DIALOG}//*[@role='group'][.//label[normalize-space(.)='{label}']]")

    def open_add_dialog(self, connection_id: str, type_label: str) -> None:
        self.driver.get(f"{self.base_url}/connections")
        self.click("//button[contains(., 'Add Connection')]")
        self.field("connection_id").send_keys(connection_id)
        self.visible(f"{DIALOG}//input[@role='combobox']").send_keys(type_label)
        self.click(f"//*[@role='option' and normalize-space(.)='{type_label}']")
        self.field("host")  # the standard fields of the chosen type are shown

    def save(self, connection_id: str) -> WebElement:
        self.click(f"{DIALOG}//button[contains(., 'Save')]")
        self.gone(DIALOG)
        return self.row(connection_id)

    def row(self, connection_id: str) -> WebElement:
        return self.visible(
            f"//tr[td[@data-testid='table-cell-connection_id' and normalize-space(.)='{connection_id}']]"
        )

    def run_test(self, connection_id: str) -> tuple[str, str]:
        """Click the Test icon on the connection's row; return the toast's (type, text)."""
        self.row(connection_id).find_element(By.XPATH, ".//button[@aria-label='Test Connection']").click()

        def toast(driver: WebDriver) -> tuple[str, str] | Literal[False]:
            # A success toast lives 2 s: read it the moment it shows. Other toasts ("Connection has
            # been successfully created") may still be on screen.
            try:
                for element in driver.find_elements(By.XPATH, TOAST):
                    if element.text.startswith("Test Connection"):
                        return element.get_attribute("data-type") or "", element.text
            except StaleElementReferenceException:
                pass
            return False

        return self.wait.until(toast)


def test_add_zuora_connection_and_test_it(api_server, browser, simulator, connection_type, request):
    base_url, _ = api_server
    behaviour = connection_type["ui-field-behaviour"]
    conn_fields = connection_type["conn-fields"]
    page = ConnectionsPage(browser, base_url, request.node.name)
    sim_port = simulator.base_url.rsplit(":", 1)[1]

    page.open_add_dialog("zuora_ui", connection_type["hook-name"])
    page.shot("standard-fields")

    # Standard fields: relabelled, with placeholders; hidden ones absent.
    for name, label in behaviour["relabeling"].items():
        group = page.field_group(label)
        placeholder = group.find_element(By.XPATH, f".//*[@name='{name}']").get_attribute("placeholder")
        assert placeholder == behaviour["placeholders"][name], name
    assert page.field("port").get_attribute("placeholder") == behaviour["placeholders"]["port"]
    dialog_text = page.visible(DIALOG).text
    assert "Schema" not in dialog_text
    for hidden in behaviour["hidden-fields"]:
        assert not browser.find_elements(By.XPATH, f"{DIALOG}//*[@name='{hidden}']"), hidden

    page.field("host").send_keys(simulator.base_url)
    page.field("login").send_keys(CLIENT_ID)
    page.field("password").send_keys(CLIENT_SECRET)
    # Airflow <= 3.3.2 refuses to test a connection stored without a port (README: Connection).
    page.field("port").send_keys(sim_port)

    # Extra fields: every conn-field with its label and description.
    page.click(f"{DIALOG}//button[contains(., 'Extra Fields') and not(contains(., 'JSON'))]")
    for spec in conn_fields.values():
        group = page.field_group(spec["label"])
        assert spec["description"] in group.text
    page.field("element_entity_ids").send_keys("ui-entity-1")
    page.shot("extra-fields")

    # Environment: a clearable select with a placeholder; no literal "null" anywhere.
    environment = page.field_group(conn_fields["environment"]["label"])
    assert "null" not in environment.text.lower()
    environment.find_element(By.XPATH, ".//input[@role='combobox']").click()
    options = [element.text for element in page.wait.until(lambda d: d.find_elements(By.XPATH, "//*[@role='option']"))]
    page.shot("environment-options")
    assert options == list(conn_fields["environment"]["schema"]["values_display"].values())
    assert not any(option.strip().lower() in ("null", "none", "") for option in options)
    page.click(f"{DIALOG}//h2")  # close the menu without choosing
    page.gone("//*[@role='option']")
    assert "null" not in page.field_group(conn_fields["environment"]["label"]).text.lower()

    row = page.save("zuora_ui")
    assert simulator.base_url in row.text
    page.shot("saved")

    kind, text = page.run_test("zuora_ui")
    page.shot("tested")
    assert kind == "success", text
    assert f"Connected to {simulator.base_url}: Zuora issued an OAuth token." in text
    [token_request] = simulator.requests_for("token")
    assert token_request.status == 200

    stored = _stored_connection(base_url, "zuora_ui")
    assert stored["host"] == simulator.base_url and stored["port"] == int(sim_port)
    assert json.loads(stored["extra"])["entity_ids"] == "ui-entity-1"
    assert CLIENT_SECRET not in json.dumps(stored)


def test_unreachable_host_fails_the_test_naming_it(api_server, browser, connection_type, request):
    base_url, _ = api_server
    page = ConnectionsPage(browser, base_url, request.node.name)
    with socket.socket() as sock:  # bound, never listening: connections are refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        host = f"http://127.0.0.1:{port}"

        page.open_add_dialog("zuora_ui_down", connection_type["hook-name"])
        page.field("host").send_keys(host)
        page.field("login").send_keys(CLIENT_ID)
        page.field("password").send_keys(CLIENT_SECRET)
        page.field("port").send_keys(str(port))
        page.save("zuora_ui_down")

        kind, text = page.run_test("zuora_ui_down")
    page.shot("tested")
    assert kind == "error", text
    assert host in text and "could not connect" in text


def _stored_connection(base_url: str, connection_id: str) -> dict[str, Any]:
    """The connection as the REST API returns it (secrets masked)."""

    with urllib.request.urlopen(f"{base_url}/auth/token", timeout=10) as response:
        token = json.loads(response.read())["access_token"]
    request = urllib.request.Request(
        f"{base_url}/api/v2/connections/{connection_id}", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())
