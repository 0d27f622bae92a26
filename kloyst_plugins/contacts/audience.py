"""Who a campaign or a quotation is for: an audience of contacts, described once, resolved in SQL.

An :class:`Audience` names its sources — everyone, contacts carrying any of some labels, the
contacts an import job created or updated, explicit contact ids — and then takes out those
carrying any excluded label. Opted-out contacts are always taken out: no audience can reach
them, whatever it says. Resolution is one SQL query (:func:`audience_query`), so pricing a
million contacts is a ``GROUP BY`` (:func:`count_by_country`) and freezing them is an
``INSERT … SELECT``, never a Python loop. The query names the vendor itself, so it is safe in
Core statements that the ORM tenancy listener does not see.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from pydantic import Field, model_validator
from sqlalchemy import and_, false, func, not_, or_, select

from kloyst.api import Schema
from kloyst_plugins.contacts.filters import has_all_labels
from kloyst_plugins.contacts.models import Contact, ContactAuditLog
from kloyst_plugins.contacts.schemas import Labels

MAX_EXPLICIT_CONTACTS = 10_000


class Audience(Schema):
    """Recipients = (all OR any ``labels_include`` OR touched by ``import_job_id`` OR in ``contact_ids``)
    AND NOT any ``labels_exclude`` AND NOT opted out."""

    all: bool = False
    labels_include: Labels = Field(default_factory=list)
    labels_exclude: Labels = Field(default_factory=list)
    import_job_id: uuid.UUID | None = None
    contact_ids: list[uuid.UUID] = Field(default_factory=list, max_length=MAX_EXPLICIT_CONTACTS)

    @model_validator(mode="after")
    def _has_a_source(self) -> Audience:
        if not (self.all or self.labels_include or self.import_job_id or self.contact_ids):
            raise ValueError("choose who receives it: all, labels_include, import_job_id or contact_ids")
        return self


def _any_label(labels: list[str], dialect: str):
    # One containment test per label: on PostgreSQL each is answered by the GIN (jsonb_path_ops) index.
    return or_(*(has_all_labels([label], dialect) for label in labels))


def audience_query(audience: Audience, *, vendor_id: uuid.UUID, dialect: str):
    """``SELECT contact.id, contact.country`` of the audience's recipients (vendor named explicitly)."""
    sources = []
    if audience.all:
        sources.append(Contact.id.isnot(None))
    if audience.labels_include:
        sources.append(_any_label(audience.labels_include, dialect))
    if audience.import_job_id is not None:
        # The audit trail records each contact an import created or merged into.
        sources.append(Contact.id.in_(select(ContactAuditLog.contact_id).where(
            ContactAuditLog.vendor_id == vendor_id, ContactAuditLog.import_job_id == audience.import_job_id)))
    if audience.contact_ids:
        sources.append(Contact.id.in_(sorted(set(audience.contact_ids))))
    where = [Contact.vendor_id == vendor_id, Contact.opted_out.is_(False), or_(*sources) if sources else false()]
    if audience.labels_exclude:
        where.append(not_(_any_label(audience.labels_exclude, dialect)))
    return select(Contact.id, Contact.country).where(and_(*where))


def count_by_country(db, audience: Audience, *, vendor_id: uuid.UUID) -> dict[str | None, int]:
    """How many recipients per ISO-3166 country of their number (``None``: a number with no known country).

    A contact known only by its BSUID counts under its BSUID's country prefix (``contact.country``,
    :mod:`.bsuids`); with an unknown prefix it counts under ``None``, which the pricing plugin prices
    at its "Other" market rate."""
    recipients = audience_query(audience, vendor_id=vendor_id, dialect=db.get_bind().dialect.name).subquery()
    rows = db.execute(select(recipients.c.country, func.count()).group_by(recipients.c.country)).all()
    return {country: int(count) for country, count in rows}


@dataclass(frozen=True)
class SendingColumns:
    """The contact columns a sender needs for each recipient, as SQL another plugin puts in its own query.

    ``join`` is a ``LEFT JOIN`` of ``contact`` (as ``c``) onto the caller's contact-id column,
    limited to the vendor bound as ``:vendor``; ``columns`` selects, in this order: whether the
    contact still exists, its sealed number, the hash it is known by — the number's, or for a
    contact known only by its BSUID the BSUID's — (hex text on PostgreSQL, bytes on SQLite),
    whether it opted out, its sealed name and attributes (NULL unless asked for), and its sealed
    BSUID (NULL when it has none). A sender addresses a contact with a number by ``to`` and
    one without by ``recipient`` (its BSUID).
    The caller's query stays one statement: a fan-out of a million recipients joins, it does not
    look contacts up one chunk at a time.
    """

    columns: str
    join: str


def sending_columns(contact_id_column: str, *, dialect: str, name: bool, attributes: bool) -> SendingColumns:
    known_by = "COALESCE(c.mobile_hash, c.bsuid_hash)"
    mobile_hash = f"encode({known_by}, 'hex')" if dialect == "postgresql" else known_by
    columns = (f"c.id IS NOT NULL, c.mobile_enc, {mobile_hash}, c.opted_out, "
               f"{'c.name_enc' if name else 'NULL'}, {'c.attributes' if attributes else 'NULL'}, c.bsuid_enc")
    return SendingColumns(columns=columns,
                          join=f"LEFT JOIN contact c ON c.id = {contact_id_column} AND c.vendor_id = :vendor")
