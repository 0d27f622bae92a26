"""Arranging a vendor that can send: a WABA, a number known to the sandbox, an approved template, queued messages.

Used by the sender tests and the end-to-end sender tests (and mirrored by bench/send_throughput.py).
Rows are written directly with the models, as the API would leave them.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass

from kloyst import testing
from kloyst.db import tenancy
from kloyst.meta.payloads import template_payload
from kloyst.sandbox.state import PhoneNumber as SandboxNumber
from kloyst.sandbox.state import Template as SandboxTemplate
from kloyst_plugins.messages.content import seal_content
from kloyst_plugins.messages.models import MessageLog
from kloyst_plugins.templates.models import MessageTemplate
from kloyst_plugins.waba.access import encrypt_waba_token
from kloyst_plugins.waba.models import PhoneNumber, Waba

TEMPLATE = "order_update"
LANGUAGE = "en_US"
PLUGINS = ("contacts", "waba", "templates", "messages")
TEMPLATE_COMPONENTS = [{"type": "BODY", "text": "Hi {{1}}, your order shipped."}]


@dataclass(frozen=True)
class SendingSetup:
    vendor_id: uuid.UUID
    waba_id: uuid.UUID
    meta_waba_id: str
    phone_number_id: uuid.UUID
    meta_phone_number_id: str
    template_id: uuid.UUID


def _digits(count: int) -> str:
    return str(random.randint(10 ** (count - 1), 10 ** count - 1))


def sending_setup(db, registry, sandbox, *, throughput: int = 1000, name: str = "Sender Co",
                  in_sandbox: bool = True) -> SendingSetup:
    """A vendor with every messaging plugin on, one WABA, one number of ``throughput`` mps and one template."""
    account = testing.AccountFactory(db, registry["kloyst.access_tokens"]).vendor(name)
    vendor_id = account.vendor_id
    for plugin in PLUGINS:
        testing.enable_plugin(db, vendor_id, plugin)
    meta_waba_id, meta_number_id = _digits(15), _digits(15)
    token_enc, kid = encrypt_waba_token(registry["kloyst.cipher"], vendor_id, "sandbox-token")
    with tenancy.unscoped(db):
        waba = Waba(vendor_id=vendor_id, meta_waba_id=meta_waba_id, name=name, access_token_enc=token_enc,
                    enc_kid=kid)
        db.add(waba)
        db.flush()
        number = PhoneNumber(vendor_id=vendor_id, meta_phone_number_id=meta_number_id, waba_id=waba.id,
                             display_phone_number="+1 555 010 0000", throughput_mps=throughput)
        template = MessageTemplate(vendor_id=vendor_id, meta_waba_id=meta_waba_id, meta_template_id=_digits(15),
                                   name=TEMPLATE, language=LANGUAGE, category="UTILITY", status="APPROVED",
                                   components=TEMPLATE_COMPONENTS,
                                   body_variables=["1"])
        db.add_all([number, template])
        db.flush()
    db.commit()
    if in_sandbox:
        sandbox.state.add_number(SandboxNumber(id=meta_number_id, waba_id=meta_waba_id,
                                               display_phone_number="+1 555 010 0000", throughput=throughput))
        sandbox.state.add_template(meta_waba_id, SandboxTemplate(
            id=template.meta_template_id, name=TEMPLATE, language=LANGUAGE, category="UTILITY",
            components=template.components))
    return SendingSetup(vendor_id, waba.id, meta_waba_id, number.id, meta_number_id, template.id)


def recipient(index: int) -> str:
    return f"+1202555{index:04d}" if index < 10_000 else f"+4420{index:08d}"


def queue_messages(db, registry, setup: SendingSetup, count: int, *, start: int = 0,
                   contact_id: uuid.UUID | None = None, template: str = TEMPLATE) -> list[uuid.UUID]:
    """``count`` QUEUED messages to distinct recipients (``recipient(start + i)``), committed."""
    cipher, hasher = registry["kloyst.cipher"], registry["kloyst.mobile_hasher"]
    rows = []
    for index in range(start, start + count):
        message_id = uuid.uuid4()
        to = recipient(index)
        payload = template_payload(to, template, LANGUAGE, body=[f"Customer {index}"],
                                   biz_opaque_callback_data=str(message_id))
        content, kid = seal_content(cipher, setup.vendor_id, payload)
        rows.append(MessageLog(id=message_id, vendor_id=setup.vendor_id, phone_number_id=setup.phone_number_id,
                               contact_id=contact_id, template_id=setup.template_id, template_name=template,
                               template_language=LANGUAGE, category="UTILITY",
                               recipient_hash=hasher(setup.vendor_id, to), content_enc=content, enc_kid=kid))
    with tenancy.unscoped(db):
        db.add_all(rows)
        db.flush()
    db.commit()
    return [row.id for row in rows]
