"""Kloyst's own tests use the fixtures every plugin author gets (kloyst.testing.pytest_plugin).

The test-only ``probe`` plugin is registered in the repository's root ``conftest.py``.
"""
