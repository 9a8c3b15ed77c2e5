"""Tests of trl_integration (a package, so that its conftest never shadows tests/conftest.py)."""
