"""Fixtures for the templates plugin's tests: a vendor with a WABA the Meta sandbox knows, and template helpers."""

from __future__ import annotations

import uuid

import pytest

from kloyst.db import tenancy
from kloyst.sandbox.state import Template
from kloyst_plugins.templates.models import MessageTemplate
from kloyst_plugins.templates.services import set_components
from kloyst_plugins.waba.access import encrypt_waba_token
from kloyst_plugins.waba.models import Waba
from templates_support import TOKEN, WABA_ID



@pytest.fixture
def add_waba(db, registry, meta_sandbox):
    """``add_waba(account, meta_waba_id, token=…)``: a Waba row (token encrypted as the waba plugin does) that the
    sandbox also knows, so listing and creating templates there work."""

    def add(account, meta_waba_id: str = WABA_ID, *, token: str = TOKEN) -> Waba:
        encrypted, kid = encrypt_waba_token(registry["kloyst.cipher"], account.vendor_id, token)
        waba = Waba(vendor_id=account.vendor_id, meta_waba_id=meta_waba_id, name="Test WABA",
                    access_token_enc=encrypted, enc_kid=kid)
        with tenancy.unscoped(db):
            db.add(waba)
            db.flush()
        db.commit()
        meta_sandbox.state.templates.setdefault(meta_waba_id, [])
        return waba

    return add


@pytest.fixture
def vendor(accounts, enable_plugin, add_waba):
    """A vendor (its owner signs requests) with waba and templates enabled and one WABA, ``WABA_ID``."""
    account = accounts.vendor("Templates Co")
    enable_plugin(account, "waba")
    enable_plugin(account, "templates")
    add_waba(account)
    return account


@pytest.fixture
def sandbox_template(meta_sandbox):
    """``sandbox_template(name, components, …)`` puts a template into the sandbox's WABA (as if made in Meta)."""

    def add(name: str, components: list, *, waba_id: str = WABA_ID, language: str = "en_US",
            status: str = "APPROVED", category: str = "UTILITY", parameter_format: str = "POSITIONAL") -> Template:
        template = Template(id=meta_sandbox.state.new_id(), name=name, language=language, category=category,
                            components=components, status=status, parameter_format=parameter_format)
        meta_sandbox.state.add_template(waba_id, template)
        return template

    return add


@pytest.fixture
def stored_template(db):
    """``stored_template(account, name, components, …)``: a MessageTemplate row, as a sync would leave it."""

    def add(account, name: str, components: list, *, language: str = "en_US", status: str = "APPROVED",
            parameter_format: str = "POSITIONAL", meta_waba_id: str = WABA_ID,
            meta_template_id: str | None = None) -> MessageTemplate:
        template = MessageTemplate(vendor_id=account.vendor_id, meta_waba_id=meta_waba_id, name=name,
                                   language=language, status=status, parameter_format=parameter_format,
                                   meta_template_id=meta_template_id or str(uuid.uuid4().int % 10**15))
        set_components(template, components)
        with tenancy.unscoped(db):
            db.add(template)
            db.flush()
        db.commit()
        return template

    return add
