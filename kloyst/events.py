"""Domain events: what happened in a vendor, told to the vendor's enabled plugins after commit.

The catalogue (``docs/events.md``) is one frozen dataclass per event type, a subclass of
:class:`Event` with typed fields; its ``name`` is the class name, in past tense
(``ImportCompleted``, ``ContactOptedOut``). Record one with :func:`record_event` (or many with
:func:`record_events`, one multi-row INSERT) on the outbox of the transaction that made the
change — ``request.outbox``, ``ctx.outbox`` or ``Outbox(session_or_connection)`` — so the event
exists exactly when the change does. It travels under the outbox topic ``vendor.event``; the
worker then calls the tenant hook ``kloyst_vendor_event(event, ctx)`` on the plugins that the
vendor has enabled *and* that subscribe to that type (hook ``kloyst_event_types``).

Cost: an event type no installed plugin subscribes to is not written at all (a dictionary
look-up), so emitters may record freely, even per message status. :func:`is_subscribed` lets an
emitter skip building events nobody wants.

Subscriptions: a plugin declares the types its ``kloyst_vendor_event`` wants with
``kloyst_event_types()`` (event classes, or names; :class:`Event` itself means every type). A
plugin that implements ``kloyst_vendor_event`` without declaring gets the :data:`LEGACY_EVENTS`,
the types that existed before the catalogue — exactly what it received before, never the new,
high-volume ones.

Delivery is at least once: a redelivered event carries the same ``id`` (the outbox event's),
so handlers dedupe on ``event.id``.
"""

from __future__ import annotations

import datetime as dt
import logging
import typing
import uuid
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from types import NoneType, UnionType
from typing import Any, ClassVar

from sqlalchemy.orm import Session

from kloyst.db import tenancy
from kloyst.outbox import Outbox
from kloyst.plugins.enablement import enabled_plugins

log = logging.getLogger(__name__)

TOPIC = "vendor.event"

# name → class, for every Event subclass (the core's and any plugin's own).
CATALOGUE: dict[str, type[Event]] = {}


class Event:
    """Base of every catalogued event: a frozen dataclass whose fields are its payload.

    Field types are ``uuid.UUID``, ``int``, ``str``, ``bool``, ``datetime`` (aware), tuples of
    ``str``, or any of these ``| None``; ``to_payload()`` makes JSON of them and
    ``from_payload()`` gives back an equal event. Subclass it (with ``@dataclass(frozen=True)``)
    for a plugin's own event types; names are unique across the process.
    """

    name: ClassVar[str] = "Event"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.name = cls.__name__
        other = CATALOGUE.get(cls.name)
        if other is not None and (other.__module__, other.__qualname__) != (cls.__module__, cls.__qualname__):
            raise TypeError(f"two event types are named {cls.name!r} ({other.__module__} and {cls.__module__})")
        CATALOGUE[cls.name] = cls

    def to_payload(self) -> dict[str, Any]:
        """The event's fields as JSON-ready values (UUIDs and datetimes as ISO strings, tuples as lists)."""
        return {f.name: _encode(getattr(self, f.name)) for f in fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_payload(cls, payload: dict[str, Any]):
        """The event ``to_payload()`` made ``payload`` from; keys it does not know are ignored (newer writers)."""
        hints = _hints(cls)
        values = {}
        for f in fields(cls):  # type: ignore[arg-type]
            if f.name in payload:
                values[f.name] = _decode(hints[f.name], payload[f.name], f"{cls.name}.{f.name}")
        return cls(**values)


def _hints(cls: type) -> dict[str, Any]:
    cached = cls.__dict__.get("_kloyst_hints")
    if cached is None:
        cached = typing.get_type_hints(cls)
        cls._kloyst_hints = cached  # type: ignore[attr-defined]
    return cached


def _encode(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, tuple):
        return [_encode(v) for v in value]
    return value


def _decode(kind: Any, value: Any, where: str) -> Any:
    if isinstance(kind, UnionType) or typing.get_origin(kind) is typing.Union:
        options = typing.get_args(kind)
        if value is None and NoneType in options:
            return None
        (kind,) = [o for o in options if o is not NoneType]
    if typing.get_origin(kind) is tuple:
        (item, _ellipsis) = typing.get_args(kind)
        if not isinstance(value, list):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        return tuple(_decode(item, v, where) for v in value)
    if kind is uuid.UUID:
        return uuid.UUID(value)
    if kind is dt.datetime:
        return dt.datetime.fromisoformat(value)
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"{where}: expected an integer, got {value!r}")
    if kind in (str, bool) and not isinstance(value, kind):
        raise ValueError(f"{where}: expected {kind.__name__}, got {value!r}")
    return value


# ---------------------------------------------------------------------------------------------
# The catalogue. Keep names and fields stable: plugins match on them. docs/events.md says when
# each is emitted.

# Imports (kloyst_plugins.imports)

@dataclass(frozen=True)
class ImportCompleted(Event):
    """An import finished; its counts cover every row (bulk-imported contacts get no ContactCreated each)."""

    import_id: uuid.UUID
    created: int
    updated: int
    skipped: int
    failed: int


@dataclass(frozen=True)
class ImportFailed(Event):
    """An import stopped for good (``reason`` is its error code or message); rows written before stay."""

    import_id: uuid.UUID
    reason: str


# Campaigns (kloyst_plugins.campaigns)

@dataclass(frozen=True)
class CampaignLaunched(Event):
    campaign_id: uuid.UUID
    recipients: int


@dataclass(frozen=True)
class CampaignCompleted(Event):
    campaign_id: uuid.UUID
    sent: int
    delivered: int
    read: int
    failed: int


@dataclass(frozen=True)
class CampaignCancelled(Event):
    campaign_id: uuid.UUID


# Messages (kloyst_plugins.messages)

@dataclass(frozen=True)
class MessageStatusChanged(Event):
    message_id: uuid.UUID
    campaign_id: uuid.UUID | None
    old_status: str
    new_status: str
    wamid: str | None


@dataclass(frozen=True)
class MessageReceived(Event):
    """A customer's message was stored (once per wamid). Its content stays encrypted in ``inbound_message``:
    handlers that need it read it through the messages plugin's api; ``media_id`` is Meta's id of an
    attached image, video, audio, document or sticker."""

    inbound_id: uuid.UUID
    wamid: str
    phone_number_id: uuid.UUID
    contact_id: uuid.UUID | None
    type: str
    sent_at: dt.datetime
    opt_out: bool
    media_id: str | None = None


# Contacts (kloyst_plugins.contacts)

@dataclass(frozen=True)
class ContactCreated(Event):
    """One contact created through the API (``source``: ``"api"``, …); not emitted per row of an import."""

    contact_id: uuid.UUID
    source: str


@dataclass(frozen=True)
class ContactUpdated(Event):
    """A contact changed; ``changed`` names the fields (never their values)."""

    contact_id: uuid.UUID
    source: str
    changed: tuple[str, ...] = ()


@dataclass(frozen=True)
class ContactOptedOut(Event):
    contact_id: uuid.UUID
    source: str


@dataclass(frozen=True)
class ContactOptedIn(Event):
    contact_id: uuid.UUID
    source: str


# Wallet (kloyst_plugins.wallet)

@dataclass(frozen=True)
class WalletLowBalance(Event):
    """The wallet's available balance (balance − held) went below its threshold (once per crossing)."""

    wallet_id: uuid.UUID
    balance_micros: int
    threshold_micros: int
    currency: str


# Pricing (kloyst_plugins.pricing)

@dataclass(frozen=True)
class QuotationReady(Event):
    """A quotation was priced and can be read (its PDF follows separately)."""

    quotation_id: uuid.UUID
    total_micros: int
    currency: str


# Core: accounts, auth, plugins (kloyst.*) and WhatsApp accounts (kloyst_plugins.waba)

@dataclass(frozen=True)
class VendorSignedUp(Event):
    user_id: uuid.UUID


@dataclass(frozen=True)
class UserInvited(Event):
    user_id: uuid.UUID
    role: str


@dataclass(frozen=True)
class UserRoleChanged(Event):
    user_id: uuid.UUID
    role: str


@dataclass(frozen=True)
class UserRemoved(Event):
    user_id: uuid.UUID


@dataclass(frozen=True)
class PluginEnabled(Event):
    plugin: str
    by_user_id: uuid.UUID | None = None


@dataclass(frozen=True)
class PluginDisabled(Event):
    plugin: str
    by_user_id: uuid.UUID | None = None


@dataclass(frozen=True)
class WabaRegistered(Event):
    waba_id: uuid.UUID
    meta_waba_id: str


@dataclass(frozen=True)
class PhoneNumberAssigned(Event):
    phone_number_id: uuid.UUID
    meta_phone_number_id: str
    meta_waba_id: str


@dataclass(frozen=True)
class PhoneNumberUnassigned(Event):
    meta_phone_number_id: str
    phone_number_id: uuid.UUID | None = None


# What a plugin that implements kloyst_vendor_event without kloyst_event_types receives: the
# events recorded before the catalogue existed, as it always did.
LEGACY_EVENTS: frozenset[str] = frozenset({
    "VendorSignedUp", "UserInvited", "UserRoleChanged", "UserRemoved", "PluginEnabled", "PluginDisabled",
    "ContactOptedOut", "ContactOptedIn", "WabaRegistered", "PhoneNumberAssigned", "PhoneNumberUnassigned",
})


# ---------------------------------------------------------------------------------------------
# What a plugin receives.

@dataclass(frozen=True)
class DomainEvent:
    """The event a ``kloyst_vendor_event`` implementation receives.

    ``id`` is the outbox event's id (the same on every redelivery: dedupe on it), ``name`` the
    event type's name, ``payload`` its JSON fields, ``data`` the typed :class:`Event` (None for a
    name outside the catalogue), ``occurred_at`` when it was recorded (in the transaction of the
    change; UTC).
    """

    id: int
    name: str
    vendor_id: uuid.UUID
    payload: dict[str, Any] = field(default_factory=dict)
    data: Event | None = None
    occurred_at: dt.datetime | None = None


# ---------------------------------------------------------------------------------------------
# Subscriptions

@dataclass(frozen=True)
class Subscriptions:
    """Which installed plugins' ``kloyst_vendor_event`` wants which event names."""

    by_name: dict[str, frozenset[str]]
    everything: frozenset[str]  # plugins that declared Event itself: every type

    def plugins_for(self, name: str) -> frozenset[str]:
        return self.by_name.get(name, frozenset()) | self.everything

    def wanted(self, name: str) -> bool:
        return bool(self.everything) or name in self.by_name


_SUBSCRIPTIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def subscriptions(pm) -> Subscriptions:
    """The subscriptions of ``pm``'s plugins (computed once per plugin manager)."""
    found = _SUBSCRIPTIONS.get(pm)
    if found is None:
        found = _SUBSCRIPTIONS[pm] = _subscriptions(pm)
    return found


def _subscriptions(pm) -> Subscriptions:
    listeners = {impl.plugin_name for impl in pm.hook.kloyst_vendor_event.get_hookimpls()}
    declared = {impl.plugin_name for impl in pm.hook.kloyst_event_types.get_hookimpls()}
    by_name: dict[str, set[str]] = {}
    everything: set[str] = set()
    for plugin in sorted(listeners):
        if plugin not in declared:
            for name in LEGACY_EVENTS:
                by_name.setdefault(name, set()).add(plugin)
            continue
        for answer in pm.for_plugins("kloyst_event_types", [plugin])():
            for kind in answer or ():
                if kind is Event:
                    everything.add(plugin)
                elif isinstance(kind, str):
                    by_name.setdefault(kind, set()).add(plugin)
                elif isinstance(kind, type) and issubclass(kind, Event):
                    by_name.setdefault(kind.name, set()).add(plugin)
                else:
                    raise TypeError(f"plugin {plugin!r}: kloyst_event_types must return Event subclasses or names, "
                                    f"not {kind!r}")
    for plugin in sorted(declared - listeners):
        log.warning("plugin %r declares kloyst_event_types but does not implement kloyst_vendor_event", plugin)
    return Subscriptions({n: frozenset(p) for n, p in by_name.items()}, frozenset(everything))


def is_subscribed(outbox: Outbox, kind: type[Event] | str) -> bool:
    """Whether an installed plugin wants events of ``kind`` (True when the outbox's plugins are unknown)."""
    pm = outbox.plugin_manager
    return pm is None or subscriptions(pm).wanted(kind if isinstance(kind, str) else kind.name)


# ---------------------------------------------------------------------------------------------
# Recording

def record_event(outbox: Outbox, vendor_id: uuid.UUID, event: Event) -> None:
    """Record ``event`` of ``vendor_id`` in the outbox's transaction (nothing if no installed plugin subscribes)."""
    record_events(outbox, vendor_id, (event,))


def record_events(outbox: Outbox, vendor_id: uuid.UUID, events: Iterable[Event]) -> int:
    """Record many events of one vendor with one multi-row INSERT; return how many were written.

    Events no plugin *the vendor has enabled* subscribes to are dropped before anything is built
    or written: a plugin that wants every event (vendor webhooks, the event feed) costs the
    vendors who have not turned it on nothing. That takes one small look-up of the vendor's
    enabled plugins per call, and none when no installed plugin subscribes to anything. Where
    the outbox cannot tell which plugins are installed (a bare engine outside an application)
    every event is written.
    """
    events = list(events)
    for event in events:
        if not isinstance(event, Event) or type(event) is Event:
            raise TypeError(f"not a catalogued event: {event!r}")
    pm = outbox.plugin_manager
    if pm is not None:
        installed = subscriptions(pm)
        events = [event for event in events if installed.wanted(event.name)]
        if events:  # one look-up, only when an installed plugin wants one of them
            enabled = _enabled_for(outbox, pm, vendor_id)
            events = [event for event in events if not installed.plugins_for(event.name).isdisjoint(enabled)]
    payloads = [{"name": event.name, "payload": event.to_payload()} for event in events]
    return outbox.add_many(TOPIC, payloads, vendor_id=vendor_id) if payloads else 0


def _enabled_for(outbox: Outbox, pm, vendor_id: uuid.UUID) -> frozenset[str]:
    """The vendor's enabled plugins, read in the outbox's transaction (whatever tenant scope its session has:
    the query names the vendor, and a signup records its first event before any scope exists)."""
    db = outbox.connection
    if isinstance(db, Session):
        with tenancy.unscoped(db):
            return enabled_plugins(db, pm, vendor_id)
    return enabled_plugins(db, pm, vendor_id)


def record(outbox: Outbox, vendor_id: uuid.UUID, name: str, **payload: Any) -> None:
    """The older spelling: ``record(outbox, vendor_id, "UserInvited", user_id=..., role=...)``.

    A catalogued name is checked against its type and recorded like :func:`record_event`;
    any other name is written as given (for every listener that declared it, or declared all).
    """
    kind = CATALOGUE.get(name)
    if kind is not None:
        try:
            event = kind.from_payload({k: _encode(v) for k, v in payload.items()})
        except (TypeError, ValueError) as exc:  # an old caller's loose payload: still delivered, untyped
            log.warning("event %s recorded with a payload its type does not accept (%s)", name, exc)
        else:
            record_event(outbox, vendor_id, event)
            return
    if is_subscribed(outbox, name):
        outbox.add_many(TOPIC, [{"name": name, "payload": payload}], vendor_id=vendor_id)


# ---------------------------------------------------------------------------------------------
# Delivery

def deliver(ctx, outbox_event) -> None:
    """Outbox handler for ``vendor.event``: call the tenant hook on the vendor's enabled, subscribing plugins."""
    name = outbox_event.payload["name"]
    payload = outbox_event.payload.get("payload", {})
    pm = ctx.plugin_manager
    targets = subscriptions(pm).plugins_for(name) & ctx.plugins
    if not targets:
        return
    kind = CATALOGUE.get(name)
    event = DomainEvent(id=outbox_event.id, name=name, vendor_id=outbox_event.vendor_id, payload=payload,
                        data=kind.from_payload(payload) if kind is not None else None,
                        occurred_at=outbox_event.created_at)
    pm.for_plugins("kloyst_vendor_event", targets)(event=event, ctx=ctx)


def catalogue() -> Sequence[type[Event]]:
    """Every event type known to this process, by name."""
    return [CATALOGUE[n] for n in sorted(CATALOGUE)]
