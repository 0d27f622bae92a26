"""What a client may send to the conversations API, and what it answers.

A reply is one of Meta's free-form message types, in Meta's own shape (``{"type": "text", "text":
{...}}``), checked here against every limit Meta documents for it, so a reply Meta would refuse is
a 422 naming the field before anything is queued: text up to 4,096 characters; media by an
``https`` link, captions up to 1,024 (none on audio and stickers), a file name on documents only;
a location's coordinates in range; one to five contact cards; reply buttons (one to three, ids up to
256 characters, titles up to 20, each unique); lists (a button label up to 20 characters, one to
ten sections, ten rows in all, row ids up to 200 and unique, titles up to 24, descriptions up to 72,
section titles up to 24 and required when there are several); interactive headers up to 60
characters, bodies up to 1,024, footers up to 60.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, model_validator

from kloyst.api import Answer, Listing, MAX_CURSOR_LENGTH, MultilineText, PlainText, Schema
from kloyst_plugins.messages.api import SendParameters, TemplateRef

MAX_LABELS = 20
MAX_LABEL_LENGTH = 64
MAX_LIST_ROWS = 10  # across all sections of a list message
MEDIA_KINDS = ("image", "video", "audio", "document", "sticker")
REPLY_KINDS = ("text", *MEDIA_KINDS, "location", "contacts", "interactive")


def https_url(value: str) -> str:
    """An absolute ``https`` URL Meta can fetch: no credentials in it, a host named."""
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError("give an absolute https:// URL that Meta can download the media from")
    if parts.username or parts.password:
        raise ValueError("the URL must not carry a user name or password")
    return value


HttpsUrl = Annotated[str, Field(min_length=9, max_length=2048), AfterValidator(https_url)]
Label = Annotated[PlainText, Field(min_length=1, max_length=MAX_LABEL_LENGTH)]


def _unique(values: list[str], what: str) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{what} must be unique: {value!r} is given twice")
        seen.add(value)


class TextBody(Schema):
    body: MultilineText = Field(min_length=1, max_length=4096)
    preview_url: bool = Field(default=False, description="Show a preview of the first link in the text.")


class Media(Schema):
    """Media by a public https link (Meta downloads it) — or, once uploaded, by its id in ``/v1/media``."""

    link: HttpsUrl | None = None
    id: uuid.UUID | None = Field(default=None, description="An uploaded medium's id (POST /v1/media).")
    caption: MultilineText | None = Field(default=None, max_length=1024)
    filename: PlainText | None = Field(default=None, min_length=1, max_length=240)

    @model_validator(mode="after")
    def _one_source(self) -> Media:
        if (self.link is None) == (self.id is None):
            raise ValueError("give the media either as 'link' (an https URL) or as 'id' (an uploaded medium), "
                             "not both")
        return self


class Location(Schema):
    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)
    name: PlainText | None = Field(default=None, max_length=1000)
    address: PlainText | None = Field(default=None, max_length=1000)


Kind = Literal["HOME", "WORK"]


class CardName(Schema):
    formatted_name: PlainText = Field(min_length=1, max_length=200)
    first_name: PlainText | None = Field(default=None, max_length=100)
    last_name: PlainText | None = Field(default=None, max_length=100)
    middle_name: PlainText | None = Field(default=None, max_length=100)
    prefix: PlainText | None = Field(default=None, max_length=50)
    suffix: PlainText | None = Field(default=None, max_length=50)


class CardPhone(Schema):
    phone: PlainText = Field(min_length=1, max_length=64)
    type: PlainText | None = Field(default=None, max_length=20)  # CELL, MAIN, IPHONE, HOME, WORK
    wa_id: PlainText | None = Field(default=None, max_length=64)


class CardEmail(Schema):
    email: PlainText = Field(min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")
    type: Kind | None = None


class CardUrl(Schema):
    url: PlainText = Field(min_length=1, max_length=2048)
    type: Kind | None = None


class CardAddress(Schema):
    street: PlainText | None = Field(default=None, max_length=200)
    city: PlainText | None = Field(default=None, max_length=100)
    state: PlainText | None = Field(default=None, max_length=100)
    zip: PlainText | None = Field(default=None, max_length=20)
    country: PlainText | None = Field(default=None, max_length=100)
    country_code: PlainText | None = Field(default=None, min_length=2, max_length=2)
    type: Kind | None = None


class CardOrg(Schema):
    company: PlainText | None = Field(default=None, max_length=200)
    department: PlainText | None = Field(default=None, max_length=200)
    title: PlainText | None = Field(default=None, max_length=200)


class ContactCard(Schema):
    """A vCard as Meta's ``contacts`` message takes it."""

    name: CardName
    phones: list[CardPhone] = Field(default=[], max_length=20)
    emails: list[CardEmail] = Field(default=[], max_length=20)
    urls: list[CardUrl] = Field(default=[], max_length=20)
    addresses: list[CardAddress] = Field(default=[], max_length=20)
    org: CardOrg | None = None
    birthday: dt.date | None = None


class InteractiveText(Schema):
    text: MultilineText = Field(min_length=1, max_length=1024)


class Footer(Schema):
    text: MultilineText = Field(min_length=1, max_length=60)


class TextHeader(Schema):
    type: Literal["text"]
    text: PlainText = Field(min_length=1, max_length=60)


class Header(Schema):
    """A reply-button message's header: text, or an image, video or document by link."""

    type: Literal["text", "image", "video", "document"]
    text: PlainText | None = Field(default=None, min_length=1, max_length=60)
    image: Media | None = None
    video: Media | None = None
    document: Media | None = None

    @model_validator(mode="after")
    def _matches_type(self) -> Header:
        for kind in ("text", "image", "video", "document"):
            given = getattr(self, kind) is not None
            if kind == self.type and not given:
                raise ValueError(f"a header of type {self.type!r} needs '{self.type}'")
            if kind != self.type and given:
                raise ValueError(f"a header of type {self.type!r} takes no '{kind}'")
        media = getattr(self, self.type) if self.type != "text" else None
        if media is not None and media.caption is not None:
            raise ValueError("a header's media takes no caption")
        return self


class ButtonReply(Schema):
    id: PlainText = Field(min_length=1, max_length=256)
    title: PlainText = Field(min_length=1, max_length=20)


class Button(Schema):
    type: Literal["reply"] = "reply"
    reply: ButtonReply


class ButtonAction(Schema):
    buttons: list[Button] = Field(min_length=1, max_length=3)

    @model_validator(mode="after")
    def _unique(self) -> ButtonAction:
        _unique([b.reply.id for b in self.buttons], "button ids")
        _unique([b.reply.title for b in self.buttons], "button titles")
        return self


class Row(Schema):
    id: PlainText = Field(min_length=1, max_length=200)
    title: PlainText = Field(min_length=1, max_length=24)
    description: PlainText | None = Field(default=None, max_length=72)


class Section(Schema):
    title: PlainText | None = Field(default=None, min_length=1, max_length=24)
    rows: list[Row] = Field(min_length=1, max_length=MAX_LIST_ROWS)


class ListAction(Schema):
    button: PlainText = Field(min_length=1, max_length=20)
    sections: list[Section] = Field(min_length=1, max_length=10)

    @model_validator(mode="after")
    def _rows(self) -> ListAction:
        rows = [row for section in self.sections for row in section.rows]
        if len(rows) > MAX_LIST_ROWS:
            raise ValueError(f"a list has at most {MAX_LIST_ROWS} rows in all its sections, not {len(rows)}")
        _unique([row.id for row in rows], "row ids")
        if len(self.sections) > 1 and any(s.title is None for s in self.sections):
            raise ValueError("every section needs a title when a list has more than one section")
        return self


class InteractiveButtons(Schema):
    """Reply buttons: the customer taps one, and its id comes back in their answer."""

    type: Literal["button"]
    header: Header | None = None
    body: InteractiveText
    footer: Footer | None = None
    action: ButtonAction


class InteractiveList(Schema):
    """A list: a button that opens sections of rows; the chosen row's id comes back."""

    type: Literal["list"]
    header: TextHeader | None = None
    body: InteractiveText
    footer: Footer | None = None
    action: ListAction


Interactive = Annotated[InteractiveButtons | InteractiveList, Field(discriminator="type")]


class ReplyCreate(Schema):
    """One free-form message, in Meta's shape: ``type`` and the object of that name."""

    type: Literal["text", "image", "video", "audio", "document", "sticker", "location", "contacts", "interactive"]
    text: TextBody | None = None
    image: Media | None = None
    video: Media | None = None
    audio: Media | None = None
    document: Media | None = None
    sticker: Media | None = None
    location: Location | None = None
    contacts: list[ContactCard] | None = Field(default=None, min_length=1, max_length=5)
    interactive: Interactive | None = None

    @model_validator(mode="after")
    def _one_object(self) -> ReplyCreate:
        for kind in REPLY_KINDS:
            given = getattr(self, kind) is not None
            if kind == self.type and not given:
                raise ValueError(f"a reply of type {self.type!r} needs its content in '{self.type}'")
            if kind != self.type and given:
                raise ValueError(f"a reply of type {self.type!r} takes no '{kind}' (send one message per type)")
        if self.type in ("audio", "sticker") and getattr(self, self.type).caption is not None:
            raise ValueError(f"{self.type} messages take no caption")
        if self.type in MEDIA_KINDS and self.type != "document" and getattr(self, self.type).filename is not None:
            raise ValueError("only documents take a filename")
        return self

    def meta_body(self) -> Any:
        """The object Meta takes under ``type`` (an uploaded medium by our id: the caller puts Meta's in its place)."""
        value = getattr(self, self.type)
        if self.type == "contacts":
            return [card.model_dump(mode="json", exclude_none=True, exclude_defaults=True) | {
                "name": card.name.model_dump(exclude_none=True)} for card in value]
        if self.type == "location":
            return value.model_dump(exclude_none=True)
        return value.model_dump(mode="json", exclude_none=True)


class TemplateCreate(Schema):
    """A template sent from the conversation (outside the window, the way to write first)."""

    template: TemplateRef
    parameters: SendParameters | None = None
    # Template variable → contact field, e.g. {"1": {"field": "name", "default": "there"}}.
    variables: Annotated[dict[str, Any], Field(max_length=100)] | None = None

    @model_validator(mode="after")
    def _one_filling(self) -> TemplateCreate:
        if self.parameters is not None and self.variables is not None:
            raise ValueError("fill the template with either 'parameters' or 'variables', not both")
        return self


class ConversationOpen(Schema):
    contact_id: uuid.UUID
    phone_number_id: uuid.UUID  # our phone number's id (GET /v1/phone-numbers), not Meta's


class AssigneeSet(Schema):
    user_id: uuid.UUID | None = Field(description="A user of your vendor; null unassigns.")


class LabelsChange(Schema):
    add: list[Label] = Field(default=[], max_length=MAX_LABELS)
    remove: list[Label] = Field(default=[], max_length=MAX_LABELS)


class ConversationListQuery(Schema):
    cursor: str | None = Field(default=None, max_length=MAX_CURSOR_LENGTH)
    limit: int = Field(default=50, ge=1, le=200)
    unread: bool | None = Field(default=None, description="true: only conversations with unread messages.")
    window_open: bool | None = Field(default=None, description="true: only where a free-form reply can be sent now.")
    assigned_to_me: bool | None = None
    assignee: uuid.UUID | Literal["none"] | None = Field(default=None, description="A user's id, or none.")
    label: Label | None = None
    phone_number_id: uuid.UUID | None = None
    contact_id: uuid.UUID | None = None


class ThreadQuery(Schema):
    cursor: str | None = Field(default=None, max_length=MAX_CURSOR_LENGTH)
    limit: int = Field(default=50, ge=1, le=200)
    direction: Literal["newest_first", "oldest_first"] = "newest_first"


# -- answers ------------------------------------------------------------------------------------------------------


class LastMessage(Answer):
    id: uuid.UUID
    direction: Literal["inbound", "outbound"]
    at: dt.datetime
    type: str
    preview: str = Field(description="The start of the text, or what was sent ([image], [template order_update]).")
    status: str | None = Field(description="An outbound message's status.")


class WindowOut(Answer):
    open: bool = Field(description="Free-form replies can be sent now (24 h after the customer's last message).")
    expires_at: dt.datetime | None


class ConversationOut(Answer):
    id: uuid.UUID
    contact_id: uuid.UUID
    phone_number_id: uuid.UUID
    last_message: LastMessage | None
    last_message_at: dt.datetime
    last_inbound_at: dt.datetime | None
    unread_count: int = Field(description="The customer's messages since it was last read (counted up to 1,000).")
    window: WindowOut
    assignee_user_id: uuid.UUID | None
    labels: list[str]
    created_at: dt.datetime
    updated_at: dt.datetime


class ConversationAnswer(Answer):
    conversation: ConversationOut


class ConversationPage(Listing[ConversationOut]):
    """Conversations, the most recent message first."""


class MessageError(Answer):
    code: int | None
    subcode: int | None
    title: str | None
    message: str | None


class ThreadMessage(Answer):
    id: uuid.UUID
    direction: Literal["inbound", "outbound"]
    at: dt.datetime
    type: str
    content: dict[str, Any] = Field(description="Inbound: the message object Meta delivered; outbound: the "
                                                "payload sent (for a template, its name and parameters).")
    template: str | None
    wamid: str | None
    status: str | None = Field(description="Outbound: QUEUED, SENT, DELIVERED, READ, FAILED…; inbound: null.")
    error: MessageError | None
    sent_at: dt.datetime | None
    delivered_at: dt.datetime | None
    read_at: dt.datetime | None
    failed_at: dt.datetime | None
    campaign_id: uuid.UUID | None
    media: dict[str, Any] | None = Field(description="Inbound media: Kloyst's copy (GET /v1/media/{id}), once "
                                                     "fetched from Meta and scanned; null otherwise.")


class ThreadPage(Listing[ThreadMessage]):
    """A conversation's messages, in the order asked (newest first by default)."""


class SentAnswer(Answer):
    message: ThreadMessage
    conversation: ConversationOut
