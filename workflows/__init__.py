"""Temporal workflows. Deterministic code only: models, pure helpers and `temporalio.workflow`.

A unit test checks the imports of this package.
"""
