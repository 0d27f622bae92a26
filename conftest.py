"""Registers Kloyst's test-only probe plugin for the whole run (tests/ and examples/ alike).

It lives at the root because the application is built once per session: whichever test
builds it first, from either folder, must build it with the same plugins.
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "tests"))


@pytest.fixture(scope="session")
def kloyst_extra_plugins():
    import probe_plugin

    return [("probe", probe_plugin)]
