"""The standard plugin tests (kloyst.testing.StandardPluginTests) run on the auto-replies plugin, and its hooks."""

from kloyst.events import ContactOptedIn, ContactOptedOut, MessageReceived, subscriptions
from kloyst.plugins import build_plugin_manager
from kloyst.testing import StandardPluginTests


class TestAutorepliesStandard(StandardPluginTests):
    plugin = "autoreplies"


def test_autoreplies_implements_exactly_its_hooks_and_hears_only_its_three_events():
    pm = build_plugin_manager()
    hooks = {caller.name for caller in pm.get_hookcallers(pm.get_plugin("autoreplies"))}
    assert hooks == {"kloyst_routes", "kloyst_event_types", "kloyst_vendor_event"}
    heard = {name for name, plugins in subscriptions(pm).by_name.items() if "autoreplies" in plugins}
    assert heard == {MessageReceived.name, ContactOptedOut.name, ContactOptedIn.name}
