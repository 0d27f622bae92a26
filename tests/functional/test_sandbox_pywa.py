"""pywa, a WhatsApp Cloud API client nobody here wrote, accepts everything the sandbox says: a second oracle.

Beside Meta's OpenAPI document (test_meta_sandbox.py), pywa 4.5.0 was written against the real
Cloud API. Here it drives the sandbox over HTTP (its Graph base URL pointed at the sandbox) for
every call Kloyst's conversations use, and parses every webhook the sandbox posts, signature
checked, into its typed updates (``Message``, ``MessageStatus``, ``CallbackButton``,
``CallbackSelection``). A shape pywa cannot read fails the test with pywa's own error.

One known difference, decided for Meta: Meta's BSUID page says failed status webhooks carry no
``contacts`` array, and pywa 4.5.0 reads ``contacts[0]`` from every status webhook. The
sandbox follows Meta (``contacts_in_failed_statuses`` off, checked below); to check the rest of
a failed status against pywa, that test switches the array on.
"""

from __future__ import annotations

import hashlib
import time

import httpx
import pytest
from pywa import WhatsApp
from pywa import types as pywa_types
from pywa.errors import WhatsAppError
from pywa.types.base_update import RawUpdate
from pywa.types.templates import BodyText, HeaderText, TemplateLanguage

from kloyst.sandbox import SandboxServer, SandboxState
from kloyst.sandbox.embedded import DEMO_NUMBERS, DEMO_WABA_ID, seed
from kloyst.sandbox.receiver import WebhookReceiver
from kloyst.sandbox.state import Behaviour

APP_SECRET = "pywa-oracle-secret"
NUMBER = DEMO_NUMBERS[0][0]
PHONE = "4917100000042"
JPEG = b"\xff\xd8\xff\xe0" + b"pywa-jpeg" * 64


@pytest.fixture
def sandbox():
    state = SandboxState(app_secret=APP_SECRET, behaviour=Behaviour(latency_ms=0, webhook_batch=1))
    seed(state)
    server = SandboxServer(state).start()
    yield server
    server.close()


@pytest.fixture
def receiver(sandbox):
    receiver = WebhookReceiver()
    sandbox.state.behaviour.webhook_url = receiver.url
    yield receiver
    receiver.close()


@pytest.fixture
def wa(sandbox):
    """pywa's client for the demo number, its Graph API calls sent to the sandbox instead of graph.facebook.com."""
    session = httpx.Client(timeout=10)
    client = WhatsApp(phone_id=NUMBER, token="pywa-token", waba_id=DEMO_WABA_ID, app_secret=APP_SECRET,
                      verify_token="pywa-verify", api_version="23.0", session=session, server=None)
    session.base_url = f"{sandbox.url}/v23.0"  # pywa sets graph.facebook.com/v23.0; the sandbox stands in
    yield client
    session.close()


def typed(wa: WhatsApp, headers: dict, raw: bytes):
    """pywa's typed update for one webhook body, after pywa's own signature check; pywa's error if it cannot."""
    assert wa.webhook_update_validator(raw, headers["X-Hub-Signature-256"]) is None
    update = RawUpdate(raw, hmac_header=None, update_hash=hashlib.sha256(raw).hexdigest())
    handler = wa._get_handler_type(update)
    assert handler is not None, raw
    return wa._handlers_to_updates[handler].from_update(client=wa, update=update)


def updates(wa, receiver, count, timeout=10.0) -> list:
    deadline = time.monotonic() + timeout
    while len(receiver.deliveries) < count:
        assert time.monotonic() < deadline, receiver.values()
        time.sleep(0.02)
    time.sleep(0.1)  # anything more that was on its way
    return [typed(wa, headers, raw) for headers, raw in list(receiver.deliveries)]


def inbound(sandbox, **fields):
    status, answer = sandbox.control("POST", "customers/inbound", {"phone_number_id": NUMBER, **fields}, {})
    assert status == 200, answer
    return answer


def test_status_webhooks_of_text_template_and_media_sends_parse_as_message_statuses(sandbox, receiver, wa):
    customer = inbound(sandbox, **{"from": "+" + PHONE}, name="Ada", text="hi")
    media = wa.upload_media(media=JPEG, mime_type="image/jpeg", filename="photo.jpg")
    sent = [wa.send_message(to=PHONE, text="Your order ships today", tracker="kloyst-1"),
            wa.send_template(to=PHONE, name="order_update", language=TemplateLanguage.ENGLISH_US,
                             params=[HeaderText.params("A-7"), BodyText.params("Ada", "Monday")]),
            wa.send_image(to=PHONE, image=media.id, caption="your receipt")]
    parsed = updates(wa, receiver, 1 + 3 * len(sent))
    assert isinstance(parsed[0], pywa_types.Message) and parsed[0].text == "hi"
    statuses = [u for u in parsed if isinstance(u, pywa_types.MessageStatus)]
    assert len(statuses) == 9
    assert {s.id for s in statuses} == {m.id for m in sent}
    for status in statuses:
        assert status.status in (pywa_types.MessageStatusType.SENT, pywa_types.MessageStatusType.DELIVERED,
                                 pywa_types.MessageStatusType.READ)
        assert status.from_user.bsuid == customer["user_id"] and status.from_user.wa_id == PHONE
        assert status.pricing is not None and status.error is None
    assert {s.tracker for s in statuses if s.id == sent[0].id} == {"kloyst-1"}


def test_failed_statuses_parse_with_their_error_once_they_carry_contacts(sandbox, receiver, wa):
    never_wrote = wa.send_message(to=PHONE, text="Are you there?")  # outside the window: 131047
    deadline = time.monotonic() + 10
    while not receiver.deliveries:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert "contacts" not in receiver.values()[0]  # Meta's failed status webhooks carry none
    sandbox.state.behaviour.update({"contacts_in_failed_statuses": True, "status_failure_rates": {"131026": 1.0}})
    receiver.deliveries.clear()
    again = wa.send_message(to=PHONE, text="Are you there now?")
    undeliverable = wa.send_template(to="4917100000043", name="order_update", language=TemplateLanguage.ENGLISH_US,
                                     params=[HeaderText.params("A-7"), BodyText.params("Ada", "Monday")])
    parsed = updates(wa, receiver, 3)
    failed = {u.id: u for u in parsed if u.status == pywa_types.MessageStatusType.FAILED}
    assert failed[again.id].error.code == 131047 and never_wrote.id != again.id
    assert failed[undeliverable.id].error.code == 131026
    assert all(isinstance(u, pywa_types.MessageStatus) and u.from_user.bsuid for u in parsed)


def test_inbound_messages_of_every_kind_parse_as_typed_pywa_updates(sandbox, receiver, wa):
    template = wa.send_template(to=PHONE, name="order_update", language=TemplateLanguage.ENGLISH_US,
                                params=[HeaderText.params("A-7"), BodyText.params("Ada", "Monday")])
    phone = {"from": "+" + PHONE, "name": "Ada"}
    inbound(sandbox, **phone, text="Where is my order?")
    inbound(sandbox, **phone, type="image", media={"data_base64": "/9j/4AAQ", "mime_type": "image/jpeg",
                                                   "caption": "this one"})
    inbound(sandbox, **phone, type="document", media={"data_base64": "JVBERi0xLjQ=", "mime_type": "application/pdf",
                                                      "filename": "invoice.pdf"})
    inbound(sandbox, **phone, type="audio", media={"data_base64": "T2dnUw==", "mime_type": "audio/ogg",
                                                   "voice": True})
    inbound(sandbox, **phone, type="video", media={"data_base64": "AAAAGGZ0eXA=", "mime_type": "video/mp4"})
    inbound(sandbox, **phone, type="sticker", media={"data_base64": "UklGRg==", "mime_type": "image/webp"})
    inbound(sandbox, **phone, type="location", location={"latitude": 52.52, "longitude": 13.4, "name": "Office"})
    inbound(sandbox, **phone, type="button", button={"payload": "STOP", "text": "Stop promotions"},
            context={"id": template.id})
    inbound(sandbox, **phone, type="interactive", interactive={"type": "button_reply", "id": "yes", "title": "Yes"})
    inbound(sandbox, **phone, type="interactive",
            interactive={"type": "list_reply", "id": "s", "title": "Small", "description": "250 ml"})
    inbound(sandbox, **phone, type="reaction", reaction={"message_id": template.id, "emoji": "👍"})
    parsed = [u for u in updates(wa, receiver, 3 + 11) if not isinstance(u, pywa_types.MessageStatus)]
    by_kind = {type(u).__name__ + ":" + str(getattr(u, "type", "")): u for u in parsed}
    assert len(parsed) == 11
    text = by_kind["Message:text"]
    assert text.text == "Where is my order?" and text.from_user.wa_id == PHONE and text.from_user.name == "Ada"
    assert by_kind["Message:image"].image.mime_type == "image/jpeg" and by_kind["Message:image"].caption == "this one"
    assert by_kind["Message:document"].document.filename == "invoice.pdf"
    assert by_kind["Message:audio"].audio.voice is True
    assert by_kind["Message:video"].video.mime_type == "video/mp4"
    assert by_kind["Message:sticker"].sticker.mime_type == "image/webp"
    assert by_kind["Message:location"].location.latitude == 52.52
    assert by_kind["Message:reaction"].reaction.emoji == "👍"
    button = next(u for u in parsed if isinstance(u, pywa_types.CallbackButton) and u.data == "STOP")
    assert button.reply_to_message.id == template.id
    reply = next(u for u in parsed if isinstance(u, pywa_types.CallbackButton) and u.data == "yes")
    assert reply.title == "Yes"
    choice = next(u for u in parsed if isinstance(u, pywa_types.CallbackSelection))
    assert (choice.data, choice.title, choice.description) == ("s", "Small", "250 ml")
    image_url = wa.get_media_url(by_kind["Message:image"].image.id).url
    assert wa.get_media_bytes(url=image_url) == b"\xff\xd8\xff\xe0\x00\x10"


def test_bsuid_and_username_only_customers_parse_and_pywa_replies_to_them_by_bsuid(sandbox, receiver, wa):
    username_only = inbound(sandbox, username="ada.lovelace", name="Ada", text="hi, no phone here")
    withheld = inbound(sandbox, **{"from": "+4917100000044"}, username="grace.h", phone_shared=False, text="hi")
    parent = inbound(sandbox, **{"from": "+4917100000045"}, user_id="DE.4545", parent_user_id="DE.ENT.4546",
                     text="hi")
    messages = updates(wa, receiver, 3)
    users = {m.from_user.bsuid: m.from_user for m in messages}
    assert users[username_only["user_id"]].wa_id is None and users[username_only["user_id"]].username == "ada.lovelace"
    assert users[withheld["user_id"]].wa_id is None and users[withheld["user_id"]].username == "grace.h"
    assert users["DE.4545"].wa_id == "4917100000045" and users["DE.4545"].parent_bsuid == "DE.ENT.4546"
    assert parent["user_id"] == "DE.4545"
    receiver.deliveries.clear()
    ada = next(m for m in messages if m.from_user.bsuid == username_only["user_id"])
    reply = ada.reply_text("Thanks, Ada!")  # pywa answers a user with no phone by BSUID (recipient)
    assert reply.id.startswith("wamid.")
    statuses = updates(wa, receiver, 3)
    assert [s.status.value for s in statuses] == ["sent", "delivered", "read"]
    assert {s.from_user.bsuid for s in statuses} == {username_only["user_id"]}
    assert statuses[-1].from_user.username == "ada.lovelace" and statuses[-1].from_user.wa_id is None


def test_every_answer_to_a_call_pywa_makes_is_accepted_by_pywa(sandbox, receiver, wa):
    customer = inbound(sandbox, **{"from": "+" + PHONE}, text="hello")
    assert wa.mark_message_as_read(customer["id"]).success is True
    assert wa.indicate_typing(customer["id"]).success is True
    media = wa.upload_media(media=JPEG, mime_type="image/jpeg", filename="photo.jpg")
    url = wa.get_media_url(media.id)
    assert (url.mime_type, url.sha256) == ("image/jpeg", hashlib.sha256(JPEG).hexdigest())
    assert wa.get_media_bytes(url=url.url) == JPEG
    assert wa.delete_media(media.id).success is True
    with pytest.raises(WhatsAppError) as gone:
        wa.get_media_url(media.id)
    assert gone.value.code == 100
    profile = wa.get_business_profile()
    assert profile.industry and profile.email == "sandbox@example.com"
    assert wa.update_business_profile(about="Open 9 to 5", industry=pywa_types.Industry.RETAIL).success is True
    assert wa.get_business_profile().about == "Open 9 to 5"
    number = wa.get_business_phone_number()
    assert number.id == NUMBER and number.throughput == {"level": "HIGH"}
    account = wa.get_business_account()
    assert account.id == DEMO_WABA_ID and account.currency == "USD"
    templates = wa.get_templates()
    assert {t.name for t in templates} == {"order_update", "welcome"}
    assert (templates.total_count, templates.message_template_limit) == (2, 250)
    marketing = wa.get_templates(categories=[pywa_types.templates.TemplateCategory.MARKETING])
    assert [t.name for t in marketing] == ["welcome"]
    assert wa.get_template(marketing[0].id).name == "welcome"
    assert wa.send_location(to=PHONE, latitude=52.52, longitude=13.4, name="Office").id.startswith("wamid.")
    assert wa.send_reaction(to=PHONE, emoji="👍", message_id=customer["id"]).id.startswith("wamid.")
    assert wa.send_message(to=PHONE, text="Pick one",
                           buttons=[pywa_types.Button("Yes", callback_data="yes")]).id.startswith("wamid.")


def test_meta_errors_the_sandbox_answers_are_read_by_pywa_as_their_classes(sandbox, wa):
    with pytest.raises(WhatsAppError) as refused:
        wa.send_template(to="US.13491208655302741918", name="order_update", language=TemplateLanguage.ENGLISH_US,
                         params=[HeaderText.params("A-7")])  # one parameter short
    assert refused.value.code == 132000
    sandbox.state.behaviour.access_token = "the-only-token"
    with pytest.raises(WhatsAppError) as unauthorized:
        wa.get_business_profile()
    assert unauthorized.value.code == 190
