"""The standard plugin tests (kloyst.testing.StandardPluginTests) run on the wallet plugin."""

from kloyst.testing import StandardPluginTests


class TestWalletStandard(StandardPluginTests):
    plugin = "wallet"
