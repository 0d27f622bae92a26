"""A :class:`~.schemas.ContactFilter` as SQL conditions on :class:`Contact`, shared by list, export and bulk.

The conditions are chosen to use the indexes: "has these labels" is ``labels @> '[…]'`` on
PostgreSQL (the GIN ``jsonb_path_ops`` index answers it), the phone is looked up by its
keyed hash (the per-vendor unique index), so is a BSUID (its partial unique index), the created range rides on
``ix_contact_vendor_created``. SQLite, the embedded default, gets an equivalent ``json_each``
test. None of them names the vendor: tenant scoping adds it.
"""

from __future__ import annotations

import uuid

from sqlalchemy import and_, exists, func, literal, select, type_coerce
from sqlalchemy.dialects.postgresql import JSONB

from kloyst.api import MobileHasher
from kloyst_plugins.contacts.models import Contact
from kloyst_plugins.contacts.schemas import ContactFilter
from kloyst_plugins.contacts.services import read_phone


def labels_jsonb():
    """``contact.labels`` typed as JSONB, so ``@>``, ``?|`` and ``-`` are available on PostgreSQL."""
    return type_coerce(Contact.labels, JSONB)


def has_all_labels(labels: list[str], dialect: str):
    if dialect == "postgresql":
        return labels_jsonb().contains(labels)
    conditions = []
    for label in labels:
        element = func.json_each(Contact.labels).table_valued("value")
        conditions.append(exists(select(literal(1)).select_from(element).where(element.c.value == label)))
    return and_(*conditions)


def conditions(flt: ContactFilter, *, vendor_id: uuid.UUID, hasher: MobileHasher, dialect: str) -> list:
    where = []
    if flt.label:
        where.append(has_all_labels(flt.label, dialect))
    if flt.opted_out is not None:
        where.append(Contact.opted_out.is_(flt.opted_out))
    if flt.country:
        where.append(Contact.country == flt.country)
    if flt.created_from:
        where.append(Contact.created_at >= flt.created_from)
    if flt.created_to:
        where.append(Contact.created_at < flt.created_to)
    if flt.phone:
        phone = read_phone(flt.phone, flt.default_country, field="phone")
        where.append(Contact.mobile_hash == hasher(vendor_id, phone.e164))
    if flt.bsuid:
        # Both on their partial (vendor_id, …) indexes; a parent BSUID (US.ENT.…) may match several contacts.
        column = Contact.parent_bsuid_hash if ".ENT." in flt.bsuid else Contact.bsuid_hash
        where.append(column == hasher(vendor_id, flt.bsuid))
    return where
