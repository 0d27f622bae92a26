"""What of the contacts plugin's data expires: the audit trail of contact changes (docs/retention.md)."""

from __future__ import annotations

from kloyst.api import ByGroupAndTime, RetentionPolicy, Setting, Vendor
from kloyst_plugins.contacts.models import ContactAuditLog

AUDIT_LOG = Setting(
    "contacts.audit_retention_days", "CONTACTS_AUDIT_RETENTION_DAYS", 730, int,
    help="Days an entry of the contact audit log (who changed what, from where) is kept: two years, long enough "
         "for a yearly audit and a dispute about it. 0 keeps them forever.")

_audit = ContactAuditLog.__table__

POLICY = RetentionPolicy("contacts.audit_log", AUDIT_LOG, removes="contact audit entries",
                         rows=ByGroupAndTime(_audit, group=_audit.c.vendor_id, age=_audit.c.created_at,
                                             groups=Vendor.__table__))
