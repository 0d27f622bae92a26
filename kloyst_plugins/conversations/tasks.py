"""The conversations plugin's background task: Meta's read receipt for a conversation marked read.

Marking a conversation read commits first (the inbox is right at once); the receipt that shows
the customer blue ticks is this task, sent only after that commit and retried with backoff while
Meta's failure is one waiting can fix (network, 5xx, rate limits). A permanent refusal (a message
too old to mark, a token that no longer works) is logged and the task ends: the inbox is read
either way, and retrying would fail the same way. Meta is called outside any write transaction.
"""

from __future__ import annotations

import logging
import uuid

from kloyst.api import MetaError, session_scope, task
from kloyst_plugins.conversations.models import Conversation
from kloyst_plugins.waba.api import phone_number_access, PhoneNumber

log = logging.getLogger(__name__)

SEND_READ_RECEIPT = "conversations.send_read_receipt"


@task(SEND_READ_RECEIPT)
def send_read_receipt(ctx, *, vendor_id: uuid.UUID, conversation_id: uuid.UUID, wamid: str) -> bool:
    """Tell Meta the customer's message ``wamid`` (and so every earlier one) was read; False if nothing was sent."""
    with session_scope(ctx.registry["kloyst.session_factory"], vendor_id=vendor_id, read_only=True) as db:
        conversation = db.get(Conversation, conversation_id)
        number = db.get(PhoneNumber, conversation.phone_number_id) if conversation is not None else None
        if number is None:
            log.info("conversation %s of vendor %s is gone; no read receipt", conversation_id, vendor_id)
            return False
        meta_phone_number_id = number.meta_phone_number_id
        token = phone_number_access(db, ctx.registry["kloyst.cipher"], number).token
    try:
        ctx.registry["kloyst.meta"].mark_read(meta_phone_number_id, wamid, token=token)
    except MetaError as exc:
        if exc.retryable:
            raise
        log.warning("read receipt for %s refused by Meta for good (%s): not retried", wamid, exc)
        return False
    return True


TASKS = [send_read_receipt]
