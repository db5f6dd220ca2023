"""Helpers for tests of this product (they import ``hpo``); the generic
infrastructure is in ``tests/support`` and fixtures are in ``conftest.py`` files."""
