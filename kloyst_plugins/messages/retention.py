"""What of the messages plugin's data expires (``kloyst_retention_policies``; defaults and reasons: docs/retention.md).

* A message (``message_log``) goes once nothing more will happen to it — never while it is queued,
  being sent or paused — with its dead letter and duplicate-send records (they cascade). Thirteen
  months by default: a year of reporting, compared month by month, plus a month of slack.
* Its status events (three or four per message) go sooner: the message itself keeps its final
  status and the time of each step, and the events are only Meta's raw reports of them.
* A customer's message (``inbound_message``) is kept as long as a sent one.
"""

from __future__ import annotations

from kloyst.api import ByGroupAndTime, BySequence, RetentionPolicy, Setting, Vendor
from kloyst_plugins.messages.models import InboundMessage, MessageLog, MessageStatusEvent, UNFINISHED, values

MESSAGES = Setting(
    "messages.retention_days", "MESSAGES_RETENTION_DAYS", 395, int,
    help="Days a sent (or failed, or cancelled) message is kept, with its dead letter: a year of reports month "
         "by month plus a month. Unsent messages are never pruned. 0 keeps them forever.")
STATUS_EVENTS = Setting(
    "messages.status_events_retention_days", "MESSAGES_STATUS_EVENTS_RETENTION_DAYS", 90, int,
    help="Days Meta's status reports (sent, delivered, read, failed) are kept; the message keeps its final status "
         "and the time of each step. Meta stops retrying a report after 7 days. 0 keeps them forever.")
INBOUND = Setting(
    "messages.inbound_retention_days", "MESSAGES_INBOUND_RETENTION_DAYS", 395, int,
    help="Days a customer's message is kept: as long as the messages sent to them. 0 keeps them forever.")

SETTINGS = (MESSAGES, STATUS_EVENTS, INBOUND)

_messages, _events, _inbound = MessageLog.__table__, MessageStatusEvent.__table__, InboundMessage.__table__
_vendors = Vendor.__table__

POLICIES = (
    RetentionPolicy("messages.messages", MESSAGES, removes="finished messages and their dead letters",
                    rows=ByGroupAndTime(_messages, group=_messages.c.vendor_id, age=_messages.c.created_at,
                                        groups=_vendors, where=[_messages.c.status.not_in(values(UNFINISHED))])),
    RetentionPolicy("messages.status_events", STATUS_EVENTS, removes="Meta's status reports",
                    rows=BySequence(_events, age=_events.c.received_at)),
    RetentionPolicy("messages.inbound", INBOUND, removes="customers' messages",
                    rows=ByGroupAndTime(_inbound, group=_inbound.c.vendor_id, age=_inbound.c.received_at,
                                        groups=_vendors)),
)
