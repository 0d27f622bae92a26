"""A test send: the campaign's message, as one recipient would get it, to one number, now.

It goes through :class:`~kloyst_plugins.messages.services.MessageService` like any API send —
the same gates (number connected, recipient not opted out, template approved, parameters
fit), the same queue, the same payment — and is **not** part of the campaign: no ``campaign_id``
(so it is not in the campaign's counters or export) and a hold of its own (``message:<id>``),
priced and settled as API sends are (402 when the wallet cannot pay for it). Meta bills a proof
message like any other; the campaign's money is the quote its vendor accepted, and one proof
message outside it must not change that arithmetic. Values come from the contact with that
number when there is one, else from the mapping's defaults and fixed values (``mobile`` and
``country`` from the number itself).
"""

from __future__ import annotations

from kloyst.api import Unprocessable
from kloyst_plugins.campaigns import drafts
from kloyst_plugins.campaigns.models import Campaign
from kloyst_plugins.campaigns.render import Renderer
from kloyst_plugins.contacts.api import read_phone
from kloyst_plugins.messages.api import Idempotency, MessageService, Queued, TemplateSend


def send(service: MessageService, campaign: Campaign, phone: str, *,
         idempotency: Idempotency | None = None) -> Queued:
    db = service.db
    checked = drafts.check(db, campaign, with_schedule=False)
    template = checked.template
    number = read_phone(phone, None, field="phone")
    renderer = Renderer(template, checked.mapping, campaign.buttons or [], cipher=service.cipher,
                        vendor_id=campaign.vendor_id)
    contact = service.contacts.find_by_phone(number)
    if contact is not None:
        values = renderer.values(mobile=number.e164, name=service.contacts.decrypt_name(contact),
                                 country=contact.country, attributes=contact.attributes)
    else:
        values = renderer.values(mobile=number.e164, country=number.region)
    if values is None:
        raise Unprocessable("a template variable has no value for this number and no default", code="no_value")
    header_count = len(template.header_variables or [])
    header = _shaped(template, template.header_variables, values[:header_count])
    body = _shaped(template, template.body_variables, values[header_count:])
    return service.queue(TemplateSend(phone_number_id=campaign.phone_number_id, template_name=template.name,
                                      template_language=template.language, to=number.e164, body=body, header=header,
                                      buttons=tuple(campaign.buttons or ()), use_parameters=True),
                         idempotency=idempotency)


def _shaped(template, variables, values):
    if not variables:
        return None
    if template.parameter_format == "NAMED":
        return dict(zip(variables, values))
    return list(values)
