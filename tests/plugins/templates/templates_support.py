"""Helpers shared by the templates tests (fixtures are in conftest.py)."""

from __future__ import annotations

import contextlib

import transaction

from kloyst.db import session_scope
from kloyst.queue import TaskContext
from kloyst_plugins.templates.models import MessageTemplate
from kloyst_plugins.templates.services import set_components

WABA_ID = "102290129340398"
TOKEN = "EAAJB-vendor-token"


def body_component(text: str, example: list[str] | None = None) -> dict:
    """A BODY component, with a positional example when given."""
    component = {"type": "BODY", "text": text}
    if example is not None:
        component["example"] = {"body_text": [example]}
    return component


def make(components: list, *, parameter_format: str = "POSITIONAL", name: str = "order_update") -> MessageTemplate:
    """An unsaved template with its variables parsed, for tests of pure functions."""
    template = MessageTemplate(name=name, language="en_US", parameter_format=parameter_format, status="APPROVED",
                               variable_mapping={})
    set_components(template, components)
    return template


@contextlib.contextmanager
def task_context(registry, vendor_id):
    """A TaskContext scoped to ``vendor_id`` in its own transaction, as the worker builds one; commits at the end."""
    manager = transaction.TransactionManager(explicit=True)
    with session_scope(registry["kloyst.session_factory"], vendor_id=vendor_id, manager=manager) as session:
        yield TaskContext(registry, session, manager, vendor_id)
