"""Kloyst's own tests use the fixtures every plugin author gets (kloyst.testing.pytest_plugin)."""
