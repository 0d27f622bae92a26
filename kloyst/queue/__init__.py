"""The queue runner: huey rings the doorbell, the outbox table holds the work.

huey does not acknowledge tasks (README, "How work gets done"): a task whose worker dies mid-run is
gone, and a flushed Redis forgets everything queued. So no Kloyst task lives only in huey.
``request.enqueue(name, **kwargs)`` (or ``ctx.enqueue`` in a task) writes an outbox event
in the caller's transaction; after commit it is published at once (the fast path) and,
should that fail or the process die, the relay publishes it later. The single huey task
(:mod:`kloyst.outbox.delivery`) runs the task function and marks the event delivered in
the same transaction. Consequences for task authors:

- declare tasks with :func:`task` and return them from the ``kloyst_tasks`` hook;
- a task runs as ``func(ctx, **kwargs)`` in its own transaction (:class:`TaskContext`),
  scoped to the ``vendor_id`` it was enqueued with, and is skipped when that vendor has
  disabled the owning plugin by the time it runs;
- nothing is sent before the enqueuing transaction commits, and a rolled-back
  transaction sends nothing;
- kwargs are stored as JSON (UUIDs, datetimes and decimals come back as they went in);
- delivery is at least once; a task whose effects are writes in ``ctx.db`` takes effect
  exactly once. To wait (a rate limit), raise :class:`Reschedule` — never sleep.
"""

from __future__ import annotations

import datetime as dt
import decimal
import logging
import os
import uuid
from dataclasses import dataclass
from typing import Any
from collections.abc import Callable

import redis
from huey import MemoryHuey, RedisHuey, SqliteHuey
from huey.registry import Message
from huey.storage import RedisStorage

from kloyst.config import ConfigurationError
from kloyst.db import tenancy, utcnow
from kloyst.outbox import Outbox
from kloyst.outbox.context import Reschedule, TaskContext
from kloyst.outbox.delivery import DELIVER_TASK, deliver
from kloyst.outbox.relay import Relay

__all__ = ["task", "TaskSpec", "TaskContext", "Queue", "Reschedule", "TASK_TOPIC"]

log = logging.getLogger(__name__)

TASK_TOPIC = "kloyst.task"


@dataclass(frozen=True)
class TaskSpec:
    name: str
    func: Callable


def task(name: str):
    """Mark ``func(ctx, **kwargs)`` as a Kloyst task named ``name`` (``<plugin>.<verb_object>``).

    Retries are the outbox's: a task that raises runs again with exponential backoff, and
    after ``kloyst.outbox.max_attempts`` failures its event is dead-lettered.
    """

    def decorate(func: Callable) -> Callable:
        func.kloyst_task = TaskSpec(name=name, func=func)  # type: ignore[attr-defined]  # a function attribute
        return func

    return decorate


def encode_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Task kwargs as JSON; UUIDs, datetimes and decimals tagged, and every dict wrapped, so
    a caller's own ``{"$uuid": …}`` data can never be mistaken for a tag."""

    def encode(value):
        if isinstance(value, uuid.UUID):
            return {"$uuid": str(value)}
        if isinstance(value, dt.datetime):
            return {"$datetime": value.isoformat()}
        if isinstance(value, decimal.Decimal):
            return {"$decimal": str(value)}
        if isinstance(value, (list, tuple)):
            return [encode(v) for v in value]
        if isinstance(value, dict):
            return {"$dict": {str(k): encode(v) for k, v in value.items()}}
        if value is None or isinstance(value, (str, int, float, bool)):
            return value
        raise TypeError(f"task argument {value!r} is not JSON-compatible; pass ids, not objects")

    return {k: encode(v) for k, v in kwargs.items()}


def decode_kwargs(payload: dict[str, Any]) -> dict[str, Any]:
    def decode(value):
        if isinstance(value, dict):
            if len(value) == 1:
                (tag, raw), = value.items()
                if tag == "$uuid":
                    return uuid.UUID(raw)
                if tag == "$datetime":
                    return dt.datetime.fromisoformat(raw)
                if tag == "$decimal":
                    return decimal.Decimal(raw)
                if tag == "$dict":
                    return {k: decode(v) for k, v in raw.items()}
            raise ValueError(f"unknown task argument encoding {sorted(value)!r}")
        if isinstance(value, list):
            return [decode(v) for v in value]
        return value

    return {k: decode(v) for k, v in payload.items()}


def build_huey(settings) -> Any:
    backend = settings["kloyst.queue.backend"]
    name = settings["kloyst.queue.name"]
    immediate = settings["kloyst.queue.immediate"]
    if backend == "sqlite":
        os.makedirs(os.path.dirname(os.path.abspath(settings["kloyst.queue.sqlite_path"])), exist_ok=True)
        return SqliteHuey(name, filename=settings["kloyst.queue.sqlite_path"], immediate=immediate,
                          immediate_use_memory=False, results=False)
    if backend == "redis":
        if not settings["kloyst.redis.url"]:
            raise ConfigurationError("kloyst.queue.backend = redis needs kloyst.redis.url (REDIS_URL)")
        # Timeouts: a Redis that stops answering must fail fast, not hang a request or the relay.
        pool = redis.ConnectionPool.from_url(settings["kloyst.redis.url"], socket_timeout=5, socket_connect_timeout=5,
                                             health_check_interval=30)
        return RedisHuey(name, connection_pool=pool, immediate=immediate, immediate_use_memory=False, results=False)
    if backend == "memory":
        return MemoryHuey(name, immediate=immediate, results=False)
    raise ConfigurationError(f"kloyst.queue.backend must be sqlite, redis or memory, not {backend!r}")


class Queue:
    """Every task of every installed plugin, and the huey instance that delivers outbox events."""

    def __init__(self, huey, registry) -> None:
        self.huey = huey
        self.registry = registry
        self.tasks: dict[str, tuple[str, TaskSpec]] = {}
        self._deliver_task = huey.task(name=DELIVER_TASK)(self._deliver)
        self._deliver_name = huey._registry.task_to_string(self._deliver_task.task_class)

    def _deliver(self, event_id: int, vendor_id: str | None, topic: str, batch_id: int | None = None) -> str:
        return deliver(self.registry, event_id, vendor_id, topic, batch_id)

    def register(self, plugin: str, func: Callable) -> None:
        spec = getattr(func, "kloyst_task", None)
        if spec is None:
            raise ConfigurationError(f"plugin {plugin!r} returned {func!r} from kloyst_tasks without "
                                     "@kloyst.queue.task")
        if spec.name in self.tasks:
            raise ConfigurationError(f"task {spec.name!r} is declared by both {self.tasks[spec.name][0]!r} and "
                                     f"{plugin!r}")
        self.tasks[spec.name] = (plugin, spec)

    # -- sending ----------------------------------------------------------------------------

    def enqueue(self, db, transaction_manager, name: str, *, delay: float | None = None, **kwargs: Any):
        """Record task ``name`` in the outbox of ``db``'s transaction; publish it right after commit."""
        if name not in self.tasks:
            raise LookupError(f"no task named {name!r} is registered")
        vendor_id = kwargs.get("vendor_id")
        if isinstance(vendor_id, str):
            vendor_id = uuid.UUID(vendor_id)
        # The task runs for the vendor whose transaction enqueued it: scoped to it, gated by its plugins.
        scope = tenancy.current_scope(db)
        if isinstance(scope, uuid.UUID):
            if vendor_id is None:
                vendor_id = scope
            elif vendor_id != scope:
                raise tenancy.TenancyError(f"task {name!r} enqueued for another vendor than the caller's")
        available_at = None
        if delay:
            available_at = utcnow() + dt.timedelta(seconds=delay)
        event = Outbox(db).add(TASK_TOPIC, {"task": name, "kwargs": encode_kwargs(kwargs)}, vendor_id=vendor_id,
                               available_at=available_at)
        if not delay:
            def publish_after_commit(committed: bool) -> None:
                if committed:
                    self.send_after_commit(event.id, name, kwargs)

            transaction_manager.get().addAfterCommitHook(publish_after_commit)
        return event

    def send_after_commit(self, event_id: int, name: str, kwargs: dict) -> None:
        """The fast path; a failure here only delays the task until the relay's next claim.

        Skipped while the queue is backed up: the relay's fair claims decide the order then.
        """
        limit = self.registry.settings["kloyst.outbox.max_queue_depth"]
        try:
            if limit and self.depth() >= limit:
                return
            Relay(self.registry).publish_ids([event_id])
        except Exception:
            log.exception("fast-path publish of task %s (event %s) failed; the relay will publish it", name, event_id)

    def publish_deliveries(self, rows: list[tuple[int, str | None, str]], batch_id: int) -> None:
        """Put one delivery task per outbox event ``(id, vendor_id, topic)`` of relay batch ``batch_id`` on the queue.

        With Redis the whole batch is one LPUSH of messages built directly (huey's own
        message format, task id ``outbox-<event id>-<batch id>``), which is ~20× faster than one
        ``enqueue`` per task; other storages enqueue one by one.
        """
        storage = self.huey.storage
        if isinstance(storage, RedisStorage) and not self.huey.immediate:
            serialize = self.huey.serializer.serialize
            name = self._deliver_name
            storage.conn.lpush(storage.queue_key, *[
                serialize(Message(f"outbox-{event_id}-{batch_id}", name, None, 0, 0, None,
                                  (event_id, str(vendor_id) if vendor_id else None, topic, batch_id), {}))
                for event_id, vendor_id, topic in rows])
            return
        for event_id, vendor_id, topic in rows:
            self.huey.enqueue(self._deliver_task.s(event_id, str(vendor_id) if vendor_id else None, topic, batch_id))

    def depth(self) -> int:
        """Tasks waiting in the queue (0 in immediate mode)."""
        return 0 if self.huey.immediate else int(self.huey.pending_count())

    def queued_deliveries(self) -> set[tuple[int, int]]:
        """``(event id, batch id)`` of every delivery waiting in the queue, read without taking any.

        The reconciler's evidence that an event is not lost (:mod:`kloyst.outbox.reconcile`).
        One read of the whole queue (``LRANGE`` on Redis, one ``SELECT`` on SqliteHuey),
        which backpressure keeps at about ``max_queue_depth`` messages. The messages are
        unpickled but no huey task is built. Delivery messages never carry an ``eta``, so
        huey's schedule never holds one and is not read. A message that cannot be read is
        skipped: a worker could not run it either, so its event is rightly taken for lost. A
        queue that cannot be read raises, and nothing may then be concluded.
        """
        deserialize = self.huey.serializer.deserialize
        found = set()
        for data in self.huey.storage.enqueued_items():
            try:
                message = deserialize(data)
            except Exception:  # unreadable for the workers too
                continue
            args: tuple[Any, ...] = message.args or ()
            if message.name == self._deliver_name and len(args) >= 4 and args[3] is not None:
                found.add((int(args[0]), int(args[3])))
        return found

    # -- running ----------------------------------------------------------------------------

    def run_task(self, ctx: TaskContext, name: str, kwargs: dict[str, Any]) -> Any:
        try:
            plugin, spec = self.tasks[name]
        except KeyError:
            raise LookupError(f"no installed plugin declares task {name!r}") from None
        if ctx.vendor_id is not None and plugin not in ctx.plugins:
            log.info("task %s skipped: plugin %s is not enabled for vendor %s", name, plugin, ctx.vendor_id)
            return None
        ctx.plugin = plugin  # ctx.plugin_settings() reads this plugin's
        return spec.func(ctx, **kwargs)


def run_task_event(ctx: TaskContext, event) -> None:
    """Outbox handler for ``kloyst.task`` events."""
    ctx.registry["kloyst.queue"].run_task(ctx, event.payload["task"], decode_kwargs(event.payload["kwargs"]))


def build_queue(registry) -> Queue:
    queue = Queue(build_huey(registry.settings), registry)
    for plugin, func in registry["kloyst.plugin_manager"].collect("kloyst_tasks"):
        queue.register(plugin, func)
    return queue


def _request_enqueue(request, name: str, *, delay: float | None = None, **kwargs: Any) -> None:
    request.registry["kloyst.queue"].enqueue(request.db, request.tm, name, delay=delay, **kwargs)


def includeme(config) -> None:
    config.registry["kloyst.queue"] = build_queue(config.registry)
    config.add_request_method(_request_enqueue, "enqueue")
