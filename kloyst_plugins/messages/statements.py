"""The sender's SQL, in one place: claims, outcomes, adoptions, recovery (PostgreSQL, and SQLite for the embedded
default).

Every outcome statement checks ``status = 'SENDING' AND attempts = :attempt``: an answer is
applied only to the attempt that was sent, never to a message that moved on (its owner was
taken for dead and another sender took it, or a status webhook adopted its wamid).
"""

from __future__ import annotations

from sqlalchemy import Uuid, bindparam, text

from kloyst.api import OWNER_ALIVE, UTCDateTime
from kloyst_plugins.messages.models import sql


def _typed(statement: str, **types):
    """A statement with the state machine's words filled in (``{SENDING}``, ``{SENT_RANK}``: :data:`.models.SQL_WORDS`)
    and typed parameters."""
    return text(sql(statement)).bindparams(*(bindparam(name, type_=type_) for name, type_ in types.items()))


_T = {"now": UTCDateTime()}
_ID = {"id": Uuid()}

DUE_NUMBERS_PG = _typed("""
WITH RECURSIVE due(pn) AS (
    (SELECT phone_number_id FROM message_log WHERE status = {QUEUED} AND next_attempt_at <= :now
     ORDER BY phone_number_id LIMIT 1)
    UNION ALL
    SELECT (SELECT m.phone_number_id FROM message_log m
            WHERE m.status = {QUEUED} AND m.next_attempt_at <= :now AND m.phone_number_id > due.pn
            ORDER BY m.phone_number_id LIMIT 1)
    FROM due WHERE due.pn IS NOT NULL
)
SELECT p.id, p.vendor_id FROM due JOIN phone_number p ON p.id = due.pn
""", **_T)

DUE_COUNTS_SQLITE = _typed("""
SELECT phone_number_id, vendor_id, count(*) FROM message_log
WHERE status = {QUEUED} AND next_attempt_at <= :now GROUP BY phone_number_id, vendor_id
""", **_T)

CLAIM_PG = _typed("""
UPDATE message_log AS m
SET status = {SENDING}, status_rank = {SENDING_RANK}, lease_until = :lease, claimed_by = :owner,
    attempts = m.attempts + 1, updated_at = :now
FROM (SELECT id FROM message_log
      WHERE phone_number_id = :pn AND status = {QUEUED} AND next_attempt_at <= :now
      ORDER BY next_attempt_at LIMIT :n FOR UPDATE SKIP LOCKED) AS due
WHERE m.id = due.id
RETURNING m.id, m.vendor_id, m.attempts, m.content_enc, m.maybe_sent_before,
          (SELECT c.opted_out FROM contact c WHERE c.id = m.contact_id)
""", pn=Uuid(), lease=UTCDateTime(), owner=Uuid(), **_T)

CLAIM_SQLITE = _typed("""
UPDATE message_log
SET status = {SENDING}, status_rank = {SENDING_RANK}, lease_until = :lease, claimed_by = :owner,
    attempts = attempts + 1, updated_at = :now
WHERE id IN (SELECT id FROM message_log
             WHERE phone_number_id = :pn AND status = {QUEUED} AND next_attempt_at <= :now
             ORDER BY next_attempt_at LIMIT :n)
RETURNING id, vendor_id, attempts, content_enc, maybe_sent_before,
          (SELECT c.opted_out FROM contact c WHERE c.id = message_log.contact_id)
""", pn=Uuid(), lease=UTCDateTime(), owner=Uuid(), **_T)

SENT_PG = text(sql("""
UPDATE message_log AS m
SET status = {SENT}, status_rank = {SENT_RANK}, wamid = v.wamid, sent_at = v.at, lease_until = NULL, claimed_by = NULL,
    updated_at = v.at, error_code = NULL, error_subcode = NULL, error_message = NULL
FROM unnest(CAST(:ids AS uuid[]), CAST(:wamids AS text[]), CAST(:attempts AS int[]),
            CAST(:at AS timestamptz[])) AS v(id, wamid, attempt, at)
WHERE m.id = v.id AND m.status = {SENDING} AND m.attempts = v.attempt
RETURNING m.id, m.vendor_id, m.campaign_id, m.hold_id, m.price_micros
"""))

SENT_SQLITE = _typed("""
UPDATE message_log SET status = {SENT}, status_rank = {SENT_RANK}, wamid = :wamid, sent_at = :at, lease_until = NULL,
    claimed_by = NULL, updated_at = :at, error_code = NULL, error_subcode = NULL, error_message = NULL
WHERE id = :id AND status = {SENDING} AND attempts = :attempt
RETURNING id, vendor_id, campaign_id, hold_id, price_micros
""", at=UTCDateTime(), **_ID)

MESSAGE_WAMID = _typed("SELECT wamid, status FROM message_log WHERE id = :id", **_ID)

# A wamid Meta gave for a call of this message, learnt after the call (a late answer, a status webhook, a status found
# when its sender died): the message is SENT with it, whatever stage of (re)sending it was at, and is not sent again.
# Only a message of this vendor that carries no wamid yet; never a wamid another message already carries.
ADOPT = _typed("""
UPDATE message_log SET status = {SENT}, status_rank = {SENT_RANK}, wamid = :wamid, sent_at = :at, lease_until = NULL,
    claimed_by = NULL, updated_at = :now, error_code = NULL, error_subcode = NULL, error_message = NULL
WHERE id = :id AND vendor_id = :vendor AND wamid IS NULL AND status IN ({UNFINISHED})  -- adoptable
  AND NOT EXISTS (SELECT 1 FROM message_log o WHERE o.wamid = :wamid)
RETURNING id, vendor_id, campaign_id, hold_id, price_micros
""", at=UTCDateTime(), vendor=Uuid(), **_T, **_ID)

RETRY_COUNT = _typed("SELECT retry_count FROM message_log WHERE id = :id", **_ID)

REQUEUE = _typed("""
UPDATE message_log SET status = {QUEUED}, status_rank = {QUEUED_RANK}, lease_until = NULL, claimed_by = NULL,
    next_attempt_at = :next, retry_count = retry_count + :retry, error_code = :code, error_subcode = :subcode,
    error_message = :message, maybe_sent_before = maybe_sent_before OR :maybe, updated_at = :now
WHERE id = :id AND status = {SENDING} AND attempts = :attempt
""", next=UTCDateTime(), **_T, **_ID)

FAIL = _typed("""
UPDATE message_log SET status = {FAILED}, status_rank = {FAILED_RANK}, lease_until = NULL, claimed_by = NULL,
    failed_at = :now, error_code = :code, error_subcode = :subcode, error_message = :message, updated_at = :now
WHERE id = :id AND status = {SENDING} AND attempts = :attempt
RETURNING id, vendor_id, campaign_id, hold_id, price_micros
""", **_T, **_ID)

DEAD_LETTER = _typed("""
INSERT INTO dead_letter (id, vendor_id, message_id, error_code, error_subcode, error_kind, reason, details, created_at)
VALUES (:id, :vendor, :message, :code, :subcode, :kind, :reason, :details, :now)
""", vendor=Uuid(), message=Uuid(), **_T, **_ID)

DUPLICATE = _typed("""
INSERT INTO duplicate_send (wamid, vendor_id, message_id, detected_by, created_at)
VALUES (:wamid, :vendor, :message, :by, :now) ON CONFLICT (wamid) DO NOTHING
""", vendor=Uuid(), message=Uuid(), **_T)

COUNT_DUPLICATE = _typed("UPDATE message_log SET duplicate_sends = duplicate_sends + 1 WHERE id = :id", **_ID)

RELEASE = _typed("""
UPDATE message_log SET status = {QUEUED}, status_rank = {QUEUED_RANK}, lease_until = NULL, claimed_by = NULL,
    attempts = attempts - 1, updated_at = :now
WHERE id = :id AND status = {SENDING} AND attempts = :attempt
""", **_T, **_ID)

# Messages whose sender is gone: its process stopped beating (kloyst.heartbeat), or the lease ran out (a backstop for
# an owner alive but stuck). Locked, skipping rows a live transaction holds (an adoption, an answer being written).
_ABANDONED = f"""
m.status = {{SENDING}}
AND (m.lease_until < :now OR (m.claimed_by IS NOT NULL AND NOT {OWNER_ALIVE.format(owner="m.claimed_by")}))
"""

ABANDONED_PG = _typed(f"""
SELECT m.id, m.vendor_id, p.meta_phone_number_id, m.updated_at, m.next_attempt_at FROM message_log m
JOIN phone_number p ON p.id = m.phone_number_id
WHERE {_ABANDONED} ORDER BY m.id LIMIT 5000 FOR UPDATE OF m SKIP LOCKED
""", alive_since=UTCDateTime(), **_T)

ABANDONED_SQLITE = _typed(f"""
SELECT m.id, m.vendor_id, p.meta_phone_number_id, m.updated_at, m.next_attempt_at FROM message_log m
JOIN phone_number p ON p.id = m.phone_number_id
WHERE {_ABANDONED} ORDER BY m.id LIMIT 5000
""", alive_since=UTCDateTime(), **_T)

# Back to QUEUED, marked maybe-sent (Meta may have accepted the call its sender made), at the head of the line: it
# was claimed because it was due first, so it is due a moment before it was (:due), ahead of the messages that
# share its time (a fan-out chunk writes ten thousand with one), rather than after everything queued since.
RECLAIM = _typed("""
UPDATE message_log SET status = {QUEUED}, status_rank = {QUEUED_RANK}, lease_until = NULL, claimed_by = NULL,
    next_attempt_at = :due, maybe_sent_before = true, updated_at = :now
WHERE id = :id AND status = {SENDING}
""", due=UTCDateTime(), **_T, **_ID)
