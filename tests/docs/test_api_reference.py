"""
The API reference (docs/api/) is generated from the code and documents every public class and
function of the provider's public modules: built as CI builds it, read back from its inventory.
"""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest
from sphinx.util.inventory import InventoryFile

from tests.docs.blocks import DOCS, blocks_in
from tests.support.docs_build import build_docs

#: The modules whose classes and functions users import, each with its page.
PUBLIC_MODULES = {
    "airflow_provider_zuora_aqua.operators.aqua": "api/operators",
    "airflow_provider_zuora_aqua.sensors.aqua": "api/sensors",
    "airflow_provider_zuora_aqua.triggers.aqua": "api/triggers",
    "airflow_provider_zuora_aqua.hooks.aqua": "api/hooks",
    "airflow_provider_zuora_aqua.callbacks": "api/callbacks",
    "airflow_provider_zuora_aqua.exceptions": "api/exceptions",
    "airflow_provider_zuora_aqua.get_provider_info": "api/get_provider_info",
}


@pytest.fixture(scope="module")
def html(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_docs(tmp_path_factory.mktemp("docs-html"))


@pytest.fixture(scope="module")
def inventory(html: Path) -> dict[str, str]:
    """Every object the built docs describe: ``module.Name`` -> the page that describes it."""
    with open(html / "objects.inv", "rb") as stream:
        loaded = InventoryFile.load(stream, "", lambda base, uri: uri)
    objects = {}
    for role, entries in loaded.items():
        if role.startswith("py:"):
            for name, entry in entries.items():
                uri = entry[2] if isinstance(entry, tuple) else entry.uri
                objects[name] = uri.split("#")[0].removesuffix(".html")
    return objects


def public_definitions(module_name: str) -> list[str]:
    """The public classes and functions a module defines, or re-exports through ``__all__``."""
    module = importlib.import_module(module_name)
    exported = getattr(module, "__all__", None)
    names = []
    for name, value in vars(module).items():
        if name.startswith("_") or not (inspect.isclass(value) or inspect.isfunction(value)):
            continue
        if value.__module__ == module_name or (exported is not None and name in exported):
            names.append(name)
    return names


def test_each_public_module_has_its_page() -> None:
    documented = {}
    for block in blocks_in("{eval-rst}"):
        [module] = re.findall(r"automodule:: (\S+)", block.body)
        documented[module] = block.page.removesuffix(".md")
    assert documented == PUBLIC_MODULES


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_every_public_class_and_function_is_on_its_module_page(module_name: str, inventory: dict[str, str]) -> None:
    names = public_definitions(module_name)
    assert names, f"{module_name} defines no public class or function"
    missing = [name for name in names if inventory.get(f"{module_name}.{name}") != PUBLIC_MODULES[module_name]]
    assert missing == []


def test_the_names_the_index_promises_are_documented_where_it_says(inventory: dict[str, str]) -> None:
    # docs/api/index.md names each module's main classes: a class that moved out of its module
    # (and so off its page) fails here rather than vanishing from the reference.
    rows = re.findall(r"^\| \[`([\w.]+)`\]\((\w+)\.md\) \| (.+) \|$", (DOCS / "api/index.md").read_text(), re.M)
    assert len(rows) == len(PUBLIC_MODULES)
    for module_name, page, names in rows:
        assert PUBLIC_MODULES[module_name] == f"api/{page}"
        for name in re.findall(r"`(\w+)`", names):
            assert inventory.get(f"{module_name}.{name}") == f"api/{page}", (module_name, name)


def test_an_operator_entry_lists_its_docstring_parameters_with_their_types(html: Path) -> None:
    from bs4 import BeautifulSoup  # only here: the page's HTML

    page = BeautifulSoup((html / "api/operators.html").read_text(), "html.parser")
    entry = page.find(id="airflow_provider_zuora_aqua.operators.aqua.AquaSubmitJobOperator").parent
    fields = entry.find("dl", class_="field-list")
    parameters = [item.get_text(" ", strip=True) for item in fields.find_all("li")]
    assert any(text.startswith("queries (") for text in parameters), parameters
    assert any(text.startswith("poll_interval ( float )") for text in parameters), parameters
    assert "[source]" in entry.find("dt").get_text()  # viewcode: the source beside the signature
