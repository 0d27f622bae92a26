"""The contacts plugin's public API: phone numbers, BSUIDs, contacts and audiences, merge helpers.

Contact identity for other plugins: ``ContactService.identify(Identity(...))`` finds, links or
creates the contact of a WhatsApp user known by number and/or BSUID; ``ContactService.addressee``
says whether a message goes ``to`` a number or to a ``recipient`` BSUID; ``decrypt_mobile``,
``decrypt_bsuid``, ``decrypt_parent_bsuid`` and ``decrypt_username`` read the sealed fields
(``decrypt_mobile`` is None for a contact known only by its BSUID).

A plugin that ``requires`` contacts imports from here and nowhere else in ``kloyst_plugins.contacts``;
everything else in the package may change without notice.
"""

from kloyst_plugins.contacts.audience import Audience, audience_query, count_by_country, sending_columns, SendingColumns
from kloyst_plugins.contacts.bsuids import (clean_username, country_of as bsuid_country, InvalidBsuid,
                                            looks_like_bsuid, normalize_bsuid)
from kloyst_plugins.contacts.merge import strategies_for
from kloyst_plugins.contacts.models import Contact, ContactAuditLog, ContactSource
from kloyst_plugins.contacts.phones import first_valid, InvalidPhone, mask, MAX_RAW_LENGTH, normalize, Phone
from kloyst_plugins.contacts.schemas import clean_labels
from kloyst_plugins.contacts.services import Actor, Addressee, ContactService, Identity, read_bsuid, read_phone

__all__ = [
    "Actor",
    "Addressee",
    "Audience",
    "audience_query",
    "bsuid_country",
    "clean_username",
    "clean_labels",
    "Contact",
    "ContactAuditLog",
    "ContactService",
    "ContactSource",
    "count_by_country",
    "first_valid",
    "Identity",
    "InvalidBsuid",
    "InvalidPhone",
    "looks_like_bsuid",
    "mask",
    "MAX_RAW_LENGTH",
    "normalize",
    "normalize_bsuid",
    "Phone",
    "read_bsuid",
    "read_phone",
    "sending_columns",
    "SendingColumns",
    "strategies_for",
]
