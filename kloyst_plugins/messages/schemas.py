"""What a client may send to the messages API, and what it answers.

A send names its recipient one way only (``to`` or ``contact_id``) and fills the template
one way only (``parameters`` as Meta takes them, or ``variables``: template variables mapped
to the contact's fields). The shapes are checked here; whether they fit the template is the
templates plugin's ``validate_send``, which knows the template's placeholders.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any

from pydantic import Field, model_validator

from kloyst.api import Answer, Listing, Page, PlainText, Schema
from kloyst_plugins.messages.models import MessageStatus


# A template's body is at most 1,024 characters, so it never has this many variables; Meta allows 10 buttons.
MAX_PARAMETERS = 100
MAX_BUTTONS = 10
MAX_BUTTON_KEYS = 8  # sub_type, index, parameters
# Values for a template's variables, bounded before validate_send loops over them.
Values = Annotated[list[Any], Field(max_length=MAX_PARAMETERS)] | Annotated[dict[str, Any],
                                                                           Field(max_length=MAX_PARAMETERS)]


class TemplateRef(Schema):
    name: PlainText = Field(min_length=1, max_length=512)
    language: PlainText = Field(min_length=1, max_length=16)  # Meta's code: en_US, pt_BR, fr


class SendParameters(Schema):
    """Meta's parameters: a list for ``{{1}}``-style templates, an object for named ones."""

    body: Values | None = None
    header: Values | None = None
    buttons: list[Annotated[dict[str, Any], Field(max_length=MAX_BUTTON_KEYS)]] = Field(default=[],
                                                                                       max_length=MAX_BUTTONS)


class MessageCreate(Schema):
    phone_number_id: uuid.UUID  # our phone number's id (GET /v1/phone-numbers), not Meta's
    to: str | None = Field(default=None, min_length=1, max_length=140)  # +E.164, or a BSUID (US.1349…)
    contact_id: uuid.UUID | None = None
    template: TemplateRef
    parameters: SendParameters | None = None
    # Template variable → contact field, e.g. {"1": {"field": "name", "default": "there"}}.
    variables: Annotated[dict[str, Any], Field(max_length=MAX_PARAMETERS)] | None = None

    @model_validator(mode="after")
    def _one_recipient_one_filling(self) -> MessageCreate:
        if (self.to is None) == (self.contact_id is None):
            raise ValueError("give the recipient as either 'to' (a number in +E.164) or 'contact_id', not both")
        if self.parameters is not None and self.variables is not None:
            raise ValueError("fill the template with either 'parameters' or 'variables', not both")
        return self


class MessageListQuery(Page):
    status: MessageStatus | None = None
    phone_number_id: uuid.UUID | None = None
    contact_id: uuid.UUID | None = None
    campaign_id: uuid.UUID | None = None


class DeadLetterListQuery(Page):
    requeued: bool | None = None  # false: the ones still waiting for a decision


class TemplateUsed(Answer):
    id: uuid.UUID | None
    name: str | None
    language: str | None
    category: str | None = Field(description="The template's category when the message was queued.")


class MessageOut(Answer):
    """A message and everything Kloyst and Meta said about it; content is never shown, only who it went to."""

    id: uuid.UUID
    status: MessageStatus
    phone_number_id: uuid.UUID
    to: str = Field(description="The recipient, +E.164, or the WhatsApp business-scoped user id it was sent to when "
                                "no number is known (read from the sealed content).")
    country: str | None
    contact_id: uuid.UUID | None
    campaign_id: uuid.UUID | None
    template: TemplateUsed
    wamid: str | None = Field(description="Meta's message id, once Meta accepted it.")
    attempts: int = Field(description="Calls to Meta made (or maybe made) for it.")
    retry_count: int = Field(description="Transient failures retried.")
    next_attempt_at: dt.datetime | None
    duplicate_sends: int = Field(description="Calls Meta accepted beyond the first (see docs/messaging.md).")
    error_code: int | None
    error_subcode: int | None
    error_message: str | None
    pricing_category: str | None
    billable: bool | None
    idempotency_key: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    sent_at: dt.datetime | None
    delivered_at: dt.datetime | None
    read_at: dt.datetime | None
    failed_at: dt.datetime | None


class MessageAnswer(Answer):
    message: MessageOut


class DeadLetterOut(Answer):
    """Why a message failed for good, and the message itself."""

    id: uuid.UUID
    message_id: uuid.UUID
    error_code: int | None
    error_subcode: int | None
    error_kind: str = Field(description="transient, rate_limited, permanent or auth (docs/meta/error-codes.md).")
    reason: str
    details: dict[str, Any]
    created_at: dt.datetime
    requeued_at: dt.datetime | None
    message: MessageOut | None


class DeadLetterAnswer(Answer):
    dead_letter: DeadLetterOut


class MessagePage(Listing[MessageOut]):
    """Messages, newest first."""


class DeadLetterPage(Listing[DeadLetterOut]):
    """Dead letters, newest first."""
