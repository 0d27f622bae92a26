"""Kloyst's own tests use the fixtures every plugin author gets (kloyst.testing.pytest_plugin)."""

import pytest


@pytest.fixture(scope="session")
def kloyst_extra_plugins():
    import probe_plugin

    return [("probe", probe_plugin)]
