"""Sphinx configuration of the provider's docs (MyST markdown; built by .ci/docs with -W)."""

from __future__ import annotations

from importlib.metadata import version as _version

project = "airflow-provider-zuora-aqua"
author = "airflow-provider-zuora-aqua contributors"
copyright = "2026, " + author
release = _version("airflow-provider-zuora-aqua")
version = release

extensions = ["myst_parser"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]
# Section links such as [Testing a connection](connection.md#testing-a-connection).
myst_heading_anchors = 3
html_theme = "alabaster"
html_title = f"{project} {release}"
