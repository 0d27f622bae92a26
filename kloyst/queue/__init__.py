"""The queue runner: huey as the doorbell, the database as the ledger of work.

huey does not acknowledge tasks (RELIABILITY.md A2): a task whose worker dies mid-run is
gone. So a task here never *is* the work; it only says "look at row X". The state of
every unit of work lives in a table, and whoever owns that table re-enqueues what was
lost. Consequences for task authors:

- tasks are declared with :func:`task` and returned from the ``kloyst_tasks`` hook;
- each runs as ``func(ctx, **kwargs)`` in its own transaction (:class:`TaskContext`),
  scoped to ``kwargs["vendor_id"]`` when given, and is skipped if that vendor has since
  disabled the owning plugin;
- tasks enqueued from a request or another task are sent only after that transaction
  commits, so a worker never sees work the database has not recorded;
- kwargs must be picklable and small (ids, not rows).
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass
from typing import Any, Callable

import transaction
from huey import MemoryHuey, RedisHuey, SqliteHuey

from kloyst.config import ConfigurationError
from kloyst.db import session_scope, tenancy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskSpec:
    name: str
    func: Callable
    retries: int = 0
    retry_delay: int = 0


def task(name: str, *, retries: int = 0, retry_delay: int = 0):
    """Mark ``func(ctx, **kwargs)`` as a Kloyst task named ``name`` (``<plugin>.<verb_object>``)."""

    def decorate(func: Callable) -> Callable:
        func.kloyst_task = TaskSpec(name=name, func=func, retries=retries, retry_delay=retry_delay)
        return func

    return decorate


class TaskContext:
    """What a running task gets: settings, a scoped session in its own transaction, and ways to follow up."""

    def __init__(self, registry, db, transaction_manager, vendor_id: uuid.UUID | None) -> None:
        self.registry = registry
        self.settings = registry.settings
        self.db = db
        self.tm = transaction_manager
        self.vendor_id = vendor_id

    @property
    def plugin_manager(self):
        return self.registry["kloyst.plugin_manager"]

    @property
    def outbox(self):
        from kloyst.outbox import Outbox

        return Outbox(self.db)

    def enqueue(self, name: str, **kwargs: Any) -> None:
        """Send task ``name`` once this task's transaction commits."""
        self.registry["kloyst.queue"].enqueue_after_commit(self.tm, name, **kwargs)


def build_huey(settings) -> Any:
    backend = settings["kloyst.queue.backend"]
    name = settings["kloyst.queue.name"]
    immediate = settings["kloyst.queue.immediate"]
    if backend == "sqlite":
        os.makedirs(os.path.dirname(os.path.abspath(settings["kloyst.queue.sqlite_path"])), exist_ok=True)
        return SqliteHuey(name, filename=settings["kloyst.queue.sqlite_path"], immediate=immediate,
                          immediate_use_memory=False)
    if backend == "redis":
        if not settings["kloyst.redis.url"]:
            raise ConfigurationError("kloyst.queue.backend = redis needs kloyst.redis.url (REDIS_URL)")
        return RedisHuey(name, url=settings["kloyst.redis.url"], immediate=immediate, immediate_use_memory=False)
    if backend == "memory":
        return MemoryHuey(name, immediate=immediate)
    raise ConfigurationError(f"kloyst.queue.backend must be sqlite, redis or memory, not {backend!r}")


class Queue:
    """Every task of every installed plugin, bound to one huey instance."""

    def __init__(self, huey, registry) -> None:
        self.huey = huey
        self.registry = registry
        self.tasks: dict[str, tuple[str, TaskSpec, Any]] = {}

    def register(self, plugin: str, func: Callable) -> None:
        spec = getattr(func, "kloyst_task", None)
        if spec is None:
            raise ConfigurationError(f"plugin {plugin!r} returned {func!r} from kloyst_tasks without @kloyst.queue.task")
        if spec.name in self.tasks:
            raise ConfigurationError(f"task {spec.name!r} is declared by both {self.tasks[spec.name][0]!r} and "
                                     f"{plugin!r}")
        wrapper = self.huey.task(name=spec.name, retries=spec.retries, retry_delay=spec.retry_delay)(
            self._runner(plugin, spec))
        self.tasks[spec.name] = (plugin, spec, wrapper)

    def _runner(self, plugin: str, spec: TaskSpec) -> Callable:
        registry = self.registry

        def run(**kwargs):
            vendor_id = kwargs.get("vendor_id")
            if isinstance(vendor_id, str):
                vendor_id = uuid.UUID(vendor_id)
            scope = vendor_id if vendor_id is not None else tenancy.ALL_VENDORS
            from kloyst.plugins.enablement import enabled_plugins

            manager = transaction.TransactionManager(explicit=True)
            with session_scope(registry["kloyst.session_factory"], vendor_id=scope, manager=manager) as db:
                if vendor_id is not None and plugin not in enabled_plugins(db, registry["kloyst.plugin_manager"],
                                                                           vendor_id):
                    log.info("task %s skipped: plugin %s is not enabled for vendor %s", spec.name, plugin, vendor_id)
                    return None
                return spec.func(TaskContext(registry, db, manager, vendor_id), **kwargs)

        run.__name__ = spec.name.replace(".", "_")
        return run

    def enqueue_now(self, name: str, **kwargs: Any):
        """Hand a task to huey right away (callers outside any transaction)."""
        try:
            wrapper = self.tasks[name][2]
        except KeyError:
            raise LookupError(f"no task named {name!r} is registered") from None
        return wrapper(**kwargs)

    def enqueue_after_commit(self, transaction_manager, name: str, **kwargs: Any) -> None:
        if name not in self.tasks:
            raise LookupError(f"no task named {name!r} is registered")

        def send(committed: bool) -> None:
            if committed:
                self.enqueue_now(name, **kwargs)

        transaction_manager.get().addAfterCommitHook(send)


def build_queue(registry) -> Queue:
    queue = Queue(build_huey(registry.settings), registry)
    for plugin, func in registry["kloyst.plugin_manager"].collect("kloyst_tasks"):
        queue.register(plugin, func)
    return queue


def _request_enqueue(request, name: str, **kwargs: Any) -> None:
    request.registry["kloyst.queue"].enqueue_after_commit(request.tm, name, **kwargs)


def includeme(config) -> None:
    config.registry["kloyst.queue"] = build_queue(config.registry)
    config.add_request_method(_request_enqueue, "enqueue")
