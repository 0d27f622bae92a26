"""The domain event catalogue (kloyst.events): exact JSON round trips, subscriptions, docs/events.md in step,
and plugins that declare hooks of their own (kloyst_addhooks)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import sys
import types
import typing
import uuid
from pathlib import Path

import pluggy
import pytest

from kloyst import events
from kloyst.config import ConfigurationError
from kloyst.plugins import build_plugin_manager, hookimpl

DOCS = Path(__file__).resolve().parents[2] / "docs" / "events.md"
CORE_TYPES = [events.CATALOGUE[name] for name in sorted(events.CATALOGUE)
              if events.CATALOGUE[name].__module__ == "kloyst.events"]


def plugin_module(name: str, **hooks) -> types.ModuleType:
    module = types.ModuleType(name)
    for hook_name, func in hooks.items():
        setattr(module, hook_name, hookimpl(func))
    return module


def sample(kind, seed: int):
    """A value of ``kind`` unlike the defaults, so a field that does not survive the trip shows."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return sample(next(k for k in typing.get_args(kind) if k is not type(None)), seed)
    if typing.get_origin(kind) is tuple:
        return (f"f{seed}", "é ü")
    return {uuid.UUID: uuid.UUID(int=2 ** 120 + seed), int: 2 ** 53 + seed, str: f"s{seed} ☃ \"q\"", bool: True,
            dt.datetime: dt.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=dt.timezone.utc)}[kind]


def full(cls) -> events.Event:
    hints = typing.get_type_hints(cls)
    return cls(**{f.name: sample(hints[f.name], i) for i, f in enumerate(dataclasses.fields(cls))})


def nulls(cls) -> events.Event:
    """Every optional field None."""
    hints = typing.get_type_hints(cls)
    return cls(**{f.name: None if type(None) in typing.get_args(hints[f.name]) else sample(hints[f.name], i)
                  for i, f in enumerate(dataclasses.fields(cls))})


def test_the_catalogue_has_every_type_the_brief_names_with_stable_fields():
    fields = {cls.name: [f.name for f in dataclasses.fields(cls)] for cls in CORE_TYPES}
    assert fields["ImportCompleted"] == ["import_id", "created", "updated", "skipped", "failed"]
    assert fields["ImportFailed"] == ["import_id", "reason"]
    assert fields["CampaignLaunched"] == ["campaign_id", "recipients"]
    assert fields["CampaignCompleted"] == ["campaign_id", "sent", "delivered", "read", "failed"]
    assert fields["CampaignCancelled"] == ["campaign_id"]
    assert fields["MessageStatusChanged"] == ["message_id", "campaign_id", "old_status", "new_status", "wamid"]
    assert fields["WalletLowBalance"] == ["wallet_id", "balance_micros", "threshold_micros", "currency"]
    assert fields["QuotationReady"] == ["quotation_id", "total_micros", "currency"]
    for name in ("ContactCreated", "ContactUpdated", "ContactOptedOut", "UserInvited", "PluginEnabled"):
        assert name in fields
    assert set(fields) >= events.LEGACY_EVENTS


@pytest.mark.parametrize("cls", CORE_TYPES, ids=lambda c: c.name)
def test_every_event_type_round_trips_exactly_through_json(cls):
    for event in (full(cls), nulls(cls)):
        payload = json.loads(json.dumps(event.to_payload()))
        back = cls.from_payload(payload)
        assert back == event and type(back) is cls
        assert {k: type(v) for k, v in dataclasses.asdict(back).items()} == \
            {k: type(v) for k, v in dataclasses.asdict(event).items()}
    assert cls.name == cls.__name__ and events.CATALOGUE[cls.name] is cls
    assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen


def test_the_payload_is_plain_json_as_handlers_read_it_before_the_catalogue():
    user = uuid.uuid4()
    assert events.UserInvited(user_id=user, role="admin").to_payload() == {"user_id": str(user), "role": "admin"}
    updated = events.ContactUpdated(contact_id=user, source="api", changed=("labels", "name"))
    assert updated.to_payload()["changed"] == ["labels", "name"]


@pytest.mark.parametrize("payload", [
    {"import_id": "not-a-uuid", "created": 1, "updated": 0, "skipped": 0, "failed": 0},
    {"import_id": str(uuid.uuid4()), "created": "1", "updated": 0, "skipped": 0, "failed": 0},
    {"import_id": str(uuid.uuid4()), "created": True, "updated": 0, "skipped": 0, "failed": 0},
    {"import_id": str(uuid.uuid4()), "created": 1, "updated": 0, "skipped": 0},
])
def test_a_payload_that_does_not_fit_the_type_is_refused(payload):
    with pytest.raises((ValueError, TypeError)):
        events.ImportCompleted.from_payload(payload)


def test_keys_a_newer_writer_added_are_ignored():
    event = events.CampaignCancelled(campaign_id=uuid.uuid4())
    assert events.CampaignCancelled.from_payload({**event.to_payload(), "later_field": 1}) == event


def test_two_event_types_cannot_share_a_name():
    with pytest.raises(TypeError, match="two event types are named 'ImportCompleted'"):
        type("ImportCompleted", (events.Event,), {"__module__": "somewhere_else"})


def test_docs_events_md_lists_every_type_with_exactly_its_fields():
    text = DOCS.read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `(\w+)` \| [^|]*(?:\\\|[^|]*)*\| (.*) \|$", text, re.MULTILINE))
    documented = {name: re.findall(r"`(\w+): [^`]+`", cells) for name, cells in rows.items()
                  if name in events.CATALOGUE}
    assert sorted(documented) == sorted(cls.name for cls in CORE_TYPES)
    for cls in CORE_TYPES:
        hints = typing.get_type_hints(cls)
        assert documented[cls.name] == [f.name for f in dataclasses.fields(cls)], cls.name
        for f in dataclasses.fields(cls):
            shown = re.search(rf"`{f.name}: ([^`]+)`", rows[cls.name]).group(1).replace("\\|", "|")
            spelled = str(hints[f.name]).replace("uuid.UUID", "UUID").replace("typing.", "")
            assert shown == (hints[f.name].__name__ if isinstance(hints[f.name], type) else spelled), \
                (cls.name, f.name)


# --- subscriptions -----------------------------------------------------------------------------------------------

class EnabledPlugins:
    """A stand-in for the outbox's session: its one query (the vendor's enabled plugins) answers ``names``."""

    def __init__(self, names) -> None:
        self.names = list(names)
        self.queries = 0

    def scalars(self, statement):
        self.queries += 1
        return iter(self.names)


class RecordingOutbox:
    """An Outbox stand-in that records what would be inserted (one call = one multi-row INSERT).

    Every installed plugin counts as enabled for the vendor unless ``enabled`` names them.
    """

    def __init__(self, pm, enabled=None) -> None:
        self.plugin_manager = pm
        self.connection = EnabledPlugins(pm.infos.keys() if enabled is None and pm is not None else enabled or ())
        self.inserts: list[list[dict]] = []

    def add_many(self, topic, payloads, *, vendor_id=None):
        assert topic == events.TOPIC
        self.inserts.append(list(payloads))
        return len(payloads)


def manager(**plugins):
    pm = build_plugin_manager([(name, plugin_module(f"kloyst_test_ev_{name}", **hooks))
                               for name, hooks in plugins.items()])
    # The installed vendor_webhooks plugin subscribes to every catalogued type; these tests are about the others.
    if pm.has_plugin("vendor_webhooks"):
        pm.unregister(name="vendor_webhooks")
    return pm


def listen(*types_):
    return {"kloyst_vendor_event": lambda event, ctx: None, "kloyst_event_types": lambda: list(types_)}


def test_a_plugin_declares_types_by_class_or_name_and_event_means_all():
    pm = manager(imports_only=listen(events.ImportCompleted), by_name=listen("QuotationReady"),
                 everything=listen(events.Event))
    subs = events.subscriptions(pm)
    ours = {"imports_only", "by_name", "everything"}  # installed plugins (the example) may subscribe too
    assert subs.plugins_for("ImportCompleted") & ours == {"imports_only", "everything"}
    assert subs.plugins_for("QuotationReady") & ours == {"by_name", "everything"}
    assert subs.plugins_for("MessageStatusChanged") & ours == {"everything"}


def test_a_listener_without_a_declaration_gets_the_legacy_types_only():
    pm = manager(old=dict(kloyst_vendor_event=lambda event, ctx: None))
    subs = events.subscriptions(pm)
    assert all("old" in subs.plugins_for(name) for name in events.LEGACY_EVENTS)
    assert "old" not in subs.plugins_for("MessageStatusChanged")
    assert "old" not in subs.plugins_for("ImportCompleted")


def test_recording_an_event_nobody_subscribes_to_writes_nothing():
    pm = manager(imports_only=listen(events.ImportCompleted))
    outbox = RecordingOutbox(pm)
    vendor = uuid.uuid4()
    statuses = [events.MessageStatusChanged(message_id=uuid.uuid4(), campaign_id=None, old_status="sent",
                                            new_status="delivered", wamid="wamid.1") for _ in range(1000)]
    assert events.record_events(outbox, vendor, statuses) == 0
    events.record_event(outbox, vendor, statuses[0])
    assert outbox.inserts == []
    assert not events.is_subscribed(outbox, events.MessageStatusChanged)


def test_an_event_is_written_only_when_a_plugin_the_vendor_enabled_subscribes_to_it():
    pm = manager(imports_only=listen(events.ImportCompleted))
    done = events.ImportCompleted(import_id=uuid.uuid4(), created=1, updated=0, skipped=0, failed=0)
    elsewhere = RecordingOutbox(pm, enabled=[])  # installed, but this vendor has not turned it on
    assert events.record_events(elsewhere, uuid.uuid4(), [done]) == 0
    assert elsewhere.inserts == [] and elsewhere.connection.queries == 1
    here = RecordingOutbox(pm, enabled=["imports_only"])
    assert events.record_events(here, uuid.uuid4(), [done]) == 1


def test_events_no_installed_plugin_wants_cost_no_look_up():
    pm = manager(imports_only=listen(events.ImportCompleted))
    outbox = RecordingOutbox(pm)
    events.record_events(outbox, uuid.uuid4(), [events.CampaignCancelled(campaign_id=uuid.uuid4())])
    assert outbox.connection.queries == 0 and outbox.inserts == []


def test_record_events_writes_the_subscribed_ones_in_one_insert():
    pm = manager(imports_only=listen(events.ImportCompleted))
    outbox = RecordingOutbox(pm)
    done = [events.ImportCompleted(import_id=uuid.uuid4(), created=i, updated=0, skipped=0, failed=0)
            for i in range(3)]
    cancelled = events.CampaignCancelled(campaign_id=uuid.uuid4())
    assert events.record_events(outbox, uuid.uuid4(), [done[0], cancelled, done[1], done[2]]) == 3
    assert outbox.inserts == [[{"name": "ImportCompleted", "payload": e.to_payload()} for e in done]]


def test_an_outbox_that_cannot_tell_its_plugins_writes_every_event():
    outbox = RecordingOutbox(None)
    events.record_event(outbox, uuid.uuid4(), events.CampaignCancelled(campaign_id=uuid.uuid4()))
    assert len(outbox.inserts) == 1


def test_the_older_record_spelling_goes_through_the_catalogue():
    pm = manager(old=dict(kloyst_vendor_event=lambda event, ctx: None))
    outbox = RecordingOutbox(pm)
    user = uuid.uuid4()
    events.record(outbox, uuid.uuid4(), "UserInvited", user_id=str(user), role="agent")
    events.record(outbox, uuid.uuid4(), "SomethingNobodyDeclared", x=1)
    assert outbox.inserts == [[{"name": "UserInvited", "payload": {"user_id": str(user), "role": "agent"}}]]


def test_only_catalogued_events_are_recorded():
    with pytest.raises(TypeError):
        events.record_event(RecordingOutbox(None), uuid.uuid4(), {"name": "X"})


# --- kloyst_addhooks -------------------------------------------------------------------------------------------

hookspec = pluggy.HookspecMarker("kloyst")


class LoyaltySpecs:
    @hookspec
    def kloyst_loyalty_points(self, contact_id, amount_micros):
        """Points a purchase earns."""


def offers_hooks():
    return plugin_module("kloyst_test_offers", kloyst_addhooks=lambda pluginmanager: pluginmanager.add_hookspecs(
        LoyaltySpecs))


def implements(name, func):
    return plugin_module(f"kloyst_test_{name}", kloyst_loyalty_points=func)


@pytest.mark.parametrize("offer_first", [True, False])
def test_a_plugin_offers_a_hook_that_plugins_loaded_before_or_after_it_implement(offer_first):
    before = ("before", implements("before", lambda contact_id, amount_micros: amount_micros // 100))
    after = ("after", implements("after", lambda contact_id: 7))
    offered = ("offers", offers_hooks())
    pm = build_plugin_manager([offered, before, after] if offer_first else [before, offered, after])
    assert sorted(pm.hook.kloyst_loyalty_points(contact_id=uuid.uuid4(), amount_micros=500)) == [5, 7]
    assert pm.for_plugins("kloyst_loyalty_points", ["after"])(contact_id=None, amount_micros=1) == [7]


def test_an_implementation_the_offered_spec_does_not_fit_stops_start_up_naming_the_implementer():
    bad = ("bad", implements("bad", lambda contact_id, currency: 1))
    with pytest.raises(ConfigurationError, match="plugin 'bad'"):
        build_plugin_manager([bad, ("offers", offers_hooks())])
    with pytest.raises(ConfigurationError, match="plugin 'bad'"):
        build_plugin_manager([("offers", offers_hooks()), bad])


def test_implementing_a_hook_nobody_offers_still_stops_start_up():
    with pytest.raises(ConfigurationError, match="kloyst_loyalty_points"):
        build_plugin_manager([("lonely", implements("lonely", lambda contact_id: 1))])


@pytest.fixture(autouse=True)
def _forget_test_modules():
    yield
    for name in [n for n in sys.modules if n.startswith("kloyst_test_")]:
        del sys.modules[name]
