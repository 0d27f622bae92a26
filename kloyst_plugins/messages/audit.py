"""Does every message's state agree with what Meta told us? Checked from the data alone.

``message_status_event`` keeps every status Meta reported, once each; ``message_log`` is what
Kloyst made of them. They disagree when a status was stored but never applied (the message lags
its own events), when a status that names a message was neither applied to it nor counted as a
second send, when a second send was counted for the message's own wamid, or when anything
crossed tenants. ``kloyst messages check`` prints :func:`disagreements` and exits 1 on any; the
chaos tests run it after every run. It only reads.

Not disagreements, but counted for the operator (:func:`summary`): statuses kept without a
message (sends made outside Kloyst), and statuses of messages Kloyst had given up on (FAILED or
CANCELLED before Meta's word came).
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Connection

from kloyst_plugins.messages.models import sql

LIMIT = 100  # rows listed per kind of disagreement (each kind is also counted in full)
_EVENT_RANK = sql("CASE e.status WHEN {SENT} THEN {SENT_RANK} WHEN {DELIVERED} THEN {DELIVERED_RANK} "
                  "WHEN {READ} THEN {READ_RANK} END")

# The message's own statuses (same wamid) that rank above it: stored, never applied. FAILED is rank 5, so a
# failed message never lags; a 'failed' report lags while the message is not FAILED and was never delivered.
_LAGGING = sql(f"""
FROM message_log m JOIN message_status_event e ON e.message_id = m.id AND e.wamid = m.wamid
WHERE (e.status IN ({{ACCEPTED}}) AND m.status_rank < {_EVENT_RANK})
   OR (e.status = {{FAILED}} AND m.status_rank < {{FAILABLE_BELOW}})
""")
# A status for a wamid a message of its vendor carries, but not linked to that message.
_UNLINKED = """
FROM message_status_event e JOIN message_log m ON m.wamid = e.wamid AND m.vendor_id = e.vendor_id
WHERE e.message_id IS NULL OR e.message_id <> m.id
"""
# A status naming a message under another wamid that is not a counted second send, while the message could still
# have taken it (it did not end without one).
_UNEXPLAINED = sql("""
FROM message_status_event e JOIN message_log m ON m.id = e.message_id
WHERE (m.wamid IS NULL OR e.wamid <> m.wamid)
  AND NOT EXISTS (SELECT 1 FROM duplicate_send d WHERE d.wamid = e.wamid AND d.message_id = m.id)
  AND NOT (m.wamid IS NULL AND m.status IN ({FAILED}, {CANCELLED}))
""")
_FALSE_DUPLICATES = """
FROM duplicate_send d JOIN message_log m ON m.id = d.message_id
WHERE d.wamid = m.wamid
"""
_MISCOUNTED = """
FROM message_log m LEFT JOIN (SELECT message_id, count(*) AS n FROM duplicate_send GROUP BY message_id) d
  ON d.message_id = m.id
WHERE m.duplicate_sends <> COALESCE(d.n, 0)
"""
_CROSS_TENANT = """
FROM message_status_event e JOIN message_log m ON m.id = e.message_id
WHERE e.vendor_id <> m.vendor_id
"""
_CROSS_TENANT_DUPLICATES = """
FROM duplicate_send d JOIN message_log m ON m.id = d.message_id
WHERE d.vendor_id <> m.vendor_id
"""

# (kind, what one row says, the query's body, the columns it lists)
CHECKS = (
    ("lagging", "message {0} (vendor {1}) is {2} but Meta reported it {3}", _LAGGING,
     "m.id, m.vendor_id, m.status, e.status"),
    ("unlinked", "status {3} of wamid {2} was stored but never applied to message {0} (vendor {1}), which carries "
                 "that wamid", _UNLINKED, "m.id, m.vendor_id, e.wamid, e.status"),
    ("unexplained", "message {0} (vendor {1}, {2}) has a status {3} of wamid {4}, neither its own wamid ({5}) nor a "
                    "counted second send", _UNEXPLAINED, "m.id, m.vendor_id, m.status, e.status, e.wamid, m.wamid"),
    ("false_duplicate", "message {0} (vendor {1}) counts its own wamid {2} as a second send", _FALSE_DUPLICATES,
     "m.id, m.vendor_id, d.wamid"),
    ("miscounted", "message {0} (vendor {1}) says duplicate_sends = {2} but {3} second wamids are recorded",
     _MISCOUNTED, "m.id, m.vendor_id, m.duplicate_sends, COALESCE(d.n, 0)"),
    ("cross_tenant", "status event {0} of vendor {1} is linked to message {2} of vendor {3}", _CROSS_TENANT,
     "e.id, e.vendor_id, m.id, m.vendor_id"),
    ("cross_tenant_duplicate", "second send {0} of vendor {1} is counted on message {2} of vendor {3}",
     _CROSS_TENANT_DUPLICATES, "d.wamid, d.vendor_id, m.id, m.vendor_id"),
)

_SUMMARY = text(sql("""
SELECT (SELECT count(*) FROM message_status_event),
       (SELECT count(*) FROM message_status_event WHERE message_id IS NULL),
       (SELECT count(*) FROM duplicate_send),
       (SELECT count(DISTINCT d.message_id) FROM duplicate_send d),
       (SELECT count(*) FROM message_status_event e JOIN message_log m ON m.id = e.message_id
         WHERE m.wamid IS NULL AND m.status IN ({FAILED}, {CANCELLED}))
"""))


def disagreements(conn: Connection) -> dict[str, tuple[int, list[str]]]:
    """Every kind of disagreement found: ``{kind: (how many, the first LIMIT as readable lines)}``; empty when
    every message agrees with Meta's statuses."""
    found = {}
    for kind, line, body, columns in CHECKS:
        count = conn.execute(text(f"SELECT count(*) {body}")).scalar_one()
        if count:
            rows = conn.execute(text(f"SELECT {columns} {body} LIMIT {LIMIT}")).all()
            found[kind] = (int(count), [line.format(*row) for row in rows])
    return found


def summary(conn: Connection) -> dict[str, int]:
    """What an operator should know even when all is well."""
    events, unmatched, duplicates, messages_sent_twice, after_giving_up = conn.execute(_SUMMARY).one()
    return {"status_events": int(events), "statuses_without_message": int(unmatched),
            "duplicate_sends": int(duplicates), "messages_sent_twice": int(messages_sent_twice),
            "statuses_after_giving_up": int(after_giving_up)}
