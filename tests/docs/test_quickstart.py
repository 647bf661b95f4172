"""
The Quick start page followed as a newcomer follows it: its bash blocks in order, in one bash
session, from the root of a copy of the clone, with a home folder of its own.

One thing stands in for the real world: installing Airflow's ~270 distributions into the fresh
virtualenv would take minutes, so the test makes ``~/airflow-venv`` beforehand and lets it see
this interpreter's site-packages (where the same pins are installed: .ci/bootstrap uses the
constraints file the page names). The page's ``python3 -m venv`` and ``pip install`` then run as
written: pip resolves the page's requirements against the project's constraints, builds the
provider from the copy and installs it into ``~/airflow-venv``, and every later command uses it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from airflow_provider_zuora_aqua.testing.airflow_env import free_port
from tests.docs.blocks import DOCS, DOCS_SIMULATOR_PORT, ROOT, page_blocks, run_bash

pytestmark = [pytest.mark.airflow_e2e, pytest.mark.timeout(900)]

PAGE = DOCS / "quickstart.md"
VENV = "airflow-venv"  # the page's ~/airflow-venv


def session_script() -> str:
    """The page's bash blocks, in order, as one script; a failing command stops it."""
    blocks = [block.body for block in page_blocks(PAGE) if block.language == "bash"]
    return "set -e -o pipefail\n" + "\n".join(blocks)


def copy_of_the_clone(target: Path) -> Path:
    """The files a clone holds (tracked, and new ones not ignored), as they are in this checkout."""
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def prepared_venv(home: Path) -> Path:
    """``~/airflow-venv``, seeing this interpreter's installed distributions, with an ``airflow`` command."""
    venv = home / VENV
    subprocess.run([sys._base_executable, "-m", "venv", str(venv)], check=True, timeout=120)  # type: ignore[attr-defined]
    [site_packages] = (venv / "lib").glob("python3*/site-packages")
    ours = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    # A plain path line: the directory joins sys.path after the venv's own site-packages, and the
    # editable install of this checkout that it holds (a .pth finder) stays out.
    (site_packages / "zz-quickstart-preinstalled.pth").write_text("".join(f"{path}\n" for path in ours))
    airflow = venv / "bin" / "airflow"
    airflow.write_text('#!/bin/sh\nexec "$(dirname "$0")/python" -m airflow "$@"\n')
    airflow.chmod(0o755)
    return venv


def test_the_page_promises_what_this_test_checks() -> None:
    script = session_script()
    assert 'pip install "apache-airflow==3.3.2" . -c .ci/constraints/airflow-3.3.2.txt' in script
    assert (ROOT / ".ci/constraints/airflow-3.3.2.txt").is_file()
    assert f"python3 -m venv ~/{VENV}" in script and f"source ~/{VENV}/bin/activate" in script
    assert "airflow dags test example_zuora_aqua_results" in script
    assert script.count("# Connection success!") == 1
    # The page shows its DAG from example_dags/, not a copy.
    assert not [block for block in page_blocks(PAGE) if block.language == "python"]


def test_the_quickstart_runs_in_one_shell_as_written(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    clone = copy_of_the_clone(tmp_path / "clone")
    venv = prepared_venv(home)
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AIRFLOW", "ZUORA_", "VIRTUAL_ENV", "PYTHON"))
    }
    env["HOME"] = str(home)
    script = session_script().replace(str(DOCS_SIMULATOR_PORT), str(free_port()))

    returncode, output = run_bash(script, env, clone, timeout=600)

    assert returncode == 0, output[-6000:]
    assert output.count("Connection success!") == 1, output[-6000:]
    assert "state=success" in output, output[-6000:]
    # pip built the provider from the clone and installed it into the page's virtualenv.
    installed = list(venv.glob("lib/python3*/site-packages/airflow_provider_zuora_aqua-*.dist-info"))
    assert installed, output[-6000:]
    assert "editable" not in (installed[0] / "direct_url.json").read_text()
    # The DAG ran in the page's Airflow home, and its files are where the page looks for them.
    assert (home / "airflow" / "airflow.db").is_file()
    manifests = sorted((home / "zuora-exports").glob("*/*/_manifest.json"))
    assert [path.parent.name for path in manifests] == ["accounts", "invoices"], output[-6000:]
    for path in manifests:
        manifest = json.loads(path.read_text())
        assert manifest["files"], manifest
        for entry in manifest["files"]:
            data = Path(entry["uri"].removeprefix("file://"))
            assert data.parent == path.parent and data.stat().st_size == entry["bytes"] > 0
            assert hashlib.sha256(data.read_bytes()).hexdigest() == entry["sha256"]
            assert str(data) in output  # listed by the page's find
    accounts = json.loads(manifests[0].read_text())
    assert re.search(rf'"job_id":\s*"{re.escape(accounts["job_id"])}"', output)  # shown by the page's cat
