"""
Helpers for testing DAGs that use this provider, without Zuora.

:mod:`~airflow_provider_zuora_aqua.testing.airflow_env` runs real Airflow processes in a
throwaway home; pair it with :class:`~airflow_provider_zuora_aqua.simulator.AquaSimulator`.
Standard library only: nothing here is imported by the operators, hooks or triggers.
"""
