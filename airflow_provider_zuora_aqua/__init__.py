"""Apache Airflow provider for Zuora AQuA (Aggregate Query API)."""

from __future__ import annotations

__version__ = "0.1.0"
