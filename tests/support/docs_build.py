"""Build the docs/ tree as ``.ci/docs`` does (its own sphinx arguments), into a folder of the caller's."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CI_DOCS = ROOT / ".ci" / "docs"
#: Where .ci/docs writes the HTML; a test build writes to its own folder instead.
CI_OUTPUT = "docs/_build/html"


def sphinx_arguments() -> list[str]:
    """The arguments ``.ci/docs`` gives ``python -m sphinx`` (``-W --keep-going -b html docs <out>``)."""
    [line] = [line for line in CI_DOCS.read_text().splitlines() if " -m sphinx " in line]
    words = shlex.split(line)
    return words[words.index("sphinx") + 1 :]


def build_docs(out: Path) -> Path:
    """Build the HTML into ``out`` with this interpreter, as CI does; fail with Sphinx's output."""
    arguments = [str(out) if word == CI_OUTPUT else word for word in sphinx_arguments()]
    assert str(out) in arguments and "-W" in arguments, arguments
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", *arguments], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    return out
