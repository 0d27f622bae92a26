"""The standard plugin tests (kloyst.testing.StandardPluginTests) run on the pricing plugin."""

from kloyst.testing import StandardPluginTests


class TestPricingStandard(StandardPluginTests):
    plugin = "pricing"
