"""Messages whose sender died: taken back within seconds, and never sent again once Meta has told us of them.

A sender claims messages (SENDING) in the name of its process (``claimed_by``, see
:mod:`kloyst.heartbeat`). Every sender runs :func:`take_back_abandoned` every couple of
seconds. A message is abandoned when its owner has stopped beating (killed, OOM, host lost:
seen ``kloyst.heartbeat.dead_after_seconds`` after the death) or its lease ran out (the
backstop for an owner alive but stuck). Each abandoned message is then, in one transaction
that holds its row:

1. **adopted** when Meta has already reported a status naming it — one stored in
   ``message_status_event``, or in a webhook delivery that is stored but not applied yet (the
   WEBHOOK process may be behind, or restarting). Meta accepted the dead sender's call: the
   wamid is the message's, it is SENT, and it is not sent again;
2. otherwise put back to QUEUED at the head of the line (it goes next), marked
   ``maybe_sent_before``: the dead sender may have had a call in flight that Meta accepted and
   whose answer and status have not reached Kloyst. Sent again, it may reach the recipient
   twice; if the first call's status arrives later, the second wamid is counted
   (``duplicate_send``).

Why the check cannot miss a status that reached Kloyst first: the receiver answers Meta 200
only after the delivery is committed, and this transaction reads what is committed, so a
status acknowledged before the decision is seen by it. Only one arriving in the milliseconds
between this decision and the new call can still be missed. Rows a live transaction holds (an
adoption by the webhook drainer, a late answer being written) are skipped (``SKIP LOCKED``)
and looked at again on the next pass.

A message queued again may wait before it is sent (behind a rate limit, a transient error's
backoff), and the statuses it lacked may arrive meanwhile — stored, but not yet applied if the
WEBHOOK process is catching up after an outage. So the sender looks once more when it claims a
``maybe_sent_before`` message, just before it would call Meta (:func:`adopt_reported`): a status
stored by then adopts the message instead.

Every half minute the same loop also applies statuses that arrived before any message carried
their wamid (:func:`kloyst_plugins.messages.statuses.link_unlinked`).
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from dataclasses import dataclass

from sqlalchemy import Uuid, bindparam, text

from kloyst.api import alive_since, HeartbeatSettings, metrics as kmetrics, unprocessed_changes, utcnow
from kloyst_plugins.messages import settlement, statuses
from kloyst_plugins.messages import statements as sql
from kloyst_plugins.messages.webhooks import FIELD

log = logging.getLogger(__name__)

# A status of the dead sender's call cannot have been received before the call; one of an earlier call of the
# same message (requeued, then claimed again) can be a little older. Unprocessed deliveries older than this
# before the earliest claim are not read.
STATUS_LOOKBACK = dt.timedelta(minutes=1)
# Before calling Meta again for a message that may have gone: statuses stored this recently and not yet applied are
# read (older ones were applied long ago, adopting the message, unless their delivery keeps failing).
REPORT_LOOKBACK = dt.timedelta(minutes=10)
AHEAD = dt.timedelta(milliseconds=1)  # how much earlier a message taken back is due: before those due with it

_EVENTS_FOR = text("""
SELECT message_id, wamid, occurred_at FROM message_status_event WHERE message_id IN :ids ORDER BY occurred_at
""").bindparams(bindparam("ids", type_=Uuid(), expanding=True))


@dataclass(frozen=True)
class Candidate:
    """A message that may have reached Meta already, with what its statuses must match."""

    vendor_id: uuid.UUID
    meta_phone_number_id: str  # a status counts only if it came for the message's own number


@dataclass(frozen=True)
class _Abandoned(Candidate):
    claimed_at: dt.datetime
    due_at: dt.datetime


@dataclass(frozen=True)
class Recovered:
    adopted: int = 0  # Meta had reported them: SENT, not sent again
    requeued: int = 0  # queued again, maybe sent before


def take_back_abandoned(engine, plugin_manager, heartbeat: HeartbeatSettings,
                        metrics: kmetrics.Metrics | None = None) -> Recovered:
    """One pass over the messages of dead (or stuck) senders; see the module docstring."""
    now = utcnow()
    postgres = engine.dialect.name == "postgresql"
    with engine.begin() as conn:
        rows = conn.execute(sql.ABANDONED_PG if postgres else sql.ABANDONED_SQLITE,
                            {"now": now, "alive_since": alive_since(heartbeat, now)}).all()
        if not rows:
            return Recovered()
        abandoned = {_as_uuid(message_id): _Abandoned(_as_uuid(vendor_id), str(meta_number), _aware(claimed_at),
                                                      _aware(due_at))
                     for message_id, vendor_id, meta_number, claimed_at, due_at in rows}
        since = min(a.claimed_at for a in abandoned.values()) - STATUS_LOOKBACK
        adopted = _adopt_reported(conn, plugin_manager, abandoned, since)
        requeue = [message_id for message_id in abandoned if message_id not in adopted]
        if requeue:
            conn.execute(sql.RECLAIM, [{"id": message_id, "now": now, "due": abandoned[message_id].due_at - AHEAD}
                                       for message_id in requeue])
    if metrics is not None:
        metrics.wamids_adopted(kmetrics.RECOVERY, len(adopted))
    if adopted:
        log.warning("%d messages of a stopped sender had been reported by Meta: adopted their wamids, not sent "
                    "again", len(adopted))
    if requeue:
        log.warning("%d messages of a stopped sender queued again (marked maybe-sent: a call may have reached Meta)",
                    len(requeue))
    return Recovered(adopted=len(adopted), requeued=len(requeue))


def adopt_reported(engine, plugin_manager, claimed: dict[uuid.UUID, Candidate],
                   metrics: kmetrics.Metrics | None = None) -> set[uuid.UUID]:
    """Of messages a sender just claimed to send again, those Meta has reported meanwhile adopt the reported wamid
    (SENT, priced) and must not be called; their ids. The rest go ahead."""
    with engine.begin() as conn:
        adopted = _adopt_reported(conn, plugin_manager, claimed, utcnow() - REPORT_LOOKBACK)
    if metrics is not None:
        metrics.wamids_adopted(kmetrics.RECOVERY, len(adopted))
    if adopted:
        log.warning("%d messages about to be sent again had been reported by Meta meanwhile: adopted their wamids, "
                    "not sent again", len(adopted))
    return adopted


def _adopt_reported(conn, plugin_manager, messages: dict[uuid.UUID, Candidate], since: dt.datetime) -> set[uuid.UUID]:
    """Adopt, in ``conn``'s transaction, the wamid Meta reported for each of ``messages`` (if any); their ids."""
    settled: list[settlement.SettledMessage] = []
    adopted: set[uuid.UUID] = set()
    for message_id, (wamid, at) in _reported_wamids(conn, messages, since).items():
        done = statuses.adopt(conn, messages[message_id].vendor_id, message_id, wamid, at)
        if done:
            adopted.add(message_id)
            settled.extend(settlement.settled_from_rows(done, settlement.SENT))
    settlement.report(plugin_manager, conn, settled)
    return adopted


def _reported_wamids(conn, messages: dict[uuid.UUID, Candidate],
                     since: dt.datetime) -> dict[uuid.UUID, tuple[str, dt.datetime]]:
    """The wamid of the earliest status Meta reported for each of these messages, if any: applied or not yet
    (stored since ``since``)."""
    found: dict[uuid.UUID, tuple[str, dt.datetime]] = {}
    for message_id, wamid, at in conn.execute(_EVENTS_FOR, {"ids": list(messages)}):
        found.setdefault(_as_uuid(message_id), (wamid, _aware(at)))
    for change in unprocessed_changes(conn, received_since=since):
        if change.field != FIELD:
            continue
        for raw in change.value.get("statuses") or ():
            update = statuses.StatusUpdate.parse(raw, change.received_at)
            message = messages.get(update.message_ref) if update is not None else None
            # Only a status that came for the message's own number (whose vendor that is): never across tenants.
            if message is None or message.meta_phone_number_id != change.meta_phone_number_id:
                continue
            known = found.get(update.message_ref)
            if known is None or update.at < known[1]:
                found[update.message_ref] = (update.wamid, update.at)
    return found


def _as_uuid(value) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def _aware(value) -> dt.datetime:
    """A timestamp from a plain text() row: SQLite gives text back, PostgreSQL an aware datetime."""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.timezone.utc)
