"""The customer-service window, as pricing needs it: when it is open, and who in an audience has it open.

A customer's message opens (or refreshes) a 24-hour customer-service window. Since Meta's
per-message pricing (1 July 2025) a free-form message can only be sent inside it and costs
nothing, and a *utility* template **delivered** inside it is free; marketing and
authentication templates are charged wherever they are delivered.

The window is open at ``at`` when the contact's last inbound message came less than 24 hours
earlier: 23 h 59 min after it the window is open, at 24 h it has closed. Kloyst knows the last
inbound time from the contacts plugin (``Contact.last_inbound_at``, set by the webhook).

What pricing does with it (docs/pricing.md, "The customer-service window"):

* a free-form message (category :data:`SERVICE`) is priced at 0 and never held;
* a utility template to a contact whose window is open is still **held at its full price** —
  the window can close before Meta delivers it (a paused or rate-limited queue, a retry), and
  Meta decides at delivery; settlement then follows Meta's ``pricing`` (free → the capture is
  refunded), so Kloyst never collects less than Meta charges and the vendor never pays for a
  message Meta gave away;
* a quotation shows the recipients whose window is open at quote time only as an *estimate*
  (:func:`in_window_by_country`), never as a lower total.
"""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import func, select

from kloyst_plugins.contacts.api import Audience, audience_query, Contact

CUSTOMER_SERVICE_WINDOW = dt.timedelta(hours=24)
SERVICE = "SERVICE"  # the category of a free-form message inside the window: always free, never held


def window_closes_at(last_inbound_at: dt.datetime | None) -> dt.datetime | None:
    """When the window a last inbound message opened closes (None: the contact never wrote)."""
    return None if last_inbound_at is None else last_inbound_at + CUSTOMER_SERVICE_WINDOW


def window_open(last_inbound_at: dt.datetime | None, at: dt.datetime) -> bool:
    """Whether the contact's customer-service window is open at ``at`` (strictly less than 24 h since it wrote)."""
    closes = window_closes_at(last_inbound_at)
    return closes is not None and at < closes


def in_window_by_country(db, audience: Audience, *, vendor_id: uuid.UUID,
                         at: dt.datetime) -> dict[str | None, int]:
    """How many of the audience's recipients have their window open at ``at``, per country: one ``GROUP BY``.

    The same recipients :func:`kloyst_plugins.contacts.api.count_by_country` counts (opted-out
    contacts are never in an audience), narrowed to those whose last inbound message is within
    the window — the same rule as :func:`window_open`, in SQL.
    """
    recipients = audience_query(audience, vendor_id=vendor_id, dialect=db.get_bind().dialect.name).subquery()
    rows = db.execute(
        select(recipients.c.country, func.count())
        .join(Contact, Contact.id == recipients.c.id)
        .where(Contact.vendor_id == vendor_id, Contact.last_inbound_at > at - CUSTOMER_SERVICE_WINDOW)
        .group_by(recipients.c.country)).all()
    return {country: int(count) for country, count in rows}
