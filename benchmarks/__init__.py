"""Benchmarks of the provider; each module is one command (see the README's "Benchmarks").

A package so that the fault soak runs as ``python -m benchmarks.soak`` and the tests import
``benchmarks.soak`` (pytest puts the project root on ``sys.path``).
"""
