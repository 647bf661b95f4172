"""Code blocks of the README, for tests that run them as a user would copy them."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).parent.parent / "README.md"
_BLOCK = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
#: The port the README's simulator examples use; tests swap in a free one.
README_SIMULATOR_PORT = 8082


def section(title: str) -> str:
    """The text of the README section headed ``## <title>``, up to the next ``## `` heading."""
    text = README.read_text()
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert match, f"README has no section '## {title}'"
    return match.group(1)


def code_blocks(title: str, language: str) -> list[str]:
    """
    The fenced code blocks of one README section, verbatim.

    :param title: the ``## `` heading of the section.
    :param language: the fence's info string, e.g. ``python`` or ``bash``.
    """
    return [body for lang, body in _BLOCK.findall(section(title)) if lang == language]


def connection_lines_of(block: str) -> list[str]:
    """The values of every ``export AIRFLOW_CONN_ZUORA_AQUA_DEFAULT='...'`` line of a block."""
    return re.findall(r"^export AIRFLOW_CONN_ZUORA_AQUA_DEFAULT='(.*)'$", block, re.MULTILINE)


def connection_lines(title: str) -> list[str]:
    """The values of every ``export AIRFLOW_CONN_ZUORA_AQUA_DEFAULT='...'`` line of a section's bash blocks."""
    return [value for block in code_blocks(title, "bash") for value in connection_lines_of(block)]
