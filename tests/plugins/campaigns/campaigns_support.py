"""Vendors that can run campaigns, built row by row with the models, for the campaigns plugin's tests.

:class:`World` makes a vendor with every plugin a campaign needs, one WABA, one CONNECTED
number and one APPROVED template ``promo`` (``Hi {{1}}, use code {{2}}.``), contacts in bulk
(US numbers ``+1202555xxxx``, GB ``+447700900xxx``), a funded wallet and the development rate
card. Nothing here talks to Meta: :meth:`World.in_sandbox` registers the number and template
when a test sends.
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass

from sqlalchemy import func, insert, select

from kloyst import testing
from kloyst.db import tenancy, utcnow
from kloyst.sandbox.state import PhoneNumber as SandboxNumber
from kloyst.sandbox.state import Template as SandboxTemplate
from kloyst_plugins.campaigns.models import CampaignRecipient
from kloyst_plugins.contacts.models import Contact
from kloyst_plugins.messages.models import MessageLog
from kloyst_plugins.pricing import snapshots
from kloyst_plugins.templates.models import MessageTemplate
from kloyst_plugins.templates.services import set_components
from kloyst_plugins.wallet.ledger import Ledger
from kloyst_plugins.wallet.records import ENTRY, HOLD, WALLET
from kloyst_plugins.waba.access import encrypt_waba_token
from kloyst_plugins.waba.models import PhoneNumber, Waba

PLUGINS = ("contacts", "waba", "templates", "messages", "wallet", "pricing", "campaigns")
TEMPLATE, LANGUAGE = "promo", "en_US"
BODY = "Hi {{1}}, use code {{2}}."
MAPPING = {"1": {"field": "name", "default": "there"}, "2": {"value": "SALE10"}}
USD = 1_000_000

_ids = itertools.count(10**14 + uuid.uuid4().int % 10**13)


def meta_id() -> str:
    return str(next(_ids))


def us_number(index: int) -> str:
    return f"+1202555{index:04d}"


def gb_number(index: int) -> str:
    return f"+447700900{index:03d}"


@dataclass(frozen=True)
class Vendor:
    account: testing.Account
    waba: Waba
    number: PhoneNumber
    template: MessageTemplate

    @property
    def headers(self) -> dict[str, str]:
        return self.account.headers

    @property
    def vendor_id(self) -> uuid.UUID:
        return self.account.vendor_id

    def draft(self, **fields) -> dict:
        """A valid campaign body for the API: everyone, the template's variables mapped, start at launch."""
        return {"name": "Spring sale", "template_id": str(self.template.id), "phone_number_id": str(self.number.id),
                "audience": {"all": True}, "variables": MAPPING, **fields}


class World:
    def __init__(self, db, registry) -> None:
        self.db = db
        self.registry = registry
        self.cipher = registry["kloyst.cipher"]
        self.hasher = registry["kloyst.mobile_hasher"]
        self.accounts = testing.AccountFactory(db, registry["kloyst.access_tokens"])

    def _save(self, *rows):
        with tenancy.unscoped(self.db):
            self.db.add_all(rows)
            self.db.commit()
        return rows[0]

    def card(self):
        snapshot = snapshots.load_development_card(self.db)
        self.db.commit()
        return snapshot

    def vendor(self, name: str = "Campaign Co", *, throughput: int = 1000, category: str = "MARKETING",
               plugins=PLUGINS) -> Vendor:
        self.card()
        account = self.accounts.vendor(name)
        for plugin in plugins:
            testing.enable_plugin(self.db, account.vendor_id, plugin)
        self.db.commit()
        token_enc, kid = encrypt_waba_token(self.cipher, account.vendor_id, "sandbox-token")
        waba = self._save(Waba(vendor_id=account.vendor_id, meta_waba_id=meta_id(), name="Campaign WABA",
                               access_token_enc=token_enc, enc_kid=kid))
        number = self._save(PhoneNumber(vendor_id=account.vendor_id, waba_id=waba.id, meta_phone_number_id=meta_id(),
                                        display_phone_number="+1 555 010 0000", throughput_mps=throughput))
        return Vendor(account, waba, number, self.template(waba, category=category))

    def template(self, waba: Waba, *, name: str = TEMPLATE, body: str = BODY, status: str = "APPROVED",
                 category: str = "MARKETING", parameter_format: str = "POSITIONAL", header: dict | None = None,
                 buttons: list | None = None) -> MessageTemplate:
        components = ([header] if header else []) + [{"type": "BODY", "text": body}]
        if buttons:
            components.append({"type": "BUTTONS", "buttons": buttons})
        template = MessageTemplate(vendor_id=waba.vendor_id, meta_waba_id=waba.meta_waba_id, meta_template_id=meta_id(),
                                   name=name, language=LANGUAGE, category=category, status=status,
                                   parameter_format=parameter_format)
        set_components(template, components)
        return self._save(template)

    def contacts(self, vendor_id: uuid.UUID, count: int, *, start: int = 0, country: str = "US", labels=(),
                 named: bool = True, opted_out: bool = False) -> list[uuid.UUID]:
        """``count`` contacts (US ``+1202555…`` or GB ``+447700900…`` numbers), inserted in one statement."""
        make = us_number if country == "US" else gb_number
        rows = []
        for index in range(start, start + count):
            e164 = make(index)
            rows.append({"id": uuid.uuid4(), "vendor_id": vendor_id, "mobile_hash": self.hasher(vendor_id, e164),
                         "mobile_enc": self.cipher.encrypt(e164, vendor_id=vendor_id, field="mobile"),
                         "name_enc": self.cipher.encrypt(f"Customer {index}", vendor_id=vendor_id, field="name")
                         if named else None, "enc_kid": self.cipher.active_kid, "country": country,
                         "calling_code": 1 if country == "US" else 44, "labels": list(labels), "attributes": {},
                         "opted_out": opted_out, "opted_out_at": utcnow() if opted_out else None, "source": "api",
                         "created_at": utcnow(), "updated_at": utcnow()})
        if rows:
            with tenancy.unscoped(self.db):
                self.db.execute(insert(Contact), rows)
                self.db.commit()
        return [row["id"] for row in rows]

    def fund(self, vendor_id: uuid.UUID, micros: int) -> None:
        Ledger(self.db.connection(), vendor_id).topup(micros, idempotency_key=f"test:{uuid.uuid4()}")
        self.db.commit()

    def in_sandbox(self, sandbox, vendor: Vendor) -> None:
        sandbox.state.add_number(SandboxNumber(id=vendor.number.meta_phone_number_id, waba_id=vendor.waba.meta_waba_id,
                                               display_phone_number="+1 555 010 0000",
                                               throughput=vendor.number.throughput_mps))
        sandbox.state.add_template(vendor.waba.meta_waba_id, SandboxTemplate(
            id=vendor.template.meta_template_id, name=vendor.template.name, language=LANGUAGE,
            category=vendor.template.category, components=vendor.template.components))


def messages(db, campaign_id) -> list[MessageLog]:
    db.expire_all()
    with tenancy.unscoped(db):
        return list(db.scalars(select(MessageLog).where(MessageLog.campaign_id == uuid.UUID(str(campaign_id)))))


def statuses(db, campaign_id) -> dict[str, int]:
    with tenancy.unscoped(db):
        rows = db.execute(select(MessageLog.status, func.count()).where(
            MessageLog.campaign_id == uuid.UUID(str(campaign_id))).group_by(MessageLog.status)).all()
    return {status: count for status, count in rows}


def wallet(db, vendor_id: uuid.UUID):
    return Ledger(db.connection(), vendor_id).wallet()


def holds(db, campaign_id) -> list:
    return db.execute(select(HOLD).where(HOLD.c.reference == f"campaign:{campaign_id}")).all()


def assert_ledger_consistent(db, vendor_id: uuid.UUID) -> None:
    """balance == Σ entries' balance deltas; held == Σ entries' held deltas == Σ outstanding holds."""
    row = db.execute(select(WALLET).where(WALLET.c.vendor_id == vendor_id)).one()
    deltas = db.execute(select(func.coalesce(func.sum(ENTRY.c.balance_delta_micros), 0),
                               func.coalesce(func.sum(ENTRY.c.held_delta_micros), 0))
                        .where(ENTRY.c.vendor_id == vendor_id)).one()
    outstanding = db.execute(select(func.coalesce(func.sum(
        HOLD.c.amount_micros - HOLD.c.captured_micros - HOLD.c.released_micros), 0)).where(
        HOLD.c.vendor_id == vendor_id)).scalar()
    assert row.balance_micros == deltas[0]
    assert row.held_micros == deltas[1] == outstanding


def draft(testapp, vendor, **fields) -> dict:
    return testapp.post_json("/v1/campaigns", vendor.draft(**fields), headers=vendor.headers).json["campaign"]


def quote(testapp, vendor, campaign) -> dict:
    return testapp.post_json(f"/v1/campaigns/{campaign['id']}/quote", {}, headers=vendor.headers).json


def launch(testapp, vendor, campaign, *, status=202, key=None):
    headers = {**vendor.headers, **({"Idempotency-Key": key} if key else {})}
    return testapp.post_json(f"/v1/campaigns/{campaign['id']}/launch", {}, headers=headers, status=status)


def recipients(db, campaign_id) -> list[CampaignRecipient]:
    with tenancy.unscoped(db):
        return list(db.scalars(select(CampaignRecipient).where(CampaignRecipient.campaign_id == uuid.UUID(
            str(campaign_id))).order_by(CampaignRecipient.seq)))


def launch_now(registry, vendor: Vendor, **fields) -> uuid.UUID:
    """Draft, quote and launch through the services in real transactions (what the API does), for tests whose
    sender and workers run on other connections; the fan-out tasks run when the launch commits."""
    import transaction

    from kloyst.db import session_scope
    from kloyst_plugins.campaigns import drafts, launch as launching
    from kloyst_plugins.campaigns.schemas import CampaignCreate

    factory = registry["kloyst.session_factory"]
    queue = registry["kloyst.queue"]
    body = CampaignCreate.model_validate({k: v for k, v in vendor.draft(**fields).items()})
    manager = transaction.TransactionManager(explicit=True)
    with session_scope(factory, vendor_id=vendor.vendor_id, manager=manager) as db:
        campaign = drafts.create(db, body, user_id=None)
        launching.quote(db, registry, campaign, enqueue=lambda name, **kw: queue.enqueue(db, manager, name, **kw))
        campaign_id = campaign.id
    with session_scope(factory, vendor_id=vendor.vendor_id, manager=manager) as db:
        launching.launch(db, registry, campaign_id, enqueue=lambda name, **kw: queue.enqueue(db, manager, name, **kw))
    return campaign_id
