"""The messages plugin's scrape-time gauges: dead letters waiting for an operator, and the sender's backlog.

Message *transitions* (sent, retry, failed, delivered, read) are counters incremented as
they commit (``kloyst_message_status_total``, in the sender and the status webhook); a
``GROUP BY vendor, status`` over ``message_log`` at every scrape would read millions of rows.
What is read here is small or indexed:

* dead letters not requeued, by error kind: ``dead_letter`` holds failed messages only (a
  few percent of the traffic) and is read at most once a minute;
* queued messages: a count over the sender's own partial index (``status = 'QUEUED'``);
* statuses kept without a message (a wamid no message of the vendor carries): a count over
  the partial index ``ix_message_status_event_unlinked``. Meta's statuses for messages sent
  from outside Kloyst end up here; a sudden rise means statuses are not being matched.
"""

from __future__ import annotations

from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import text

from kloyst.api import DatabaseCollector, ErrorKind

ERROR_KINDS = (*(kind.value for kind in ErrorKind), "refused")  # refused: never sent (opted out, number unusable)

_DEAD_LETTERS = text("SELECT error_kind, count(*) FROM dead_letter WHERE requeued_at IS NULL GROUP BY error_kind")
_QUEUED = text("SELECT count(*) FROM message_log WHERE status = 'QUEUED'")  # ix_message_log_due
_UNMATCHED = text("SELECT count(*) FROM message_status_event WHERE message_id IS NULL")  # ix_..._unlinked


class DeadLetterGauges(DatabaseCollector):
    name = "message dead letters"
    min_interval = 60.0

    def families(self) -> list:
        return [GaugeMetricFamily("kloyst_message_dead_letters", "Failed messages in the dead-letter list not "
                                  "requeued yet, by error kind (permanent, auth, transient, rate_limited, refused).",
                                  labels=["kind"])]

    def measure(self, conn) -> list:
        family, = self.families()
        counts = dict.fromkeys(ERROR_KINDS, 0) | dict(conn.execute(_DEAD_LETTERS).all())
        for kind, count in sorted(counts.items()):  # every kind, 0 included: a rise from nothing is seen
            family.add_metric([kind], float(count))
        return [family]


class QueuedMessages(DatabaseCollector):
    name = "queued messages"
    min_interval = 15.0

    def families(self) -> list:
        return [GaugeMetricFamily("kloyst_messages_queued", "Messages waiting for the sender (QUEUED: due now or "
                                  "later, after a retry's backoff).")]

    def measure(self, conn) -> list:
        family, = self.families()
        family.add_metric([], float(conn.execute(_QUEUED).scalar_one()))
        return [family]


class UnmatchedStatuses(DatabaseCollector):
    name = "unmatched message statuses"
    min_interval = 60.0

    def families(self) -> list:
        return [GaugeMetricFamily("kloyst_message_statuses_unmatched", "Status reports from Meta kept without a "
                                  "message: their wamid is no message's and they name none of the vendor's "
                                  "messages (sent from outside Kloyst, or not matched: see kloyst messages check).")]

    def measure(self, conn) -> list:
        family, = self.families()
        family.add_metric([], float(conn.execute(_UNMATCHED).scalar_one()))
        return [family]
