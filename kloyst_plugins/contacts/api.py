"""The contacts plugin's public API: phone numbers, contacts and audiences, merge helpers.

A plugin that ``requires`` contacts imports from here and nowhere else in ``kloyst_plugins.contacts``;
everything else in the package may change without notice.
"""

from kloyst_plugins.contacts.audience import Audience, audience_query, count_by_country, sending_columns, SendingColumns
from kloyst_plugins.contacts.merge import strategies_for
from kloyst_plugins.contacts.models import Contact, ContactAuditLog, ContactSource
from kloyst_plugins.contacts.phones import first_valid, InvalidPhone, mask, MAX_RAW_LENGTH, normalize, Phone
from kloyst_plugins.contacts.schemas import clean_labels
from kloyst_plugins.contacts.services import Actor, ContactService, read_phone

__all__ = [
    "Actor",
    "Audience",
    "audience_query",
    "clean_labels",
    "Contact",
    "ContactAuditLog",
    "ContactService",
    "ContactSource",
    "count_by_country",
    "first_valid",
    "InvalidPhone",
    "mask",
    "MAX_RAW_LENGTH",
    "normalize",
    "Phone",
    "read_phone",
    "sending_columns",
    "SendingColumns",
    "strategies_for",
]
