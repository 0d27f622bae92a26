"""Per-vendor plugin settings: the schema a plugin declares, who may write them, what survives a disable,
and what the plugin's code (a pricing rule, a merge strategy, a task) receives.

The example plugin declares ``ExampleSettings`` (``label``, ``discount_percent``) and keeps them
for platform admins (``vendor_editable=False``); tests that need a vendor-editable plugin switch
that flag on its metadata.
"""

from __future__ import annotations

import dataclasses
import uuid

import pytest
import transaction

from kloyst.accounts.models import Role
from kloyst.api import ContactFields, MergeStrategy, PluginSettings
from kloyst.plugins.enablement import TenantHooks
from kloyst.queue import TaskContext, TaskSpec

DEFAULTS = {"label": "", "discount_percent": 10}
BRAZIL_MARKETING = 62_500  # the development card's list rate, in micro-USD


def admin_url(vendor_id, plugin="example") -> str:
    return f"/v1/admin/vendors/{vendor_id}/plugins/{plugin}/settings"


@pytest.fixture
def admin(accounts, db):
    account = accounts.platform_admin()
    db.commit()
    return account


@pytest.fixture
def editable(registry, monkeypatch):
    """The example plugin, its settings made editable by vendors for the test."""
    pm = registry["kloyst.plugin_manager"]
    info = pm.infos["example"]
    monkeypatch.setitem(pm.infos, "example", dataclasses.replace(
        info, meta=dataclasses.replace(info.meta, vendor_editable=True)))


def put_settings(testapp, url, account, settings, status=200):
    return testapp.put_json(url, {"settings": settings}, headers=account.headers, status=status)


# -- the schema ---------------------------------------------------------------------------------

def test_a_vendor_that_never_set_them_gets_the_schemas_defaults(testapp, owner, admin):
    answer = testapp.get(admin_url(owner.vendor_id), headers=admin.headers).json

    assert answer["settings"] == DEFAULTS == answer["defaults"]
    assert answer["enabled"] is False and answer["editable_by_vendor"] is False
    assert set(answer["settings_schema"]["properties"]) == {"label", "discount_percent"}


def test_a_bad_value_is_a_422_naming_each_field(testapp, owner, admin):
    answer = put_settings(testapp, admin_url(owner.vendor_id), admin,
                          {"discount_percent": 99, "bogus": 1}, status=422).json["error"]

    assert answer["code"] == "validation_failed"
    assert {f["field"] for f in answer["details"]["fields"]} == {"settings.discount_percent", "settings.bogus"}
    wrong_type = put_settings(testapp, admin_url(owner.vendor_id), admin, {"discount_percent": "5"}, status=422)
    assert [f["field"] for f in wrong_type.json["error"]["details"]["fields"]] == ["settings.discount_percent"]
    assert testapp.get(admin_url(owner.vendor_id), headers=admin.headers).json["settings"] == DEFAULTS


def test_a_plugin_without_a_schema_or_an_unknown_vendor_is_404(testapp, owner, admin):
    testapp.get(admin_url(owner.vendor_id, "contacts"), headers=admin.headers, status=404)
    testapp.get(admin_url(uuid.uuid4()), headers=admin.headers, status=404)
    testapp.get(admin_url(owner.vendor_id, "nope"), headers=admin.headers, status=404)


def test_the_plugin_listing_says_which_plugins_have_settings(testapp, owner):
    items = {p["name"]: p for p in testapp.get("/v1/plugins", headers=owner.headers).json["items"]}

    assert (items["example"]["has_settings"], items["example"]["settings_editable"]) == (True, False)
    assert (items["contacts"]["has_settings"], items["contacts"]["settings_editable"]) == (False, False)


# -- who writes ---------------------------------------------------------------------------------

def test_a_platform_admin_writes_any_plugins_settings_fields_left_out_take_their_defaults(testapp, owner, admin):
    answer = put_settings(testapp, admin_url(owner.vendor_id), admin, {"label": "partner"}).json

    assert answer["settings"] == {"label": "partner", "discount_percent": 10}
    assert answer["enabled"] is False  # settings can be put in place before the vendor enables the plugin
    assert testapp.get(admin_url(owner.vendor_id), headers=admin.headers).json["settings"]["label"] == "partner"


def test_a_vendor_cannot_touch_the_settings_of_a_plugin_that_does_not_let_it(testapp, owner):
    for method in ("get", "put_json"):
        kwargs = {"params": {"settings": {"label": "me"}}} if method == "put_json" else {}
        answer = getattr(testapp, method)("/v1/plugins/example/settings", headers=owner.headers, status=403,
                                          **kwargs).json
        assert answer["error"]["code"] == "plugin_settings_not_editable"


def test_a_vendor_admin_writes_an_editable_plugins_settings_and_a_member_cannot(testapp, accounts, owner, admin,
                                                                                  editable):
    vendor_admin = accounts.user(owner.vendor, role=Role.ADMIN)
    member = accounts.user(owner.vendor, role=Role.MEMBER)

    answer = put_settings(testapp, "/v1/plugins/example/settings", vendor_admin, {"discount_percent": 5}).json
    assert answer["settings"] == {"label": "", "discount_percent": 5} and answer["editable_by_vendor"] is True

    put_settings(testapp, "/v1/plugins/example/settings", member, {"discount_percent": 6}, status=403)
    testapp.get("/v1/plugins/example/settings", headers=member.headers, status=403)
    put_settings(testapp, "/v1/plugins/example/settings", owner, {"discount_percent": 51}, status=422)
    assert testapp.get(admin_url(owner.vendor_id), headers=admin.headers).json["settings"]["discount_percent"] == 5


def test_a_vendor_reads_and_writes_only_its_own_settings(testapp, accounts, admin, editable):
    alice, bob = accounts.vendor("Alice"), accounts.vendor("Bob")

    put_settings(testapp, "/v1/plugins/example/settings", alice, {"label": "alice"})

    assert testapp.get("/v1/plugins/example/settings", headers=bob.headers).json["settings"] == DEFAULTS
    assert testapp.get("/v1/plugins/example/settings", headers=alice.headers).json["settings"]["label"] == "alice"
    # The admin routes name a vendor; a vendor calling them is refused whichever vendor it names.
    testapp.get(admin_url(alice.vendor_id), headers=bob.headers, status=403)
    put_settings(testapp, admin_url(alice.vendor_id), bob, {"label": "bob"}, status=403)
    put_settings(testapp, admin_url(bob.vendor_id), bob, {"label": "bob"}, status=403)
    assert testapp.get(admin_url(alice.vendor_id), headers=admin.headers).json["settings"]["label"] == "alice"
    assert testapp.get(admin_url(bob.vendor_id), headers=admin.headers).json["settings"] == DEFAULTS


# -- disable, re-enable, purge ------------------------------------------------------------------

def test_disabling_keeps_the_settings_re_enabling_restores_them_and_purge_deletes_them(testapp, owner, admin):
    testapp.put("/v1/plugins/example", headers=owner.headers, status=200)
    put_settings(testapp, admin_url(owner.vendor_id), admin, {"label": "partner", "discount_percent": 20})

    assert testapp.delete("/v1/plugins/example", headers=owner.headers).json["changed"] is True
    kept = testapp.get(admin_url(owner.vendor_id), headers=admin.headers).json
    assert kept["enabled"] is False and kept["settings"] == {"label": "partner", "discount_percent": 20}

    again = testapp.put("/v1/plugins/example", headers=owner.headers).json
    assert again["changed"] is True and again["plugin"]["enabled"] is True
    assert testapp.get(admin_url(owner.vendor_id), headers=admin.headers).json["settings"]["label"] == "partner"

    assert testapp.delete("/v1/plugins/example?purge=true", headers=owner.headers).json["changed"] is True
    purged = testapp.get(admin_url(owner.vendor_id), headers=admin.headers).json
    assert purged["enabled"] is False and purged["settings"] == DEFAULTS
    testapp.delete("/v1/plugins/example?purge=maybe", headers=owner.headers, status=422)


def test_a_disabled_plugin_keeps_its_row_but_its_routes_are_404_and_its_tasks_skipped(testapp, db, registry, owner,
                                                                                   admin, monkeypatch):
    testapp.put("/v1/plugins/example", headers=owner.headers, status=200)
    put_settings(testapp, admin_url(owner.vendor_id), admin, {"label": "partner"})
    testapp.get("/v1/example/hello", headers=owner.headers, status=200)
    ran = []
    queue = registry["kloyst.queue"]
    monkeypatch.setitem(queue.tasks, "example.ping_note", ("example", TaskSpec(
        "example.ping_note", lambda ctx, **kwargs: ran.append(ctx.plugin_settings()) or "ran")))

    def run() -> object:
        ctx = TaskContext(registry, db, transaction.TransactionManager(explicit=True), owner.vendor_id)
        return queue.run_task(ctx, "example.ping_note", {"vendor_id": owner.vendor_id, "note_id": uuid.uuid4()})

    assert run() == "ran"
    testapp.delete("/v1/plugins/example", headers=owner.headers, status=200)

    testapp.get("/v1/example/hello", headers=owner.headers, status=404)
    assert "example" not in {p["name"] for p in testapp.get("/v1/plugins", headers=owner.headers).json["items"]
                             if p["enabled"]}
    assert run() is None and len(ran) == 1


# -- what the plugin's code receives ------------------------------------------------------------

def test_a_task_gets_its_plugins_ini_and_vendor_settings(db, registry, testapp, owner, admin, monkeypatch):
    testapp.put("/v1/plugins/example", headers=owner.headers, status=200)
    put_settings(testapp, admin_url(owner.vendor_id), admin, {"label": "partner"})
    seen = []
    queue = registry["kloyst.queue"]
    monkeypatch.setitem(queue.tasks, "example.ping_note", ("example", TaskSpec(
        "example.ping_note", lambda ctx, **kwargs: seen.append((ctx.plugin, ctx.plugin_settings())))))

    ctx = TaskContext(registry, db, transaction.TransactionManager(explicit=True), owner.vendor_id)
    queue.run_task(ctx, "example.ping_note", {"vendor_id": owner.vendor_id, "note_id": uuid.uuid4()})

    (plugin, settings), = seen
    assert plugin == "example"
    assert settings == PluginSettings(plugin="example", ini={"greeting": registry.settings["example.greeting"]},
                                      vendor={"label": "partner", "discount_percent": 10})
    assert ctx.tenant_hooks.enabled >= {"core", "example"}
    assert ctx.tenant_hooks.settings_of("example") == settings


@pytest.fixture
def priced_vendor(db, accounts, enable_plugin):
    from kloyst_plugins.pricing import snapshots

    snapshots.load_development_card(db)
    account = accounts.vendor("Partner")
    for plugin in ("contacts", "wallet", "pricing", "example"):
        enable_plugin(account, plugin)
    return account


def test_a_pricing_rule_gets_its_plugins_settings(db, registry, testapp, admin, priced_vendor):
    from kloyst_plugins.pricing.services import QuotationService

    def unit_price() -> int:
        service = QuotationService(db, vendor_id=priced_vendor.vendor_id, registry=registry,
                                   enqueue=lambda name, **kw: None)
        return service.price({"BR": 10}, "MARKETING").lines[0][1]

    assert unit_price() == BRAZIL_MARKETING  # no label: the default settings give no discount
    put_settings(testapp, admin_url(priced_vendor.vendor_id), admin, {"label": "partner", "discount_percent": 20})

    assert unit_price() == BRAZIL_MARKETING * 8 // 10


def test_a_merge_strategy_that_takes_settings_gets_its_plugins(db, registry, testapp, admin, priced_vendor,
                                                               monkeypatch):
    import kloyst_example.plugin
    from kloyst_plugins.imports.processing import merged, strategy_for

    def label_from_settings(existing, incoming, settings):
        return dataclasses.replace(existing, labels=(*existing.labels, settings.vendor["label"]))

    monkeypatch.setattr(kloyst_example.plugin, "keep_longer_name", label_from_settings)
    put_settings(testapp, admin_url(priced_vendor.vendor_id), admin, {"label": "partner"})
    hooks = TenantHooks.for_vendor(db, registry["kloyst.plugin_manager"], priced_vendor.vendor_id, registry.settings)

    strategy = strategy_for(hooks, "KEEP_LONGER_NAME")

    assert merged(strategy, ContactFields(name="A"), [ContactFields(name="B")]).labels == ("partner",)
    assert strategy_for(hooks, "MERGE_LABELS").takes_settings is False  # the two-argument form is unchanged
    assert strategy_for(hooks, "NO_SUCH") is None


def test_a_strategys_form_is_read_once_when_it_is_made():
    settings = PluginSettings(plugin="p", vendor={"x": 1})

    def two(existing, incoming):
        return incoming

    def three(existing, incoming, options):
        return dataclasses.replace(incoming, attributes=dict(options.vendor))

    def keyword(existing, incoming, *, settings):
        return dataclasses.replace(incoming, attributes={"kw": settings.vendor["x"]})

    row = ContactFields(name="n")
    assert MergeStrategy("TWO", "", two).with_settings(settings).merge(row, row) is row
    assert MergeStrategy("THREE", "", three).with_settings(settings).merge(row, row).attributes == {"x": 1}
    bound = MergeStrategy("KW", "", keyword, reads_name=True).with_settings(settings)
    assert bound.merge(row, row).attributes == {"kw": 1} and bound.reads_name and not bound.takes_settings


def test_a_settings_schema_must_be_a_model_whose_every_field_has_a_default():
    from pydantic import BaseModel

    from kloyst.config import ConfigurationError
    from kloyst.plugins.manager import PluginMeta, check_vendor_settings

    class NoDefault(BaseModel):
        label: str

    with pytest.raises(ConfigurationError, match="label has none"):
        check_vendor_settings("p", PluginMeta(vendor_settings=NoDefault))
    with pytest.raises(ConfigurationError, match="pydantic model"):
        check_vendor_settings("p", PluginMeta(vendor_settings=dict))
    with pytest.raises(ConfigurationError, match="needs a vendor_settings"):
        check_vendor_settings("p", PluginMeta(vendor_editable=True))
