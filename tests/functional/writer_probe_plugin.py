"""A test-only plugin whose tasks hold, share and nest database transactions the ways real tasks do.

Each task records that it took effect as a ``writer.done`` outbox row (marked delivered, so
nothing picks it up) in the task's own transaction, with its ``n``:

* ``writer.claim_first`` writes in a short transaction of its own before touching ``ctx.db``
  (a ``writer.claimed`` row), as the quotation PDF task claims its quotation;
* ``writer.wait_first`` waits until the test sets the :data:`GATES` event named ``gate``
  before touching ``ctx.db``, as a task that renders or calls Meta first; it sets ``started``
  once it runs;
* ``writer.nested_after_write`` writes in ``ctx.db`` and *then* in a transaction of its own,
  which on SQLite would wait for itself.
"""

from __future__ import annotations

import threading

from kloyst.db import session_scope, tenancy
from kloyst.outbox import Outbox, OutboxStatus
from kloyst.plugins import PluginMeta, hookimpl
from kloyst.queue import task

plugin_meta = PluginMeta(description="test-only transaction probes")

# Events the tests set to let a waiting task go on (by name), and the ones tasks set when they start.
GATES: dict[str, threading.Event] = {}


def _done(ctx, n) -> None:
    Outbox(ctx.db).add("writer.done", {"n": n}).status = OutboxStatus.DELIVERED


def _own_transaction_write(ctx, topic: str, n) -> None:
    with session_scope(ctx.registry["kloyst.session_factory"], vendor_id=tenancy.ALL_VENDORS) as db:
        Outbox(db).add(topic, {"n": n}).status = OutboxStatus.DELIVERED


@task("writer.claim_first")
def claim_first(ctx, *, n):
    _own_transaction_write(ctx, "writer.claimed", n)
    _done(ctx, n)


@task("writer.wait_first")
def wait_first(ctx, *, n, gate, started):
    GATES[started].set()
    if not GATES[gate].wait(30):
        raise TimeoutError(f"the test never opened gate {gate!r}")
    _done(ctx, n)


@task("writer.nested_after_write")
def nested_after_write(ctx, *, n):
    _done(ctx, n)
    ctx.db.flush()
    _own_transaction_write(ctx, "writer.claimed", n)


@hookimpl
def kloyst_tasks():
    return [claim_first, wait_first, nested_after_write]
