"""Telling other plugins that a priced message reached an end that moves money.

A message may carry a price (``message_log.price_micros``) and the wallet hold that pays for
it (``hold_id``): a campaign sets both when it queues its messages, and
:class:`~kloyst_plugins.messages.services.MessageService` when it queues a single send or a test
send. The messages plugin does not settle money itself, so it reports, through the
``kloyst_messages_settled`` hook and in the very transaction that records the message's new
state, each priced message that was

- ``sent``: Meta accepted it (the sender's answer, or a wamid adopted from a late answer or a
  status webhook);
- ``failed``: it failed without being sent (a permanent error, retries exhausted, refused);
- ``undelivered``: it was sent, then a status webhook reported it failed.

Because the report shares the transaction, a message's state and its money commit together or
not at all. Unpriced messages (a pricing rule made them free, a free-form ``SERVICE`` reply)
never reach the hook.

**Meta's price decides.** A status webhook's ``pricing`` says what Meta charges for the message
(:func:`by_meta_price`); when it disagrees with what was held, the message is reported once more:

- ``free``: Meta does not bill it (``billable`` false, or ``type`` ``free_customer_service`` /
  ``free_entry_point`` — a utility template delivered inside the customer-service window): the
  vendor gets back what it paid for it, as for ``undelivered``;
- ``repriced``: Meta charged another category than the template's (a utility template charged
  as marketing): ``price_micros`` is this vendor's price of *that* category to the recipient's
  country, now (rate card, tiers, rules), and the wallet moves the difference
  (docs/wallet.md, "Settling by Meta's price").

Only priced messages are looked at, so a batch of statuses costs one more ``SELECT`` of the
messages its wamids name, and a message whose category Meta confirms moves nothing.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

from sqlalchemy import select

from kloyst.api import ApiError, SettledMessage
from kloyst_plugins.messages.models import MessageLog

log = logging.getLogger(__name__)

SENT = "sent"
FAILED = "failed"
UNDELIVERED = "undelivered"
FREE = "free"  # Meta does not charge it: refunded like an undelivered message
REPRICED = "repriced"  # Meta charged another category: price_micros is that category's price

# Meta's ``pricing.type`` words for a message it does not charge.
FREE_TYPES = frozenset({"free_customer_service", "free_entry_point"})
# Meta's ``pricing.category`` words a rate card prices, as its columns; other words (referral_conversion,
# group_*…) cannot be priced here, so such a message keeps the price it was held at.
META_CATEGORIES = {"marketing": "MARKETING", "marketing_lite": "MARKETING", "utility": "UTILITY",
                   "authentication": "AUTHENTICATION", "authentication_international": "AUTHENTICATION_INTERNATIONAL",
                   "service": "SERVICE"}


def as_uuid(value) -> uuid.UUID | None:
    if value is None or isinstance(value, uuid.UUID):
        return value
    return uuid.UUID(str(value))


def settled_from_rows(rows, outcome: str) -> list[SettledMessage]:
    """``(id, vendor_id, campaign_id, hold_id, price_micros)`` rows → the priced ones as :class:`SettledMessage`."""
    return [SettledMessage(as_uuid(r[0]), as_uuid(r[1]), as_uuid(r[2]), as_uuid(r[3]), int(r[4]), outcome)
            for r in rows if r[4] is not None]


def report(plugin_manager, conn, settled: list[SettledMessage]) -> None:
    """Call ``kloyst_messages_settled`` on every installed plugin with ``conn``; nothing when none is priced."""
    if settled:
        plugin_manager.hook.kloyst_messages_settled(conn=conn, settled=settled)


def by_meta_price(db, vendor_id: uuid.UUID, updates,
                  price_of: Callable[[str | None, str], int]) -> list[SettledMessage]:
    """The priced messages whose Meta ``pricing`` (in ``updates``, statuses applied to them) differs from their hold.

    ``price_of(country, category)`` is this vendor's price of one message now (the pricing
    plugin's ``QuotationService.message_price``), asked only for a category Meta charged that
    differs from the template's. Any status reporting the message free makes it ``free``; else
    the latest category Meta reported decides. A category that cannot be priced (no rate in the
    card) keeps the held price, with a warning.
    """
    reported: dict[str, tuple[bool, str | None]] = {}
    for update in sorted(updates, key=lambda u: u.at):
        if update.billable is None and not update.pricing_category:
            continue
        free, category = reported.get(update.wamid, (False, None))
        reported[update.wamid] = (free or update.billable is False, update.pricing_category or category)
    if not reported:
        return []
    rows = db.execute(select(MessageLog.id, MessageLog.vendor_id, MessageLog.campaign_id, MessageLog.hold_id,
                             MessageLog.price_micros, MessageLog.category, MessageLog.country, MessageLog.wamid)
                      .where(MessageLog.vendor_id == vendor_id, MessageLog.wamid.in_(sorted(reported)),
                             MessageLog.price_micros.isnot(None))).all()
    found: list[SettledMessage] = []
    for message_id, vendor, campaign_id, hold_id, price, held_category, country, wamid in rows:
        free, category = reported[wamid]
        charged = META_CATEGORIES.get((category or "").lower())
        if not free:
            if category is None or charged == (held_category or "").upper():
                continue
            if charged is None:
                log.warning("Meta charged message %s as %r, which no rate card prices: it keeps its held price",
                            message_id, category)
                continue
            try:
                price_now = price_of(country, charged)
            except ApiError as exc:
                log.warning("Meta charged message %s as %s, which cannot be priced (%s): it keeps its held price",
                            message_id, charged, exc)
                continue
            if price_now > 0:
                found.append(SettledMessage(as_uuid(message_id), as_uuid(vendor), as_uuid(campaign_id),
                                            as_uuid(hold_id), int(price_now), REPRICED))
                continue
        found.append(SettledMessage(as_uuid(message_id), as_uuid(vendor), as_uuid(campaign_id), as_uuid(hold_id),
                                    int(price), FREE))
    return found
