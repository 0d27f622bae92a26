"""What a running task or outbox handler gets (:class:`TaskContext`), and how it asks to wait (:class:`Reschedule`).

Re-exported by :mod:`kloyst.queue` (where task authors find them). Here, under the outbox, because
delivery (:mod:`kloyst.outbox.delivery`) builds the context for every handler it runs, and the
drainer for every webhook batch; the queue sits above both.
"""

from __future__ import annotations

import uuid
from typing import Any

from kloyst.outbox import Outbox
from kloyst.plugins.contracts import PluginSettings
from kloyst.plugins.enablement import TenantHooks, enabled_plugins

__all__ = ["TaskContext", "Reschedule"]


class Reschedule(Exception):
    """Raise from a handler or task to run it again in ``delay_seconds`` (not counted as a failure)."""

    def __init__(self, delay_seconds: float, reason: str = "") -> None:
        super().__init__(reason or f"rescheduled in {delay_seconds:.3f}s")
        self.delay_seconds = max(0.0, float(delay_seconds))
        self.reason = reason


class TaskContext:
    """What a running task or outbox handler gets: a scoped session in its own transaction, and follow-ups.

    On the embedded default (SQLite) ``ctx.db``'s transaction takes the database's one write
    lock at its first statement and keeps it until the task returns (:mod:`kloyst.db.sqlite`).
    A task that works long — rendering, a network call — does that first, reading what it
    needs through ``session_scope(..., read_only=True)``, and touches ``ctx.db`` only to write
    the result; the pricing plugin's PDF task is the worked example.
    """

    def __init__(self, registry, db, transaction_manager, vendor_id: uuid.UUID | None, *,
                 plugins: frozenset[str] | None = None) -> None:
        self.registry = registry
        self.settings = registry.settings
        self.db = db
        self.tm = transaction_manager
        self.vendor_id = vendor_id
        self._plugins = plugins

    plugin: str | None = None  # the plugin whose task runs (set by the queue), for plugin_settings()

    @property
    def plugin_manager(self):
        return self.registry["kloyst.plugin_manager"]

    @property
    def tenant_hooks(self) -> TenantHooks:
        """``ctx.tenant_hooks.kloyst_x(...)``: hook ``kloyst_x`` on the vendor's enabled plugins only, as
        ``request.tenant_hooks``; ``.collect(hook)`` and ``.settings_of(plugin)`` too (read from ``ctx.db``)."""
        return self.tenant_hooks_on(self.db)

    def tenant_hooks_on(self, db) -> TenantHooks:
        """:attr:`tenant_hooks` reading through ``db`` (a read-only session, before the write lock)."""
        hooks = TenantHooks.for_vendor(db, self.plugin_manager, self.vendor_id, self.settings, enabled=self._plugins)
        self._plugins = hooks.enabled
        return hooks

    def plugin_settings(self, plugin: str | None = None) -> PluginSettings:
        """The settings of the running task's own plugin (or of ``plugin``) for the task's vendor: its ini ones and
        the vendor's, validated, defaults filled in. Read from ``ctx.db`` each call; keep the result."""
        name = plugin or self.plugin
        if name is None:
            raise LookupError("no plugin named: ctx.plugin is set only while a task runs")
        return self.tenant_hooks.settings_of(name)

    @property
    def plugins(self) -> frozenset[str]:
        """The plugins the task's vendor has on: as the outbox's delivery read them, else read now from ``ctx.db``."""
        if self._plugins is None:
            self._plugins = enabled_plugins(self.db, self.plugin_manager, self.vendor_id)
        return self._plugins

    @property
    def outbox(self) -> Outbox:
        return Outbox(self.db)

    def enqueue(self, name: str, *, delay: float | None = None, **kwargs: Any) -> None:
        """Run task ``name`` after this transaction commits (``delay`` seconds later, if given)."""
        self.registry["kloyst.queue"].enqueue(self.db, self.tm, name, delay=delay, **kwargs)

    def rate_limit(self, key: str, limit: int, per_seconds: float = 1.0) -> None:
        """Take one of ``limit`` slots per ``per_seconds`` for ``key`` (a phone number id, a vendor…).

        Over the limit, the task is rescheduled for when the window ends (:class:`Reschedule`)
        and this worker thread moves on to other work; it never sleeps. The count is shared
        by every worker through Redis (in-process in the embedded default).
        """
        decision = self.registry["kloyst.rate_limiter"].hit(f"task:{key}", limit, per_seconds)
        if not decision.allowed:
            # Spread the refused over the coming windows (the k-th over the limit waits k // limit more
            # windows): a backlog of n then costs about n reschedules, not n² / limit.
            overflow = decision.count - decision.limit - 1
            delay = decision.retry_after + (overflow // limit) * per_seconds
            raise Reschedule(delay, f"rate limit {limit}/{per_seconds:g}s reached for {key}")
