"""The fenced blocks of the docs/ pages, and how tests run them as a user would copy them."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
EXAMPLE_DAGS = ROOT / "example_dags"
#: Languages whose blocks claim to be runnable: every one of them is run by tests/docs.
RUNNABLE = ("python", "bash")
#: Blocks that show text (output, a layout), not code to run.
NON_CODE = ("text",)
#: MyST directives the pages use; a literalinclude's file is run by its own test, and an eval-rst
#: block holds nothing but the ``automodule`` of an API reference page (test_doc_blocks checks it).
DIRECTIVES = ("{toctree}", "{literalinclude}", "{include}", "{eval-rst}")
#: Pages a reader follows in one shell, each block building on the last: tests/docs/test_quickstart.py
#: runs such a page's blocks in order in one bash session, not each on its own.
SESSION_PAGES = ("quickstart.md",)
#: The port the docs' simulator examples use; tests swap in a free one.
DOCS_SIMULATOR_PORT = 8082
#: A command that starts the simulator (in the foreground, or in the background with ``&``).
SIMULATOR_COMMAND = "python -m airflow_provider_zuora_aqua.simulator"
#: Parses a command's arguments with the script's own parser, then exits 0 without running it.
PARSE_ONLY = Path(__file__).with_name("parse_only.py")
#: The bucket and connection the docs' object-storage DAG writes to.
S3_BUCKET = "exports"
S3_CONN_ENV = "AIRFLOW_CONN_AWS_EXPORTS"

_FENCE = re.compile(r"^(?P<fence>`{3,})(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=fence)[ \t]*$", re.MULTILINE | re.DOTALL)
_DAG_ID = re.compile(r"""DAG\(\s*(?:dag_id=)?["']([^"']+)["']""")


@dataclass(frozen=True)
class Block:
    """One fenced block of a docs page."""

    page: str
    line: int
    info: str
    body: str

    @property
    def language(self) -> str:
        return self.info.split()[0] if self.info.strip() else ""

    @property
    def argument(self) -> str:
        """What follows a directive's name, e.g. the file of a literalinclude."""
        parts = self.info.split(maxsplit=1)
        return parts[1].strip() if len(parts) > 1 else ""

    @property
    def options(self) -> dict[str, str]:
        """A directive's options, e.g. ``{"start-after": "[START ...]"}`` (quotes around a value dropped)."""
        found = {}
        for line in self.body.splitlines():
            match = re.fullmatch(r":([\w-]+):\s*(.*)", line.strip())
            if match:
                found[match[1]] = match[2].strip().strip('"')
        return found

    def __str__(self) -> str:
        return f"{self.page}:{self.line}"


def pages() -> list[Path]:
    """Every markdown page of docs/, build output excluded."""
    return sorted(path for path in DOCS.rglob("*.md") if "_build" not in path.relative_to(DOCS).parts)


def page_blocks(path: Path) -> list[Block]:
    text = path.read_text()
    return [
        Block(str(path.relative_to(DOCS)), text.count("\n", 0, match.start()) + 1, match["info"], match["body"])
        for match in _FENCE.finditer(text)
    ]


def all_blocks() -> list[Block]:
    return [block for path in pages() for block in page_blocks(path)]


def blocks_in(language: str) -> list[Block]:
    return [block for block in all_blocks() if block.language == language]


def standalone_blocks(language: str) -> list[Block]:
    """The blocks run each on its own: those of a page run as one shell session are left out."""
    return [block for block in blocks_in(language) if block.page not in SESSION_PAGES]


def included_file(block: Block) -> Path:
    """The file a ``literalinclude`` block includes."""
    return (DOCS / block.page).parent.joinpath(block.argument).resolve()


def included_example_dags() -> list[Path]:
    """The example DAG files the pages include with ``literalinclude`` (each once)."""
    return list(dict.fromkeys(included_file(block) for block in blocks_in("{literalinclude}")))


def dag_id(source: str) -> str:
    """The id of the DAG a python block defines (``DAG("id", ...)`` or ``DAG(dag_id="id", ...)``)."""
    match = _DAG_ID.search(source)
    assert match, "a DAG block must name its DAG"
    return match.group(1)


def command_lines(script: str) -> list[str]:
    """The commands of a bash block: continuation lines joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", script)
    commands = []
    for line in joined.splitlines():
        line = line.split(" #")[0].strip()
        if line and not line.startswith("#"):
            commands.append(line)
    return commands


def with_bin_path(env: dict[str, str]) -> dict[str, str]:
    """``env`` with this interpreter's bin folder first on PATH: ``python`` and ``airflow`` are ours."""
    return {**env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', os.environ.get('PATH', ''))}"}


def run_bash(script: str, env: dict[str, str], cwd: Path, timeout: float = 240) -> tuple[int, str]:
    """
    Run ``script`` with bash in its own session; return its exit status and output.

    Processes it started in the background (``&``) are stopped with its session afterwards.
    """
    out = cwd / "bash-block.out"
    with open(out, "wb") as sink:
        process = subprocess.Popen(
            ["bash", "-c", script],
            env=env,
            cwd=cwd,
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            returncode = process.wait(timeout)
        finally:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            process.wait(10)
    return returncode, out.read_text(errors="replace")


def s3_client(endpoint: str) -> Any:
    import boto3  # only where S3 is used

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )


def s3_connection(endpoint: str) -> str:
    """The ``aws`` connection the docs' object-storage DAG names, pointing at moto."""
    return json.dumps(
        {
            "conn_type": "aws",
            "login": "testing",
            "password": "testing",
            "extra": {"endpoint_url": endpoint, "region_name": "us-east-1"},
        }
    )
