"""
Print the constraints of the newest supported Airflow from a working, tested venv.

    .venv/bin/python .ci/constraints/freeze.py > .ci/constraints/airflow-3.3.2.txt

Every distribution that Airflow and this checkout's pyproject.toml (all extras) need, pinned to the
version installed in the venv that runs this script (the one .ci/run tests): what pip resolved
for them, proven by the suite. Nothing else that happens to be installed in the venv is pinned.
Needs Python 3.11+ (tomllib), as .venv has.
"""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, distribution, version
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "airflow-provider-zuora-aqua"
#: Left out as pip freeze leaves them out: pinning setuptools would fight pyproject's build requirement.
PACKAGING_TOOLS = ("pip", "setuptools", "wheel")


def _needed() -> dict[str, str]:
    """Canonical name -> installed name of every distribution pyproject.toml's requirements reach."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [
        *project["dependencies"],
        *(text for extra in project["optional-dependencies"].values() for text in extra),
    ]
    pending = [(Requirement(text), set()) for text in [f"apache-airflow=={version('apache-airflow')}", *wanted]]
    found: dict[str, str] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    while pending:
        requirement, active_extras = pending.pop()
        environment = [{"extra": extra} for extra in active_extras or {""}]
        if requirement.marker and not any(requirement.marker.evaluate(env) for env in environment):
            continue
        name = canonicalize_name(requirement.name)
        try:
            dist = distribution(requirement.name)
        except PackageNotFoundError:
            continue  # not for this Python or platform
        if (name, frozenset(requirement.extras)) in seen:
            continue
        seen.add((name, frozenset(requirement.extras)))
        found[name] = dist.metadata["Name"]
        for text in dist.requires or []:
            pending.append((Requirement(text), set(requirement.extras)))
    for name in (PROJECT, *PACKAGING_TOOLS):
        found.pop(canonicalize_name(name), None)
    return found


def main() -> None:
    airflow = version("apache-airflow")
    python = ".".join(map(str, sys.version_info[:2]))
    print("# Pins for the newest Airflow this provider supports, as CI tests it (.ci/bootstrap installs .venv")
    print("# with them); for users, beside Airflow's own constraints file or instead of it:")
    print(f'#   pip install "apache-airflow=={airflow}" . -c .ci/constraints/airflow-{airflow}.txt')
    print("#")
    print(f"# Made on Python {python} from the .venv the suite passed in, by .ci/constraints/freeze.py: every")
    print("# distribution that Airflow, the provider and all its extras need, at its installed version.")
    print()
    for name in sorted(_needed().values(), key=canonicalize_name):
        print(f"{name}=={version(name)}")


if __name__ == "__main__":
    main()
