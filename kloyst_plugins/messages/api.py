"""The messages plugin's public API: queueing sends, the message log and its state machine.

A plugin that ``requires`` messages imports from here and nowhere else in ``kloyst_plugins.messages``;
everything else in the package may change without notice.
"""

from kloyst_plugins.messages.bulk import (
    any_accepted,
    any_unfinished,
    Batch as MessageBatch,
    by_idempotency_keys,
    cancel_waiting,
    count_by_status,
    HoldTotal,
    new_message_id,
    pause_waiting,
    queue_many,
    requeue_failed,
    resume_paused,
    retryable_failures,
    RETRYABLE_KINDS,
)
from kloyst_plugins.messages.content import CONTENT_FIELD
from kloyst_plugins.messages.dispatch import notify_queued
from kloyst_plugins.messages.inbound import inbound_json, open_inbound
from kloyst_plugins.messages.models import (
    ACCEPTED,
    can_move,
    FINAL,
    MessageLog,
    MessageStatus,
    STATUS_RANK,
    TRANSITIONS,
    UNFINISHED,
    WAITING,
)
from kloyst_plugins.messages.replies import (
    count_inbound_since,
    inbound_by_ids,
    latest_inbound,
    messages_by_ids,
    open_outbound,
    queue_reply,
    replayed,
    Reply,
    SERVICE,
    thread_page,
    ThreadItem,
)
from kloyst_plugins.messages.schemas import MessageAnswer, SendParameters, TemplateRef
from kloyst_plugins.messages.services import (
    addressed,
    Idempotency,
    message_json,
    MessageService,
    Queued,
    REPLAYED_HEADER,
    request_hash,
    TemplateSend,
)

__all__ = [
    # the state machine
    "ACCEPTED",
    "can_move",
    "FINAL",
    "MessageStatus",
    "STATUS_RANK",
    "TRANSITIONS",
    "UNFINISHED",
    "WAITING",
    # single sends and their answers
    "addressed",
    "CONTENT_FIELD",
    "Idempotency",
    "inbound_json",
    "message_json",
    "MessageAnswer",
    "MessageLog",
    "MessageService",
    "notify_queued",
    "Queued",
    "REPLAYED_HEADER",
    "request_hash",
    "TemplateSend",
    "SendParameters",
    "TemplateRef",
    # free-form replies, and one conversation's messages (the conversations plugin)
    "count_inbound_since",
    "inbound_by_ids",
    "latest_inbound",
    "messages_by_ids",
    "open_inbound",
    "open_outbound",
    "queue_reply",
    "replayed",
    "Reply",
    "SERVICE",
    "thread_page",
    "ThreadItem",
    # many messages at once (a campaign's)
    "any_accepted",
    "any_unfinished",
    "by_idempotency_keys",
    "cancel_waiting",
    "count_by_status",
    "HoldTotal",
    "MessageBatch",
    "new_message_id",
    "pause_waiting",
    "queue_many",
    "requeue_failed",
    "resume_paused",
    "retryable_failures",
    "RETRYABLE_KINDS",
]
